//! What the core reports to the adapter: the outcome of every request and
//! everything the server says on its own.

use bytes::Bytes;

use crate::codec::{BasicProperties, Content, FieldTable, LongString, ShortString};
use crate::connection::Tuning;
use crate::error::{CloseReason, ConnectionError, DecodeError};
use crate::spec::Method;

/// Identifies one request (a synchronous method, or a channel open/close)
/// so that its outcome can be matched to whoever is waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The number behind the id; unique within one connection.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }

    /// Where the request stands in the order the connection made its
    /// requests: 1, 2, 3, ..., counting the `channel.open`s and the
    /// requests the core makes on its own (the `basic.cancel` of an
    /// abandoned consume). Requests go out in that order on one stream,
    /// so the n-th request the server reads is numbered n.
    #[must_use]
    pub fn sequence(self) -> u64 {
        self.0 >> 16
    }

    /// The `n`th request of a connection, sent on channel `channel`: the
    /// channel sits in the low 16 bits, so the connection finds a
    /// request's channel without searching.
    pub(crate) fn new(n: u64, channel: u16) -> Self {
        Self(n << 16 | u64::from(channel))
    }

    /// The channel the request was sent on (0 for the connection's own).
    pub(crate) fn channel(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }
}

/// Why a request or publish was not answered: its channel or its connection
/// closed first, or (a request only) its deadline passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The channel closed.
    #[error("channel {0}")]
    Channel(CloseReason),
    /// The connection ended.
    #[error(transparent)]
    Connection(ConnectionError),
    /// The `basic.get` was answered with a message that breaks a
    /// per-message limit ([`Config::max_table_depth`](crate::Config::max_table_depth)
    /// in its headers, or [`Config::max_body_size`](crate::Config::max_body_size));
    /// the message was read, dropped and, unless fetched with `no_ack`,
    /// rejected without requeueing. The connection goes on.
    #[error("the message was refused: {0}")]
    MessageRefused(DecodeError),
    /// The request's deadline passed first (see
    /// [`Connection::set_request_deadline`](crate::Connection::set_request_deadline)):
    /// nobody waits for it any more, and what its reply carries, if one
    /// comes, is given back to the broker.
    #[error("no reply came before the request's deadline")]
    TimedOut,
}

/// How the server settled one confirmed publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// `basic.ack`: the broker took responsibility for the message.
    Ack,
    /// `basic.nack`: the broker could not take the message.
    Nack,
    /// The channel or connection closed first: the message may or may not
    /// have been taken. It is never re-sent silently.
    Failed(Failure),
}

/// A message delivered to a consumer (`basic.deliver` with its content).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The channel it arrived on.
    pub channel: u16,
    /// The consumer it is for.
    pub consumer_tag: ShortString,
    /// The tag to acknowledge it with, on the same channel.
    pub delivery_tag: u64,
    /// True if it was delivered before and not acknowledged.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// Its properties and body.
    pub content: Content,
}

impl Delivery {
    /// The message's properties.
    #[must_use]
    pub fn properties(&self) -> &BasicProperties {
        &self.content.header.properties
    }

    /// The message's body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.content.body
    }

    /// How many times a quorum queue delivered this message before (its
    /// `x-delivery-count` header, which RabbitMQ adds from the second
    /// delivery on): `None` on a first delivery and from queues that do
    /// not count. Once it reaches the queue's
    /// [`delivery_limit`](crate::queue::QueueArguments::delivery_limit)
    /// the next requeue dead-letters the message instead.
    ///
    /// ```
    /// # fn handle(delivery: &amqp_proto::Delivery) {
    /// if delivery.delivery_count().is_some_and(|count| count >= 3) {
    ///     eprintln!("giving up on a message delivered {} times", delivery.delivery_count().unwrap_or(0) + 1);
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn delivery_count(&self) -> Option<u64> {
        crate::queue::delivery_count(self.properties())
    }

    /// The message's offset in the stream it was delivered from (its
    /// `x-stream-offset` header); `None` for a message that did not come
    /// from a stream. A consumer that keeps the last offset it processed
    /// resumes after it with
    /// [`StreamOffset::Offset`](crate::queue::StreamOffset::Offset)`(last + 1)`.
    #[must_use]
    pub fn stream_offset(&self) -> Option<u64> {
        crate::queue::stream_offset(self.properties())
    }
}

/// A mandatory message the broker could not route (`basic.return`).
#[derive(Debug, Clone, PartialEq)]
pub struct Returned {
    /// The channel it was published on.
    pub channel: u16,
    /// Why it was returned (312 no-route, 313 no-consumers).
    pub reply_code: u16,
    /// The server's explanation.
    pub reply_text: ShortString,
    /// The exchange it was published to.
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// Its properties and body.
    pub content: Content,
}

/// What carried a refused message; see [`Event::MessageRefused`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedOrigin {
    /// A `basic.deliver` to a consumer.
    Delivery {
        /// The consumer it was for.
        consumer_tag: ShortString,
        /// Its delivery tag (already settled when `rejected`).
        delivery_tag: u64,
        /// True if it was delivered before.
        redelivered: bool,
    },
    /// A `basic.return` of a mandatory message.
    Return {
        /// Why the broker returned it.
        reply_code: u16,
    },
}

/// A message the core read and dropped because it breaks a per-message
/// limit; see [`Event::MessageRefused`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedMessage {
    /// The channel it arrived on.
    pub channel: u16,
    /// What carried it.
    pub origin: RefusedOrigin,
    /// The limit it broke.
    pub error: DecodeError,
    /// True if the core rejected it (`basic.reject`, no requeue) because
    /// it awaited an acknowledgement: the broker dead-letters or drops it
    /// rather than handing it to the next consumer.
    pub rejected: bool,
}

/// A message fetched with `basic.get`.
#[derive(Debug, Clone, PartialEq)]
pub struct GetMessage {
    /// The tag to acknowledge it with.
    pub delivery_tag: u64,
    /// True if it was delivered before and not acknowledged.
    pub redelivered: bool,
    /// The exchange it was published to.
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// Messages left in the queue.
    pub message_count: u32,
    /// Its properties and body.
    pub content: Content,
}

impl GetMessage {
    /// How many times a quorum queue delivered this message before; see
    /// [`Delivery::delivery_count`].
    #[must_use]
    pub fn delivery_count(&self) -> Option<u64> {
        crate::queue::delivery_count(&self.content.header.properties)
    }
}

/// Something the adapter must act on. Drain them with
/// [`Connection::poll_event`](crate::Connection::poll_event) after every
/// input and command.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed: channels can be opened.
    Opened {
        /// The negotiated limits.
        tuning: Tuning,
        /// What the server said about itself (product, version,
        /// capabilities, cluster name, ...).
        server_properties: FieldTable,
    },
    /// A custom SASL mechanism received a challenge; answer with
    /// [`Connection::respond_to_challenge`](crate::Connection::respond_to_challenge).
    SaslChallenge {
        /// The challenge.
        challenge: LongString,
    },
    /// A channel is open.
    ChannelOpened {
        /// The channel.
        channel: u16,
        /// The request that opened it.
        request: RequestId,
    },
    /// A synchronous request was answered.
    Reply {
        /// The channel.
        channel: u16,
        /// The request answered (requests on a channel are answered in the
        /// order they were sent).
        request: RequestId,
        /// The reply (`queue.declare-ok`, `basic.consume-ok`,
        /// `basic.get-empty`, ...). `basic.get-ok` arrives as
        /// [`Event::GetOk`] instead.
        method: Method,
    },
    /// A `basic.get` was answered with a message.
    GetOk {
        /// The channel.
        channel: u16,
        /// The `basic.get` request.
        request: RequestId,
        /// The message.
        message: Box<GetMessage>,
    },
    /// A request will never be answered: its channel or connection closed.
    RequestFailed {
        /// The channel.
        channel: u16,
        /// The request.
        request: RequestId,
        /// Why.
        failure: Failure,
    },
    /// A message for a consumer.
    Delivery(Delivery),
    /// A delivered or returned message broke a per-message limit (a
    /// headers table deeper than [`Config::max_table_depth`](crate::Config::max_table_depth),
    /// a body over [`Config::max_body_size`](crate::Config::max_body_size)).
    /// Its frames were read and dropped and, if it awaited an
    /// acknowledgement, the core rejected it without requeueing, so it
    /// cannot come back and fail the next consumer too. Only that message
    /// is lost: the connection and channel go on. A `basic.get` answered
    /// with such a message fails with [`Failure::MessageRefused`] instead.
    MessageRefused(Box<RefusedMessage>),
    /// An unroutable mandatory message came back. RabbitMQ sends it before
    /// the confirm of the same publish, and events keep that order.
    Returned(Box<Returned>),
    /// A publish in confirm mode was settled.
    Confirm {
        /// The channel it was published on.
        channel: u16,
        /// The sequence number [`ChannelRef::publish`](crate::ChannelRef::publish)
        /// returned for it.
        sequence: u64,
        /// How it was settled.
        outcome: ConfirmOutcome,
    },
    /// The server cancelled a consumer (its queue was deleted, or it failed
    /// over); no more deliveries will come for it.
    ConsumerCancelled {
        /// The channel.
        channel: u16,
        /// The consumer.
        consumer_tag: ShortString,
    },
    /// The server asked to pause (`active == false`) or resume publishing on
    /// a channel; the core answered it.
    Flow {
        /// The channel.
        channel: u16,
        /// Whether publishing may go on.
        active: bool,
    },
    /// The broker stopped accepting publishes on this connection (a memory
    /// or disk alarm).
    Blocked {
        /// The broker's reason.
        reason: ShortString,
    },
    /// The broker accepts publishes again.
    Unblocked,
    /// A channel closed, by either side. Its id may be reused.
    ChannelClosed {
        /// The channel.
        channel: u16,
        /// Why.
        reason: CloseReason,
    },
    /// A channel closed and the core is reopening it in place of an
    /// [`Event::ChannelClosed`]: the server closed it because a consumer on
    /// it held a delivery unacknowledged past the broker's consumer timeout
    /// ([`CloseReason::is_consumer_timeout`], with
    /// [`Config::reopen_timed_out_channels`](crate::Config::reopen_timed_out_channels)),
    /// or this side closed it because the broker nacked its publishes
    /// before acking any (`reason` is then the client's close; see
    /// [`Config::reopen_unacked_channels`](crate::Config::reopen_unacked_channels)):
    /// same id and handle, mode, qos and consumers (same tags). What the
    /// channel had outstanding failed with `reason` just before
    /// ([`Event::RequestFailed`], [`Event::Confirm`] with
    /// [`ConfirmOutcome::Failed`]); the broker requeued every delivery left
    /// unacknowledged on it, and acknowledging one of those does nothing
    /// (its tag is from before, as after a connection recovery). Until
    /// [`Event::ChannelRecovered`], commands on the channel fail with
    /// [`UsageError::Recovering`](crate::UsageError::Recovering) and
    /// publishers see [`Readiness::Recovering`](crate::Readiness::Recovering).
    ChannelRecovering {
        /// The channel.
        channel: u16,
        /// The close: the server's (a consumer timeout) or this side's.
        reason: CloseReason,
    },
    /// A channel being reopened is open again
    /// with its consumers ([`Event::ChannelRecovering`] came first). If a
    /// step was refused (the queue is gone, say), it is in `failures` and
    /// the channel's [`Event::ChannelClosed`] came before this.
    ChannelRecovered {
        /// The channel.
        channel: u16,
        /// Why it had closed.
        reason: CloseReason,
        /// Steps the server refused.
        failures: Vec<crate::recovery::RecoveryFailure>,
    },
    /// A connection made with [`Connection::recover`](crate::Connection::recover)
    /// declared the recorded topology again: channels (same ids, modes,
    /// qos), exchanges, queues, bindings and consumers (same tags). The
    /// channels are usable again from this event on.
    Recovered {
        /// Server-named queues, each with its old and its new name.
        renamed_queues: Vec<(ShortString, ShortString)>,
        /// Steps the server refused; everything else was declared. An
        /// application channel whose step failed was closed (its
        /// [`Event::ChannelClosed`] came before this).
        failures: Vec<crate::recovery::RecoveryFailure>,
    },
    /// The connection is over: the adapter sends what is still queued (at
    /// most a close or close-ok) and closes the socket. Always the last event.
    ///
    /// It ends every channel too, without an [`Event::ChannelClosed`] for
    /// each: a channel's close means that channel is gone for good, while a
    /// failed connection's channels come back under their handles when it
    /// is [recovered](crate::Connection::recover). What each channel had
    /// outstanding was failed just before, with this error
    /// ([`Event::RequestFailed`], [`Event::Confirm`] with
    /// [`ConfirmOutcome::Failed`]). To stop without failing publishes, see
    /// [`Connection::close_when_confirmed`](crate::Connection::close_when_confirmed).
    Closed(ConnectionError),
}
