//! Blocking calls on one channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use amqp_proto::codec::ShortString;
use amqp_proto::spec::BasicConsume;
use amqp_proto::{ChannelHandle, Readiness, RequestId, Returned};

use crate::consumer::{Consumer, Delivery};
use crate::shared::{Inner, Reply, Shared};
use amqp_io_common::session::{typed, ConsumerHandle};
use amqp_io_common::telemetry::{Outgoing, ProcessSpans};
use amqp_io_common::{Error, Result};

amqp_io_common::channel_api! {
    /// One channel of a [`Connection`](crate::Connection).
    ///
    /// Each method sends its request and blocks until the reply, the
    /// channel's timeout ([`set_timeout`](Self::set_timeout); the
    /// connection's [`operation_timeout`](crate::ConnectOptions::operation_timeout)
    /// to start with), or the close of the channel or connection. Requests take
    /// the specification's method structs, whose `Default` fills what is left
    /// out, so every argument the protocol has is reachable:
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::{ExchangeDeclare, QueueBind, QueueDeclare};
    ///
    /// channel.exchange_declare(ExchangeDeclare {
    ///     exchange: "events".into(),
    ///     exchange_type: "topic".into(),
    ///     durable: true,
    ///     ..Default::default()
    /// })?;
    /// let queue = channel.queue_declare(QueueDeclare { exclusive: true, ..Default::default() })?;
    /// channel.queue_bind(QueueBind {
    ///     queue: queue.queue,
    ///     exchange: "events".into(),
    ///     routing_key: "orders.*".into(),
    ///     ..Default::default()
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// Clones are handles on the same channel. A channel stays open until
    /// [`close`](Self::close), a channel error from the server, or the end of
    /// the connection.
    pub struct Channel { shared: Arc<Shared> }
    asyncness = [],
    awaiting = [],
    demo = "# fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {",
    suffix = "",
}

impl Channel {
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Runs `command` on the session under the lock, then sends what it
    /// queued and sorts what it settled.
    fn command<T>(&self, command: impl FnOnce(&mut Inner) -> Result<T>) -> Result<T> {
        let mut inner = self.shared.lock();
        let result = command(&mut inner);
        inner.flush();
        inner.dispatch();
        result
    }

    /// Waits for `request`'s reply within the channel's timeout, which the
    /// core keeps: it fails the request when the time is up and gives back
    /// what a later reply carries.
    fn reply(&self, operation: &'static str, request: RequestId) -> Result<Reply> {
        let timeout = self.timeout;
        self.shared
            .lock()
            .set_timeout(request, timeout, Instant::now());
        self.shared.wait(operation, None, |inner| {
            inner.poll_reply(request, || ()).map(|reply| {
                reply.map_err(|failure| Error::from_request_failure(failure, operation, timeout))
            })
        })
    }

    /// Starts a consumer read by pulling: [`Consumer::recv_timeout`] and
    /// friends, each [`Delivery`] acknowledged through itself. Dropping
    /// the [`Consumer`] cancels it and gives what it did not take back to
    /// the queue. The same call as `amqp_io_tokio::Channel::basic_consume`;
    /// for a kombu-style callback run by
    /// [`Connection::drain_events`](crate::Connection::drain_events), see
    /// [`basic_consume_with_callback`](Self::basic_consume_with_callback).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use std::time::Duration;
    /// use amqp_proto::spec::BasicConsume;
    ///
    /// let consumer = channel.basic_consume(BasicConsume { queue: "orders".into(), ..Default::default() })?;
    /// let delivery = consumer.recv_timeout(Duration::from_secs(5))?;
    /// delivery.ack()?;
    /// # Ok(()) }
    /// ```
    pub fn basic_consume(&self, consume: BasicConsume) -> Result<Consumer> {
        let spans = self.process_spans(&consume);
        let consumer = self.start_consumer(consume, None)?;
        Ok(Consumer::new(self.clone(), consumer, spans))
    }

    /// Starts a consumer whose deliveries are handed to `callback` by
    /// [`Connection::drain_events`](crate::Connection::drain_events), in
    /// order, in the style of kombu; returns its consumer tag (the core's
    /// `ctag-…` when `consume` leaves it empty), for
    /// [`basic_cancel`](Self::basic_cancel). Each [`Delivery`] is
    /// acknowledged through itself (unless `no_ack`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use std::time::Duration;
    /// use amqp_proto::spec::BasicConsume;
    ///
    /// channel.basic_consume_with_callback(BasicConsume { queue: "orders".into(), ..Default::default() }, |delivery| {
    ///     println!("order: {:?}", delivery.body());
    ///     let _ = delivery.ack();
    /// })?;
    /// // Then, in the program's loop: connection.drain_events(Duration::from_secs(1))
    /// # Ok(()) }
    /// ```
    pub fn basic_consume_with_callback(
        &self,
        consume: BasicConsume,
        mut callback: impl FnMut(Delivery) + Send + 'static,
    ) -> Result<ShortString> {
        // The callback lives in the connection's state, so it holds the
        // connection weakly: a strong handle there would keep the
        // connection alive forever.
        let shared = Arc::downgrade(&self.shared);
        let (handle, timeout) = (self.channel, self.timeout);
        let spans = self.process_spans(&consume);
        let wrapped = move |delivery: amqp_proto::Delivery| {
            if let Some(shared) = Weak::upgrade(&shared) {
                let channel = Self::new(shared, handle, timeout);
                // The span ends when the callback is done with it, at the
                // latest.
                let handover = spans.open(&delivery);
                callback(Delivery::handed_over(delivery, channel, handover));
            }
        };
        self.start_consumer(consume, Some(Box::new(wrapped)))
            .map(|consumer| consumer.tag().clone())
    }

    fn process_spans(&self, consume: &BasicConsume) -> ProcessSpans {
        ProcessSpans::new(&self.shared.telemetry, &consume.queue)
    }

    fn start_consumer(
        &self,
        consume: BasicConsume,
        callback: Option<crate::shared::DeliveryCallback>,
    ) -> Result<ConsumerHandle> {
        // An unnamed consumer gets a tag from the core: without a reply
        // (nowait), that tag is the consumer's.
        let (consumer, request) =
            self.command(|inner| inner.consume(self.channel, consume, callback))?;
        let Some(request) = request else {
            return Ok(consumer);
        };
        let tag = typed::consumed(self.reply("basic.consume", request)?)?;
        Ok(ConsumerHandle::new(self.channel, tag))
    }

    fn publish_traced(&self, outgoing: &Outgoing<'_>) -> Result<Confirmation> {
        let mut inner = self.shared.lock();
        if inner.publish_readiness(self.channel) != Readiness::Ready {
            drop(inner);
            self.wait_until_ready()?;
            inner = self.shared.lock();
        }
        inner.channel(self.channel)?;
        let sequence = outgoing.publish_on(inner.core.channel(self.channel)?)?;
        let live = sequence.map(|_| Live::count(&inner.live_confirmations));
        inner.flush();
        inner.dispatch();
        Ok(Confirmation {
            shared: Arc::clone(&self.shared),
            channel: self.channel,
            sequence,
            _live: live,
        })
    }

    fn wait_until_ready(&self) -> Result<()> {
        self.shared.wait("publish", Some(self.timeout), |inner| {
            match inner.publish_readiness(self.channel) {
                Readiness::Ready => Some(Ok(())),
                Readiness::Closed => Some(inner.channel(self.channel).and(Err(Error::Usage(
                    amqp_proto::UsageError::ChannelNotOpen(self.channel.id()),
                )))),
                _ => None,
            }
        })
    }

    /// Waits until every publish of this channel so far is confirmed, and
    /// reports whether the broker took them all: [`Error::Nacked`] with how
    /// many it refused since the last call, or the close that failed them.
    /// Handles returned messages on the way (see [`on_return`](Self::on_return)).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use std::time::Duration;
    /// use amqp_proto::codec::BasicProperties;
    /// use amqp_proto::spec::BasicPublish;
    ///
    /// channel.confirm_select()?;
    /// let publish = BasicPublish { routing_key: "orders".into(), ..Default::default() };
    /// for n in 0..1_000 {
    ///     channel.publish(&publish, &BasicProperties::default(), format!("order {n}"))?;
    /// }
    /// match channel.wait_for_confirms(Duration::from_secs(10)) {
    ///     Ok(()) => println!("the broker has all 1,000"),
    ///     Err(amqp_io_std::Error::Nacked(refused)) => println!("{refused} were refused"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn wait_for_confirms(&self, timeout: Duration) -> Result<()> {
        let channel = self.channel;
        let result = self
            .shared
            .wait("wait_for_confirms", Some(timeout), |inner| {
                inner.poll_confirms(channel)
            });
        run_return_handlers(&self.shared);
        result
    }

    /// Calls `handler` with each message the broker returns on this
    /// channel (an unroutable `mandatory` publish), from
    /// [`Connection::drain_events`](crate::Connection::drain_events) and
    /// from confirm waits. RabbitMQ returns a message before confirming
    /// it, so by the time its confirm wait ends the handler has seen it.
    /// Returns received before a handler is set are kept (the last 1,024)
    /// and handed to it.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// channel.on_return(|returned| {
    ///     eprintln!("unroutable: {} {} ({:?})", returned.reply_code, returned.reply_text, returned.routing_key);
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn on_return(&self, handler: impl FnMut(Returned) + Send + 'static) -> Result<()> {
        let mut inner = self.shared.lock();
        let state = inner.channel(self.channel)?;
        state.return_handler = Some(Box::new(handler));
        Ok(())
    }

    /// Closes the channel and waits for the server's `close-ok`. Calls
    /// waiting on it elsewhere fail with [`Error::ChannelClosed`].
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// channel.close()?;
    /// assert!(channel.close_reason().is_some());
    /// # Ok(()) }
    /// ```
    pub fn close(&self) -> Result<()> {
        self.start_close()?;
        let channel = self.channel;
        self.shared
            .wait("channel.close", Some(self.timeout), |inner| {
                inner.poll_channel_closed(channel)
            })
    }
}

/// Calls the return handlers (and the blocked handler) that have work,
/// outside the lock. Whatever was lent out goes back, even when there was
/// nothing to return: the blocked handler may have been taken alone.
pub(crate) fn run_return_handlers(shared: &Shared) {
    let mut work = shared.lock().take_callback_work(false);
    if work.returns.is_empty() && work.blocked.is_none() {
        return;
    }
    work.run();
    shared.lock().restore_callbacks(work);
}

/// The pending confirmation of one publish, from [`Channel::publish`].
///
/// Outside confirm mode there is nothing to wait for and
/// [`wait`](Self::wait) returns at once.
///
/// ```no_run
/// use std::time::Duration;
/// use amqp_proto::codec::BasicProperties;
/// use amqp_proto::spec::BasicPublish;
/// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
/// channel.confirm_select()?;
/// let publish = BasicPublish { routing_key: "jobs".into(), ..Default::default() };
/// let confirmation = channel.publish(&publish, &BasicProperties::default(), "job")?;
/// confirmation.wait(Duration::from_secs(5))?;
/// # Ok(()) }
/// ```
pub struct Confirmation {
    shared: Arc<Shared>,
    channel: ChannelHandle,
    sequence: Option<u64>,
    /// Counted among the live confirmations while it exists.
    _live: Option<Live>,
}

/// One count in the connection's live confirmations: while any lives, the
/// session keeps refused confirms for them to read.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn count(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(live))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmation")
            .field("channel", &self.channel.id())
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl Confirmation {
    /// The publish's sequence number on its channel, in confirm mode.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// # use amqp_proto::{codec::BasicProperties, spec::BasicPublish};
    /// # channel.confirm_select()?;
    /// # let publish = BasicPublish { routing_key: "jobs".into(), ..Default::default() };
    /// let confirmation = channel.publish(&publish, &BasicProperties::default(), "job")?;
    /// assert!(confirmation.sequence().is_some()); // in confirm mode
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// Waits for the broker's verdict: `Ok` for `basic.ack`,
    /// [`Error::Nacked`] for `basic.nack`, or the close that failed the
    /// publish (it may or may not have been routed; it is never re-sent).
    ///
    /// A `basic.nack` or failure is kept for this wait while any
    /// `Confirmation` of the connection lives, however late it is waited
    /// on; [`Channel::wait_for_confirms`] counts it too.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// # use amqp_proto::{codec::BasicProperties, spec::BasicPublish};
    /// # channel.confirm_select()?;
    /// # let publish = BasicPublish { routing_key: "jobs".into(), ..Default::default() };
    /// use std::time::Duration;
    ///
    /// let confirmation = channel.publish(&publish, &BasicProperties::default(), "job")?;
    /// match confirmation.wait(Duration::from_secs(5)) {
    ///     Ok(()) => println!("the broker has it"),
    ///     Err(amqp_io_std::Error::Nacked(_)) => println!("the broker refused it"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn wait(self, timeout: Duration) -> Result<()> {
        let Some(sequence) = self.sequence else {
            return Ok(());
        };
        let channel = self.channel;
        let result = self
            .shared
            .wait("publisher confirm", Some(timeout), |inner| {
                inner.poll_confirm(channel, sequence, || ())
            });
        run_return_handlers(&self.shared);
        result
    }
}
