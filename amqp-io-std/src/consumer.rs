//! Consumers read by pulling, and the deliveries they hand out.

use std::time::Duration;

use amqp_io_common::session::ConsumerHandle;
use amqp_io_common::telemetry::ProcessSpans;

use crate::channel::Channel;
use crate::shared::Shared;
use amqp_io_common::Result;

/// A message delivered to a consumer, acknowledged through itself (the
/// same type as `amqp_io_tokio::Delivery`, over this adapter's
/// [`Channel`]). Dereferences to the core's [`amqp_proto::Delivery`]
/// (body, properties, tags, routing); [`into_inner`](amqp_io_common::delivery::Delivery::into_inner)
/// gives it up.
///
/// ```no_run
/// # fn demo(consumer: &amqp_io_std::Consumer) -> amqp_io_std::Result<()> {
/// let delivery = consumer.recv()?;
/// match std::str::from_utf8(delivery.body()) {
///     Ok(text) => { println!("{text}"); delivery.ack()? }
///     Err(_) => delivery.reject(false)?, // not for us: dead-letter it
/// }
/// # Ok(()) }
/// ```
pub type Delivery = amqp_io_common::delivery::Delivery<Channel>;

/// A consumer whose deliveries the application pulls, from
/// [`Channel::basic_consume`].
///
/// Each `recv` call also drives the connection (heartbeats, confirms,
/// replies for other threads). Deliveries wait in a bounded buffer
/// ([`Config::max_buffered_events`](amqp_proto::Config::max_buffered_events)
/// for the whole connection); when it is full the adapter stops reading
/// the socket, so set a prefetch with [`Channel::basic_qos`].
///
/// Dropping it cancels the consumer and gives the deliveries it did not
/// take back to the queue (unless it consumes with `no_ack`).
///
/// ```no_run
/// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
/// use std::time::Duration;
/// use amqp_proto::spec::{BasicConsume, BasicQos};
///
/// channel.basic_qos(BasicQos { prefetch_count: 100, ..Default::default() })?;
/// let consumer = channel.basic_consume(BasicConsume { queue: "jobs".into(), ..Default::default() })?;
/// while let Ok(delivery) = consumer.recv_timeout(Duration::from_secs(1)) {
///     println!("{:?}", delivery.body());
///     delivery.ack()?;
/// }
/// # Ok(()) }
/// ```
pub struct Consumer {
    channel: Channel,
    consumer: ConsumerHandle,
    spans: ProcessSpans,
}

amqp_io_common::consumer_api! {
    type = Consumer,
    asyncness = [],
    awaiting = [],
    demo = "# fn demo(consumer: amqp_io_std::Consumer) -> amqp_io_std::Result<()> {",
    suffix = "",
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("channel", &self.consumer.channel().id())
            .field("tag", self.consumer.tag())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(channel: Channel, consumer: ConsumerHandle, spans: ProcessSpans) -> Self {
        Self {
            channel,
            consumer,
            spans,
        }
    }

    fn shared(&self) -> &Shared {
        self.channel.shared()
    }

    /// The next delivery, waiting up to `timeout`. Once every delivery
    /// received before the consumer's end was taken, reports that end,
    /// as `amqp_io_tokio::Consumer` does:
    /// [`Error::ConsumerCancelledByApplication`](crate::Error::ConsumerCancelledByApplication) after the application's
    /// own [`Channel::basic_cancel`], [`Error::ConsumerCancelled`](crate::Error::ConsumerCancelled) when the
    /// server cancelled it (its queue was deleted), or the channel's or
    /// connection's close. A message refused for breaking a per-message
    /// limit (headers nested too deeply, a body over the maximum; the core
    /// rejected it) comes as [`Error::MessageRefused`](crate::Error::MessageRefused),
    /// and the consumer goes on.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// # use amqp_proto::spec::BasicConsume;
    /// # let consumer = channel.basic_consume(BasicConsume { queue: "jobs".into(), ..Default::default() })?;
    /// use std::time::Duration;
    ///
    /// match consumer.recv_timeout(Duration::from_secs(5)) {
    ///     Ok(delivery) => delivery.ack()?,
    ///     Err(amqp_io_std::Error::Timeout { .. }) => println!("nothing for 5 s"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Delivery> {
        self.recv_within(Some(timeout))
    }

    /// The next delivery, waiting as long as it takes, or until the
    /// consumer ends (see [`recv_timeout`](Self::recv_timeout)).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// # use amqp_proto::spec::BasicConsume;
    /// # let consumer = channel.basic_consume(BasicConsume { queue: "jobs".into(), ..Default::default() })?;
    /// // Blocks until a delivery comes or the consumer ends.
    /// let delivery = consumer.recv()?;
    /// println!("{:?}", delivery.body());
    /// # Ok(()) }
    /// ```
    pub fn recv(&self) -> Result<Delivery> {
        self.recv_within(None)
    }

    /// A delivery already received, if any; never waits for the socket.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// # use amqp_proto::spec::BasicConsume;
    /// # let consumer = channel.basic_consume(BasicConsume { queue: "jobs".into(), ..Default::default() })?;
    /// while let Some(delivery) = consumer.try_recv()? {
    ///     delivery.ack()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_recv(&self) -> Result<Option<Delivery>> {
        let next = self.shared().lock().next_delivery(&self.consumer);
        next.transpose()
            .map(|delivery| delivery.map(|delivery| self.wrap(delivery)))
    }

    fn recv_within(&self, timeout: Option<Duration>) -> Result<Delivery> {
        self.shared()
            .wait("consumer receive", timeout, |inner| {
                inner.next_delivery(&self.consumer)
            })
            .map(|delivery| self.wrap(delivery))
    }
}

/// Blocks for each delivery; ends when the consumer does. Messages the
/// core refused (see [`recv_timeout`](Consumer::recv_timeout)) are passed
/// over.
impl Iterator for &Consumer {
    type Item = Delivery;

    fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.recv() {
                Ok(delivery) => return Some(delivery),
                Err(amqp_io_common::Error::MessageRefused(_)) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared().lock().abandon_consumer(&self.consumer);
    }
}
