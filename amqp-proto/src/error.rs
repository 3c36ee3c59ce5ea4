//! Error types: what a peer's bytes can do wrong, and what local code can misuse.
//!
//! Errors come in layers, as in h11: a [`DecodeError`] is the *peer's* fault
//! and carries the AMQP reply code with which the connection must be closed;
//! an [`EncodeError`] is the *local application's* fault (a value that cannot
//! be put on the wire) and leaves every buffer as it was before the call.

use crate::spec::constants::ReplyCode;

/// Malformed or hostile input from the peer.
///
/// Each variant maps to the reply code the AMQP 0-9-1 specification (or, where
/// it is silent, RabbitMQ's practice) prescribes; see [`DecodeError::reply_code`].
/// After any of these the connection cannot continue: the caller closes it with
/// `connection.close` carrying that code, unless [`DecodeError::close_silently`]
/// says the specification requires dropping the socket without another byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The octet after a frame's payload was not `0xCE` (spec 4.2.3). The
    /// caller must drop the connection without sending anything more.
    #[error("frame end octet is {found:#04x}, expected 0xce")]
    BadFrameEnd {
        /// The octet found where the frame end was expected.
        found: u8,
    },
    /// A frame header announced more bytes than the negotiated `frame-max`
    /// allows. Detected from the 7-byte header, before the payload is buffered.
    #[error("frame of {size} bytes exceeds the frame-max of {max} bytes")]
    FrameTooLarge {
        /// Total size the header announced, header and frame end included.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// The frame type octet is none of method (1), header (2), body (3) or
    /// heartbeat (8).
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A heartbeat frame on a channel other than zero, or with a payload.
    #[error("malformed heartbeat frame on channel {channel} with {size} payload bytes")]
    MalformedHeartbeat {
        /// The channel the heartbeat was sent on.
        channel: u16,
        /// The payload size it announced.
        size: u32,
    },
    /// A frame's payload ended before every field of its method or header was
    /// read.
    #[error("{context} is truncated")]
    Truncated {
        /// What was being decoded.
        context: &'static str,
    },
    /// A frame's payload continued after the last field of its method or header.
    #[error("{context} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// What was being decoded.
        context: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A field table or array value has a type tag RabbitMQ does not define.
    #[error("unknown field value type tag {tag:#04x}")]
    UnknownFieldType {
        /// The tag octet.
        tag: u8,
    },
    /// Field tables are nested deeper than the configured limit.
    #[error("field tables nested deeper than {max} levels")]
    TableTooDeep {
        /// The configured maximum depth.
        max: usize,
    },
    /// The method frame names a class/method pair that AMQP 0-9-1 with
    /// RabbitMQ's extensions does not define.
    #[error("unknown method {class_id}.{method_id}")]
    UnknownMethod {
        /// The class id read from the frame.
        class_id: u16,
        /// The method id read from the frame.
        method_id: u16,
    },
    /// A content header for a class that has no content (only `basic` does).
    /// Spec 4.2.6 counts a wrong class id among the badly formatted
    /// contents answered with 505 unexpected-frame.
    #[error("content header for class {0}, which carries no content")]
    UnknownContentClass(u16),
    /// The property-flags word sets a bit that names no property.
    #[error("property flags {flags:#06x} set bits that name no property")]
    InvalidPropertyFlags {
        /// The flags word as received.
        flags: u16,
    },
    /// A content header announced a body larger than the configured maximum.
    #[error("message body of {size} bytes exceeds the configured maximum of {max}")]
    BodyTooLarge {
        /// The size the header announced.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A content header announced a body that would take the bodies being
    /// received on all channels at once past the configured total.
    #[error(
        "message body of {size} bytes would take the bodies in progress \
         ({in_progress} bytes) past the configured total of {max}"
    )]
    BodiesInProgressTooLarge {
        /// The size the header announced.
        size: u64,
        /// Announced bytes of the bodies already being received.
        in_progress: u64,
        /// The configured total.
        max: u64,
    },
    /// Body frames carried more bytes than the content header announced.
    #[error("body frames carry {received} bytes but the header announced {expected}")]
    BodyOverrun {
        /// The size the header announced.
        expected: u64,
        /// Bytes received once this frame is counted.
        received: u64,
    },
    /// A frame arrived that the content sequence on its channel does not allow
    /// (a body without a header, a method in the middle of a content, ...).
    #[error("unexpected {found} frame: {expected}")]
    UnexpectedFrame {
        /// The kind of frame received.
        found: &'static str,
        /// What the channel was waiting for.
        expected: &'static str,
    },
    /// The server answered our protocol header with its own: it does not
    /// speak AMQP 0-9-1 and will close the socket (spec 4.2.2).
    #[error(
        "server requires protocol AMQP {major}-{minor}-{revision} (protocol id {protocol_id})"
    )]
    UnsupportedProtocol {
        /// Protocol id octet (0 for AMQP 0-9-1, 1 for AMQP 1.0 framing, ...).
        protocol_id: u8,
        /// Major version the server offers.
        major: u8,
        /// Minor version the server offers.
        minor: u8,
        /// Revision the server offers.
        revision: u8,
    },
}

impl DecodeError {
    /// The reply code to close the connection with.
    ///
    /// Spec violations use the codes of section 1.2 of the specification
    /// (501 frame-error for undecodable frames, 502 syntax-error for illegal
    /// field values, 505 unexpected-frame for content out of sequence, 540
    /// not-implemented for ids we do not know); exceeding a limit this side
    /// configured, for input that is otherwise legal, is 506 resource-error.
    #[must_use]
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Self::BadFrameEnd { .. }
            | Self::FrameTooLarge { .. }
            | Self::UnknownFrameType(_)
            | Self::MalformedHeartbeat { .. }
            | Self::Truncated { .. }
            | Self::TrailingBytes { .. }
            | Self::BodyOverrun { .. }
            | Self::UnsupportedProtocol { .. } => ReplyCode::FRAME_ERROR,
            Self::UnknownFieldType { .. } | Self::InvalidPropertyFlags { .. } => {
                ReplyCode::SYNTAX_ERROR
            }
            Self::TableTooDeep { .. }
            | Self::BodyTooLarge { .. }
            | Self::BodiesInProgressTooLarge { .. } => ReplyCode::RESOURCE_ERROR,
            Self::UnknownMethod { .. } => ReplyCode::NOT_IMPLEMENTED,
            Self::UnexpectedFrame { .. } | Self::UnknownContentClass(_) => {
                ReplyCode::UNEXPECTED_FRAME
            }
        }
    }

    /// True when the specification requires closing the socket without
    /// sending anything more: after an invalid frame-end octet (spec 4.2.3),
    /// whose framing can no longer be trusted, and after the server rejected
    /// our protocol header (it closes the socket itself).
    #[must_use]
    pub fn close_silently(&self) -> bool {
        matches!(
            self,
            Self::BadFrameEnd { .. } | Self::UnsupportedProtocol { .. }
        )
    }
}

/// A value the local application asked to encode cannot go on the wire.
///
/// Encoding functions that return this leave the output buffer exactly as it
/// was before the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A `shortstr` longer than 255 bytes.
    #[error("short string of {len} bytes exceeds 255 bytes")]
    ShortStringTooLong {
        /// The string's length in bytes.
        len: usize,
    },
    /// A `longstr`, table or array longer than 2^32 - 1 bytes.
    #[error("value of {len} bytes exceeds the 32-bit length limit")]
    LongValueTooLong {
        /// The encoded length in bytes.
        len: usize,
    },
    /// Field tables and arrays nest deeper than `max` (the depth a decoder
    /// accepts by default): a peer would refuse what it cannot read, so
    /// it is not sent.
    #[error("field tables nest deeper than {max} levels")]
    TableTooDeep {
        /// The deepest nesting allowed.
        max: usize,
    },
    /// The encoded frame would exceed the frame-max in force.
    #[error("frame of {size} bytes exceeds the frame-max of {max} bytes")]
    FrameTooLarge {
        /// The size the frame would have, header and frame end included.
        size: usize,
        /// The limit in force.
        max: u32,
    },
}

/// Why a connection or channel closed: the reply code and text of the
/// `connection.close` / `channel.close` that ended it, and which side sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The reply code (200 for a normal close).
    pub code: ReplyCode,
    /// The reply text.
    pub text: String,
    /// Class of the method that caused the close, or 0.
    pub class_id: u16,
    /// Method that caused the close, or 0.
    pub method_id: u16,
    /// Who sent the close.
    pub initiator: Initiator,
}

impl CloseReason {
    pub(crate) fn new(code: ReplyCode, text: impl Into<String>, initiator: Initiator) -> Self {
        Self {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
            initiator,
        }
    }

    /// The reason a server gave in a `connection.close` or `channel.close`.
    pub(crate) fn from_server(
        reply_code: u16,
        reply_text: &crate::codec::ShortString,
        class_id: u16,
        method_id: u16,
    ) -> Self {
        Self {
            code: ReplyCode(reply_code),
            text: reply_text.to_string_lossy().into_owned(),
            class_id,
            method_id,
            initiator: Initiator::Server,
        }
    }

    /// True for a normal close (reply code 200).
    #[must_use]
    pub fn is_normal(&self) -> bool {
        self.code == ReplyCode::REPLY_SUCCESS
    }

    /// True when RabbitMQ closed the channel because a consumer on it held
    /// a delivery unacknowledged longer than the broker's
    /// `consumer_timeout` (30 minutes by default): 406 PRECONDITION_FAILED
    /// with "delivery acknowledgement on channel N timed out". Every
    /// delivery unacknowledged on the channel goes back to its queue.
    /// Acknowledge sooner, or ask the operator for a longer timeout; with
    /// automatic recovery the channel and its consumers are reopened (see
    /// [`Event::ChannelRecovering`](crate::Event::ChannelRecovering)).
    ///
    /// ```
    /// # fn on_close(reason: &amqp_proto::CloseReason) {
    /// if reason.is_consumer_timeout() {
    ///     eprintln!("acknowledged too late (after {:?}): {reason}", reason.consumer_timeout());
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn is_consumer_timeout(&self) -> bool {
        self.initiator == Initiator::Server
            && self.code == ReplyCode::PRECONDITION_FAILED
            && self.text.contains("delivery acknowledgement on channel")
            && self.text.contains("timed out")
    }

    /// The broker's consumer timeout, as the text of a
    /// [consumer-timeout](Self::is_consumer_timeout) close names it
    /// ("Timeout value used: 2000 ms"); `None` for any other close, or a
    /// text without it.
    #[must_use]
    pub fn consumer_timeout(&self) -> Option<std::time::Duration> {
        if !self.is_consumer_timeout() {
            return None;
        }
        let (_, rest) = self.text.split_once("Timeout value used:")?;
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().map(std::time::Duration::from_millis)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by = match self.initiator {
            Initiator::Server => "server",
            Initiator::Client => "client",
        };
        write!(f, "closed by {by} with {}: {}", self.code, self.text)?;
        if self.class_id != 0 || self.method_id != 0 {
            let id = crate::spec::MethodId {
                class_id: self.class_id,
                method_id: self.method_id,
            };
            write!(f, " (in reply to {id})")?;
        }
        Ok(())
    }
}

/// Which side sent a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The server closed (a channel or connection exception, or an operator).
    Server,
    /// This side closed: on the application's request, or because the server
    /// broke the protocol and the core closed with the matching reply code.
    Client,
}

/// Why a connection ended. Delivered once, in
/// [`Event::Closed`](crate::Event::Closed); every outstanding request and
/// unconfirmed publish has been resolved with it by then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// A close handshake completed (either side started it).
    #[error("connection {0}")]
    Closed(CloseReason),
    /// The server broke the protocol; the core closed the connection with
    /// the reply code of the [`DecodeError`] or protocol rule (and waited for
    /// close-ok, unless the specification says to drop the socket at once).
    #[error("protocol violation by the server ({}): {error}", error.reply_code())]
    ProtocolViolation {
        /// What the server did wrong.
        error: ProtocolViolation,
    },
    /// Nothing arrived from the server for two heartbeat intervals.
    #[error("no data from the server for two heartbeat intervals")]
    HeartbeatTimeout,
    /// The handshake did not finish within the configured deadline.
    #[error("the connection handshake did not complete in time")]
    HandshakeTimeout,
    /// Our close was not answered with close-ok within the close deadline.
    #[error("the server did not confirm the close in time")]
    CloseTimeout,
    /// The server refused our credentials (RabbitMQ's
    /// `authentication_failure_close`, or the socket closed right after
    /// `start-ok`).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The credentials were accepted but access to the virtual host was
    /// refused.
    #[error("access refused: {0}")]
    AccessRefused(String),
    /// The server offers none of the SASL mechanisms we can use.
    #[error("server offers SASL mechanisms {offered:?}, none of which is configured")]
    NoCommonMechanism {
        /// The mechanisms the server offered.
        offered: String,
    },
    /// The transport ended (the adapter reported end of stream or an IO
    /// error) before the close handshake completed.
    #[error("transport closed: {0}")]
    TransportClosed(String),
}

impl ConnectionError {
    /// True for failures a new connection may cure, so automatic recovery
    /// should try: the transport failed, the server went silent, or the
    /// server closed the connection because of its own state (an operator
    /// forced it, 320; the server failed, 541). False for what a new
    /// connection would repeat: the application's own close, refused
    /// credentials or virtual host, a server that broke the protocol.
    #[must_use]
    pub fn is_recoverable(&self) -> bool {
        match self {
            Self::TransportClosed(_) | Self::HeartbeatTimeout => true,
            Self::Closed(reason) => {
                reason.initiator == Initiator::Server
                    && [ReplyCode::CONNECTION_FORCED, ReplyCode::INTERNAL_ERROR]
                        .contains(&reason.code)
            }
            _ => false,
        }
    }
}

/// A protocol rule the server broke: either a frame that could not be
/// decoded, or a well-formed frame at the wrong time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// The bytes did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame for a channel that is not open.
    #[error("frame on channel {channel}, which is not open")]
    ChannelNotOpen {
        /// The channel the frame named.
        channel: u16,
    },
    /// A method the server must not send, or not in this state.
    #[error("unexpected {method} on channel {channel}: {why}")]
    UnexpectedMethod {
        /// The channel it arrived on.
        channel: u16,
        /// The method's name.
        method: &'static str,
        /// The rule it broke.
        why: &'static str,
    },
    /// A content header or body frame outside a content.
    #[error("unexpected content frame on channel {channel}")]
    UnexpectedContent {
        /// The channel it arrived on.
        channel: u16,
    },
    /// A method frame where the content of a `basic.deliver`, `get-ok` or
    /// `return` was due (spec 4.2.6: its header and body frames come
    /// before any other frame on the channel).
    #[error("{method} on channel {channel}, where {due} was due")]
    ContentExpected {
        /// The channel it arrived on.
        channel: u16,
        /// The method's name.
        method: &'static str,
        /// What the channel waited for.
        due: &'static str,
    },
    /// A heartbeat or method frame on channel 0 that belongs to a channel,
    /// or a channel method on channel 0.
    #[error("{method} is not valid on channel {channel}")]
    WrongChannel {
        /// The channel it arrived on.
        channel: u16,
        /// The method's name.
        method: &'static str,
    },
}

impl ProtocolViolation {
    /// The reply code the core closes the connection with.
    #[must_use]
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            Self::Decode(error) => error.reply_code(),
            Self::ChannelNotOpen { .. } => ReplyCode::CHANNEL_ERROR,
            Self::UnexpectedMethod { .. } | Self::WrongChannel { .. } => ReplyCode::COMMAND_INVALID,
            Self::UnexpectedContent { .. } | Self::ContentExpected { .. } => {
                ReplyCode::UNEXPECTED_FRAME
            }
        }
    }
}

/// The local application asked for something the connection cannot do in
/// its current state. Nothing was sent and no state changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The handshake has not completed yet.
    #[error("the connection is not open yet")]
    NotOpen,
    /// The connection is declaring its topology again after a failure;
    /// wait for [`Event::Recovered`](crate::Event::Recovered). Or the
    /// channel named is being reopened after a consumer timeout; wait for
    /// [`Event::ChannelRecovered`](crate::Event::ChannelRecovered).
    #[error("the connection is recovering")]
    Recovering,
    /// The connection is closing or closed.
    #[error("the connection is closing or closed")]
    ConnectionClosed,
    /// No channel with this id is open (or opening).
    #[error("channel {0} is not open")]
    ChannelNotOpen(u16),
    /// Every channel id up to the negotiated channel-max is in use.
    #[error("all {0} channels are in use")]
    NoFreeChannel(u16),
    /// A value cannot be encoded (a short string over 255 bytes, a frame
    /// over frame-max, ...).
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// The message body is larger than the configured maximum.
    #[error("body of {size} bytes exceeds the configured maximum of {max}")]
    BodyTooLarge {
        /// The body's size.
        size: usize,
        /// The configured maximum.
        max: u64,
    },
    /// A consumer with this tag already exists on the channel.
    #[error("consumer tag {0:?} is already in use on this channel")]
    ConsumerTagInUse(String),
    /// `nowait` was asked for where the server must name something (a
    /// consumer without a tag, a server-named queue).
    #[error("nowait needs {0}")]
    NowaitNeedsName(&'static str),
    /// The method cannot be sent with [`ChannelRef::request`](crate::ChannelRef::request);
    /// the second string says why, or what to use instead.
    #[error("{0} cannot be sent this way: {1}")]
    NotForChannel(&'static str, &'static str),
    /// No SASL challenge is waiting for a response.
    #[error("no SASL challenge is pending")]
    NoChallengePending,
    /// The channel is in transaction mode and confirms were asked for, or
    /// the reverse; RabbitMQ refuses to mix them.
    #[error("confirm mode and transactions cannot be mixed on one channel")]
    ConfirmAndTransaction,
    /// An ack, nack or reject names a delivery tag that does not await a
    /// settlement on this channel: it was never delivered, was settled
    /// already, or came with `no_ack`. With `multiple` the tag named must
    /// await one too (tag 0 with `multiple`, "all", is always accepted).
    /// RabbitMQ would close the channel with 406 PRECONDITION_FAILED
    /// ("unknown delivery tag"); nothing was sent.
    #[error("delivery tag {0} does not await a settlement on this channel")]
    UnknownDeliveryTag(u64),
    /// A `queue.declare` of a quorum queue or stream (`x-queue-type`) that
    /// is not durable, or is exclusive or auto-delete: RabbitMQ would close
    /// the channel with 406 PRECONDITION_FAILED ("invalid property
    /// 'non-durable'", ...), since such queues are replicated and outlive
    /// their connection. Nothing was sent; declare it durable, shared and
    /// kept ([`QueueArguments::declare`](crate::queue::QueueArguments::declare)
    /// does), or as a classic queue.
    #[error(
        "queue {queue:?}: a {queue_type} queue cannot be {property} \
         (RabbitMQ refuses it with 406 PRECONDITION_FAILED)"
    )]
    QueueProperty {
        /// The queue named.
        queue: String,
        /// Its type, from `x-queue-type`.
        queue_type: crate::queue::QueueType,
        /// The first property RabbitMQ would refuse.
        property: crate::queue::QueueProperty,
    },
    /// Something RabbitMQ refuses on a stream, most of it by closing the
    /// whole connection (540 NOT_IMPLEMENTED); see [`StreamRefusal`] for
    /// each case and what to do instead. Nothing was sent.
    #[error("{0}")]
    Stream(StreamRefusal),
}

/// What RabbitMQ refuses on a stream, refused by the core before sending
/// ([`UsageError::Stream`]). The core knows a queue is a stream when this
/// connection declared it with `x-queue-type` = `stream`, or when a
/// consume carries `x-stream-offset`
/// ([`StreamOffset`](crate::queue::StreamOffset)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamRefusal {
    /// `basic.consume` with `no_ack`: RabbitMQ closes the connection with
    /// 540 ("automatic acknowledgement not supported by stream queues").
    /// Consume with acknowledgements; an ack only makes room in the
    /// prefetch window.
    #[error(
        "stream {queue:?} cannot be consumed with no_ack \
         (RabbitMQ closes the connection with 540 NOT_IMPLEMENTED); consume with acknowledgements"
    )]
    NoAck {
        /// The stream.
        queue: String,
    },
    /// `basic.consume` on a channel without a per-consumer prefetch
    /// (`basic.qos` with a `prefetch_count` and `global` false): RabbitMQ
    /// closes the channel with 406 ("consumer prefetch count is not set").
    /// Set one first.
    #[error(
        "stream {queue:?} needs a per-consumer prefetch: send basic.qos with a prefetch_count \
         (global false) before consuming (RabbitMQ closes the channel with 406 PRECONDITION_FAILED)"
    )]
    NoPrefetch {
        /// The stream.
        queue: String,
    },
    /// A global prefetch (`basic.qos` with `global` and a `prefetch_count`)
    /// on a channel that consumes from a stream, set before or after the
    /// consume: RabbitMQ does not support global qos for streams ("does
    /// not support global qos", 540 on the connection). Use a per-consumer
    /// prefetch, or another channel.
    #[error(
        "stream {queue:?} does not support a global prefetch on its consumer's channel \
         (RabbitMQ closes the connection with 540 NOT_IMPLEMENTED); use basic.qos with global false"
    )]
    GlobalQos {
        /// The stream consumed on the channel.
        queue: String,
    },
    /// `basic.get` from a stream: RabbitMQ closes the connection with 540
    /// ("basic.get not supported by stream queues"). Consume instead.
    #[error(
        "stream {queue:?} cannot be read with basic.get \
         (RabbitMQ closes the connection with 540 NOT_IMPLEMENTED); consume from an offset instead"
    )]
    Get {
        /// The stream.
        queue: String,
    },
    /// `basic.nack` or `basic.reject` of a delivery from a stream (with
    /// `multiple`: of any delivery up to it): RabbitMQ closes the
    /// connection with 540 ("basic.nack and basic.reject not supported by
    /// stream queues"). Acknowledge it; a stream keeps every message
    /// anyway.
    #[error(
        "delivery tag {delivery_tag} came from a stream and cannot be nacked or rejected \
         (RabbitMQ closes the connection with 540 NOT_IMPLEMENTED); acknowledge it"
    )]
    Requeue {
        /// The delivery tag named.
        delivery_tag: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: ReplyCode, text: &str, initiator: Initiator) -> CloseReason {
        CloseReason::new(code, text, initiator)
    }

    #[test]
    fn a_consumer_timeout_is_told_from_other_precondition_failures() {
        // RabbitMQ 3.10's text, channel and timeout included.
        let timeout = closed(
            ReplyCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. \
             Timeout value used: 2000 ms. This timeout value can be configured, \
             see consumers doc guide to learn more",
            Initiator::Server,
        );
        assert!(timeout.is_consumer_timeout());
        assert_eq!(
            timeout.consumer_timeout(),
            Some(std::time::Duration::from_millis(2000))
        );

        let without_value = closed(
            ReplyCode::PRECONDITION_FAILED,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 7 timed out",
            Initiator::Server,
        );
        assert!(without_value.is_consumer_timeout());
        assert_eq!(without_value.consumer_timeout(), None);

        for other in [
            closed(
                ReplyCode::PRECONDITION_FAILED,
                "PRECONDITION_FAILED - unknown delivery tag 5",
                Initiator::Server,
            ),
            closed(
                ReplyCode::PRECONDITION_FAILED,
                "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q'",
                Initiator::Server,
            ),
            // The same words from another code, or from this side, are not it.
            closed(
                ReplyCode::NOT_FOUND,
                "delivery acknowledgement on channel 1 timed out",
                Initiator::Server,
            ),
            closed(
                ReplyCode::PRECONDITION_FAILED,
                "delivery acknowledgement on channel 1 timed out",
                Initiator::Client,
            ),
        ] {
            assert!(!other.is_consumer_timeout(), "{other}");
            assert_eq!(other.consumer_timeout(), None);
        }
    }

    #[test]
    fn refusals_name_the_code_rabbitmq_would_close_with() {
        let refusal = UsageError::Stream(StreamRefusal::NoAck {
            queue: "events".into(),
        });
        assert!(refusal.to_string().contains("540"), "{refusal}");
        let refusal = UsageError::Stream(StreamRefusal::NoPrefetch {
            queue: "events".into(),
        });
        assert!(refusal.to_string().contains("406"), "{refusal}");
        let declare = UsageError::QueueProperty {
            queue: "jobs".into(),
            queue_type: crate::queue::QueueType::Quorum,
            property: crate::queue::QueueProperty::Exclusive,
        };
        assert_eq!(
            declare.to_string(),
            "queue \"jobs\": a quorum queue cannot be exclusive \
             (RabbitMQ refuses it with 406 PRECONDITION_FAILED)"
        );
    }
}
