//! Commands on one channel: requests, publishes, acknowledgements, close.

use bytes::Bytes;

use super::typed::{Pending, Synchronous};
use crate::codec::ShortString;
use crate::codec::{
    body_frame_header, encode_properties_frame, encode_publish_frame, BasicProperties,
};
use crate::connection::{stats, Connection};
use crate::error::{StreamRefusal, UsageError};
use crate::event::RequestId;
use crate::spec::constants::{ReplyCode, FRAME_OVERHEAD};
use crate::spec::{BasicAck, BasicConsume, BasicNack, BasicPublish, BasicReject, Method};

/// How the application settles a delivery; see [`ChannelRef::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// `basic.ack`: the message is done with (with `multiple`, every
    /// unacknowledged one up to it).
    Ack {
        /// Every unacknowledged delivery up to this one.
        multiple: bool,
    },
    /// `basic.nack` (RabbitMQ's): refused, requeued or not.
    Nack {
        /// Every unacknowledged delivery up to this one.
        multiple: bool,
        /// Back to the queue rather than dropped or dead-lettered.
        requeue: bool,
    },
    /// `basic.reject`: this one delivery refused, requeued or not.
    Reject {
        /// Back to the queue rather than dropped or dead-lettered.
        requeue: bool,
    },
}

/// A borrowed handle on one channel of a [`Connection`], from
/// [`Connection::channel`]. Every command queues frames and returns at once;
/// outcomes arrive as events.
///
/// ```
/// # use amqp_proto::{Config, Connection};
/// # use amqp_proto::spec::QueueDeclare;
/// # fn demo(connection: &mut Connection, channel: u16) -> Result<(), amqp_proto::UsageError> {
/// let request = connection.channel(channel)?.request(QueueDeclare {
///     queue: "jobs".into(),
///     durable: true,
///     ..Default::default()
/// })?;
/// // Later: Event::Reply { request, method: Method::QueueDeclareOk(..), .. }
/// # let _ = request; Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChannelRef<'a> {
    connection: &'a mut Connection,
    id: u16,
}

impl<'a> ChannelRef<'a> {
    pub(crate) fn new(connection: &'a mut Connection, id: u16) -> Self {
        Self { connection, id }
    }

    /// The channel id.
    #[must_use]
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The request of this channel's `channel.open` while its open-ok is
    /// awaited ([`Event::ChannelOpened`](crate::Event::ChannelOpened)
    /// carries it), for
    /// [`Connection::set_request_deadline`] and
    /// [`Connection::abandon_request`]; `None` once it is open.
    #[must_use]
    pub fn open_request(&mut self) -> Option<RequestId> {
        self.connection
            .channel_state(self.id)
            .and_then(|channel| channel.open_request())
    }

    /// Sends a method on this channel: any that a client may send except
    /// the ones with their own command (`channel.open`/`close` and
    /// `basic.publish`) and connection methods. Returns the request id when
    /// a reply will come ([`Event::Reply`](crate::Event::Reply), or
    /// [`Event::GetOk`](crate::Event::GetOk) for `basic.get`), `None` for
    /// methods without one (acks, `nowait`).
    ///
    /// An acknowledgement (`basic.ack`, `nack`, `reject`) of a delivery made
    /// before a [recovery](Connection::recover) is dropped: the broker
    /// requeued that message when the old connection failed. One naming a
    /// delivery tag that is not awaiting settlement on the channel is
    /// refused with [`UsageError::UnknownDeliveryTag`].
    pub fn request(&mut self, method: impl Into<Method>) -> Result<Option<RequestId>, UsageError> {
        let method = method.into();
        // In the application's numbering, which the stream positions of
        // the record keep.
        let settled = match &method {
            Method::BasicAck(ack) => Some((ack.delivery_tag, ack.multiple)),
            Method::BasicNack(nack) => Some((nack.delivery_tag, nack.multiple)),
            Method::BasicReject(reject) => Some((reject.delivery_tag, false)),
            _ => None,
        };
        let Some(method) = self.with_wire_tags(method)? else {
            return Ok(None);
        };
        self.check_request(&method)?;
        let request = self.connection.send_request(self.id, &method)?;
        if let (Some(channel), stats) = self.connection.channel_and_stats(self.id) {
            channel.settled(&method, stats);
        }
        if let Some(recorder) = self.connection.recorder_mut() {
            recorder.sent(self.id, &method, request);
            if let Some((tag, multiple)) = settled {
                recorder.streams.settled(self.id, tag, multiple);
            }
        }
        Ok(request)
    }

    /// Sends a synchronous method and returns the [`Pending`] request
    /// that recognises its answer and hands the reply over as its own
    /// struct (a `QueueDeclareOk` for a `QueueDeclare`). A reply is certain
    /// here, so a method with `nowait` set is refused
    /// ([`UsageError::NotForChannel`]): send it with
    /// [`request`](Self::request), which expects nothing back.
    ///
    /// ```
    /// # use amqp_proto::{ChannelHandle, Connection, UsageError};
    /// use amqp_proto::spec::QueueDeclare;
    ///
    /// # fn demo(connection: &mut Connection, channel: ChannelHandle) -> Result<(), UsageError> {
    /// let declare = connection
    ///     .channel(channel)?
    ///     .call(QueueDeclare { exclusive: true, ..Default::default() })?;
    /// while let Some(event) = connection.poll_event() {
    ///     if let Some(outcome) = declare.answer(&event) {
    ///         let declared = outcome.expect("the channel stayed open");
    ///         println!("declared {}", declared.queue);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn call<M: Synchronous>(&mut self, method: M) -> Result<Pending<M>, UsageError> {
        let method = method.into();
        if method.nowait() {
            return Err(UsageError::NotForChannel(
                method.name(),
                "with nowait no reply comes: use ChannelRef::request",
            ));
        }
        match self.request(method)? {
            Some(request) => Ok(Pending::new(request)),
            // Every method with a Synchronous impl has a reply unless nowait.
            None => Err(UsageError::NotForChannel(
                "this method",
                "it has no reply: use ChannelRef::request",
            )),
        }
    }

    /// The method with the application's delivery tag turned into the
    /// server's, or `None` for an acknowledgement of a delivery from
    /// before a recovery; an error for one of a tag the broker would not
    /// know.
    fn with_wire_tags(&mut self, mut method: Method) -> Result<Option<Method>, UsageError> {
        let Some(channel) = self.connection.channel_state(self.id) else {
            return Ok(Some(method));
        };
        let (tag, multiple, requeues) = match &mut method {
            Method::BasicAck(BasicAck {
                delivery_tag,
                multiple,
            }) => (delivery_tag, *multiple, false),
            Method::BasicNack(BasicNack {
                delivery_tag,
                multiple,
                ..
            }) => (delivery_tag, *multiple, true),
            Method::BasicReject(BasicReject { delivery_tag, .. }) => (delivery_tag, false, true),
            _ => return Ok(Some(method)),
        };
        let Some(wire) = channel.wire_delivery_tag(*tag) else {
            return Ok(None);
        };
        channel.check_settlement(*tag, multiple)?;
        if requeues {
            channel.check_requeue(*tag, multiple)?;
        }
        *tag = wire;
        Ok(Some(method))
    }

    fn check_request(&mut self, method: &Method) -> Result<(), UsageError> {
        let refused = |why: &'static str| UsageError::NotForChannel(method.name(), why);
        if !method.sent_by_client() {
            return Err(refused("only servers send it"));
        }
        match method {
            Method::ConnectionStartOk(_)
            | Method::ConnectionSecureOk(_)
            | Method::ConnectionTuneOk(_)
            | Method::ConnectionOpen(_)
            | Method::ConnectionClose(_)
            | Method::ConnectionCloseOk(_)
            | Method::ConnectionUpdateSecret(_) => Err(refused("it belongs to the connection")),
            Method::ChannelOpen(_) => Err(refused("use Connection::open_channel")),
            Method::ChannelClose(_) | Method::ChannelCloseOk(_) => {
                Err(refused("use ChannelRef::close"))
            }
            Method::ChannelFlowOk(_) => Err(refused("the core answers channel.flow itself")),
            Method::BasicPublish(_) => Err(refused("use ChannelRef::publish")),
            Method::BasicConsume(consume) => {
                if consume.nowait && consume.consumer_tag.is_empty() {
                    return Err(UsageError::NowaitNeedsName("a consumer tag"));
                }
                if self.connection.is_stream_consume(consume) {
                    self.check_stream_consume(consume)?;
                }
                let in_use = self
                    .connection
                    .channel_state(self.id)
                    .is_some_and(|channel| channel.has_consumer(&consume.consumer_tag));
                if in_use {
                    return Err(UsageError::ConsumerTagInUse(
                        consume.consumer_tag.to_string(),
                    ));
                }
                Ok(())
            }
            Method::QueueDeclare(declare) if declare.nowait && declare.queue.is_empty() => {
                Err(UsageError::NowaitNeedsName("a queue name"))
            }
            Method::QueueDeclare(declare) => crate::queue::check_declare(declare),
            Method::BasicGet(get) if self.connection.is_declared_stream_name(&get.queue) => {
                Err(UsageError::Stream(StreamRefusal::Get {
                    queue: get.queue.to_string_lossy().into_owned(),
                }))
            }
            Method::BasicQos(qos) if qos.global && qos.prefetch_count > 0 => {
                let stream = self
                    .connection
                    .channel_state(self.id)
                    .and_then(|channel| channel.consumed_stream().cloned());
                match stream {
                    Some(queue) => Err(UsageError::Stream(StreamRefusal::GlobalQos {
                        queue: queue.to_string_lossy().into_owned(),
                    })),
                    None => Ok(()),
                }
            }
            Method::ConfirmSelect(_) | Method::TxSelect(_) => {
                let (confirms, transactional) = self
                    .connection
                    .channel_state(self.id)
                    .map_or((false, false), |channel| {
                        (channel.in_confirm_mode(), channel.is_transactional())
                    });
                let mixing = match method {
                    Method::ConfirmSelect(_) => transactional,
                    _ => confirms,
                };
                if mixing {
                    Err(UsageError::ConfirmAndTransaction)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Refuses a consume of a stream that RabbitMQ would refuse: without
    /// acknowledgements, without a per-consumer prefetch, or beside a
    /// global one.
    fn check_stream_consume(&mut self, consume: &BasicConsume) -> Result<(), UsageError> {
        let queue = || consume.queue.to_string_lossy().into_owned();
        if consume.no_ack {
            return Err(UsageError::Stream(StreamRefusal::NoAck { queue: queue() }));
        }
        let prefetch = self
            .connection
            .channel_state(self.id)
            .map(|channel| channel.prefetch())
            .unwrap_or_default();
        if prefetch.consumer == 0 {
            return Err(UsageError::Stream(StreamRefusal::NoPrefetch {
                queue: queue(),
            }));
        }
        if prefetch.global > 0 {
            return Err(UsageError::Stream(StreamRefusal::GlobalQos {
                queue: queue(),
            }));
        }
        Ok(())
    }

    /// Publishes a message: the method, a content header and as many body
    /// frames as the negotiated frame-max needs. A body over
    /// [`Config::copy_bodies_up_to`](crate::Config::copy_bodies_up_to) is
    /// sent without copying, each piece a slice of `body`; a smaller one is
    /// copied in with the frames around it. In confirm mode, returns the sequence
    /// number its [`Event::Confirm`](crate::Event::Confirm) will carry.
    ///
    /// The method and properties are borrowed: publishers usually send many
    /// messages with the same ones, and the properties are large.
    pub fn publish(
        &mut self,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<Option<u64>, UsageError> {
        if self.connection.is_draining() {
            return Err(UsageError::ConnectionClosed);
        }
        let body = body.into();
        let max = self.connection.config().max_body_size;
        if body.len() as u64 > max {
            return Err(UsageError::BodyTooLarge {
                size: body.len(),
                max,
            });
        }
        let frame_max = self.connection.tuning().frame_max;
        let copy = body.len() <= self.connection.config().copy_bodies_up_to;
        let output = self.connection.output_mut();
        let start = output.frames().len();
        encode_publish_frame(self.id, publish, frame_max, output.frames())?;
        let body_size = body.len() as u64;
        if let Err(error) =
            encode_properties_frame(self.id, body_size, properties, frame_max, output.frames())
        {
            output.frames().truncate(start);
            return Err(error.into());
        }
        let piece = (frame_max - FRAME_OVERHEAD) as usize;
        // The method and the content header.
        let mut frames = 2;
        let mut rest = body;
        while !rest.is_empty() {
            let chunk = rest.split_to(piece.min(rest.len()));
            // The piece size was derived from frame-max, so it fits.
            let header = body_frame_header(self.id, chunk.len(), frame_max)?;
            output.body_frame(header, chunk, copy);
            frames += 1;
        }
        let stats = self.connection.stats_mut();
        stats::add(&mut stats.publishes, 1);
        stats::add(&mut stats.frames_sent, frames);
        if crate::diagnostics::frames_wanted() {
            crate::diagnostics::publish_sent(self.id, body_size, frames);
        }
        Ok(self
            .connection
            .channel_state(self.id)
            .and_then(super::Channel::record_publish))
    }

    /// Starts a consumer (`basic.consume`), naming it: an empty consumer
    /// tag is replaced by one the core makes up, unique on the channel
    /// (`ctag-<channel>.<n>`). RabbitMQ answers consumes from the queues'
    /// processes, so consume-oks of pipelined consumes may overtake each
    /// other, and a tag named in the request is what matches each reply to
    /// its consume; a named consume may also be `nowait`. Returns the tag,
    /// and the request its consume-ok answers (none with `nowait`).
    ///
    /// [`request`](Self::request) sends a `basic.consume` as it is.
    pub fn consume(
        &mut self,
        mut consume: BasicConsume,
    ) -> Result<(ShortString, Option<RequestId>), UsageError> {
        if consume.consumer_tag.is_empty() {
            consume.consumer_tag = self.connection.new_consumer_tag(self.id);
        }
        let tag = consume.consumer_tag.clone();
        let request = self.request(consume)?;
        Ok((tag, request))
    }

    /// Settles a delivery as `how` says: the one call behind
    /// [`ack`](Self::ack), [`nack`](Self::nack) and [`reject`](Self::reject),
    /// for code that passes the decision along.
    ///
    /// The tag named must await a settlement on this channel, with
    /// `multiple` too (RabbitMQ looks it up and closes the channel with
    /// 406 otherwise): a tag never delivered, settled already or delivered
    /// with `no_ack` is refused with [`UsageError::UnknownDeliveryTag`] and
    /// nothing is sent. Tag 0 with `multiple` settles everything
    /// outstanding. [`Connection::stats`] counts the messages settled.
    pub fn settle(&mut self, delivery_tag: u64, how: Settlement) -> Result<(), UsageError> {
        match how {
            Settlement::Ack { multiple } => self.ack(delivery_tag, multiple),
            Settlement::Nack { multiple, requeue } => self.nack(delivery_tag, multiple, requeue),
            Settlement::Reject { requeue } => self.reject(delivery_tag, requeue),
        }
    }

    /// Acknowledges a delivery (with `multiple`, every one up to it).
    pub fn ack(&mut self, delivery_tag: u64, multiple: bool) -> Result<(), UsageError> {
        self.request(BasicAck {
            delivery_tag,
            multiple,
        })
        .map(drop)
    }

    /// Rejects deliveries (RabbitMQ's `basic.nack`), requeueing them or not.
    pub fn nack(
        &mut self,
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), UsageError> {
        self.request(BasicNack {
            delivery_tag,
            multiple,
            requeue,
        })
        .map(drop)
    }

    /// Rejects one delivery, requeueing it or not.
    pub fn reject(&mut self, delivery_tag: u64, requeue: bool) -> Result<(), UsageError> {
        self.request(BasicReject {
            delivery_tag,
            requeue,
        })
        .map(drop)
    }

    /// Gives back a delivery nobody will process (its consumer or its
    /// `basic.get` was abandoned): requeued with `basic.reject`, or, for a
    /// delivery from a stream, acknowledged, since a stream keeps every
    /// message and RabbitMQ answers a reject of one by closing the
    /// connection (540). Refused like [`reject`](Self::reject) for a tag
    /// that does not await a settlement.
    pub fn give_back(&mut self, delivery_tag: u64) -> Result<(), UsageError> {
        let streamed = self
            .connection
            .channel_state(self.id)
            .is_some_and(|channel| channel.check_requeue(delivery_tag, false).is_err());
        if streamed {
            self.ack(delivery_tag, false)
        } else {
            self.reject(delivery_tag, true)
        }
    }

    /// Closes the channel. Outstanding requests and unconfirmed publishes
    /// fail when the server's `close-ok` arrives, followed by
    /// [`Event::ChannelClosed`](crate::Event::ChannelClosed).
    pub fn close(self, code: ReplyCode, text: &str) -> Result<(), UsageError> {
        self.connection.send_channel_close(self.id, code, text)?;
        // A channel being closed is not wanted back after a recovery, even
        // if the connection fails before the close-ok.
        if let Some(recorder) = self.connection.recorder_mut() {
            recorder.topology.channel_closed(self.id);
        }
        Ok(())
    }

    /// Publishes on this channel awaiting confirmation.
    #[must_use]
    pub fn unconfirmed(&mut self) -> usize {
        self.connection
            .channel_state(self.id)
            .map_or(0, |channel| channel.unconfirmed())
    }
}
