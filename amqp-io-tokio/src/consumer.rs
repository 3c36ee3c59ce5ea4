//! Streams: a consumer's deliveries, and a channel's returned messages.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::collections::VecDeque;

use amqp_io_common::session::{ConsumerHandle, Polled};
use amqp_io_common::telemetry::ProcessSpans;
use amqp_io_common::Result;
use amqp_proto::Returned;
use futures_core::Stream;

use crate::channel::Channel;

/// A message delivered to a [`Consumer`], acknowledged through itself (the
/// same type as `amqp_io_std::Delivery`, over this adapter's [`Channel`]).
/// Dereferences to the core's [`amqp_proto::Delivery`] (body, properties,
/// tags, routing); [`into_inner`](amqp_io_common::delivery::Delivery::into_inner)
/// gives it up.
///
/// ```no_run
/// # async fn demo(mut consumer: amqp_io_tokio::Consumer) -> amqp_io_tokio::Result<()> {
/// if let Some(delivery) = consumer.recv().await {
///     let delivery = delivery?;
///     match std::str::from_utf8(delivery.body()) {
///         Ok(text) => { println!("{text}"); delivery.ack()? }
///         Err(_) => delivery.reject(false)?, // not for us: dead-letter it
///     }
/// }
/// # Ok(()) }
/// ```
pub type Delivery = amqp_io_common::delivery::Delivery<Channel>;

/// A consumer's deliveries, as a [`Stream`] (from
/// [`Channel::basic_consume`]).
///
/// It yields deliveries in order; when the consumer ends it yields the
/// reason once, as an error, and then ends: the application's own
/// [`Channel::basic_cancel`] ([`Error::ConsumerCancelledByApplication`]),
/// the server's cancel (its queue was deleted: [`Error::ConsumerCancelled`]),
/// or the channel's or connection's close. `amqp_io_std::Consumer` reports
/// the same ends with the same errors. A message refused for breaking a
/// per-message limit (headers nested too deeply, a body over the maximum;
/// the core rejected it) is yielded as [`Error::MessageRefused`], and the
/// stream goes on.
///
/// [`Error::ConsumerCancelledByApplication`]: amqp_io_common::Error::ConsumerCancelledByApplication
/// [`Error::ConsumerCancelled`]: amqp_io_common::Error::ConsumerCancelled
/// [`Error::MessageRefused`]: amqp_io_common::Error::MessageRefused
///
/// Deliveries wait in a bounded buffer
/// ([`Config::max_buffered_events`](amqp_proto::Config::max_buffered_events)
/// for the connection); when it is full the driver stops reading the
/// socket until the application catches up, so a slow consumer never grows
/// memory without limit (set a prefetch with [`Channel::basic_qos`] so the
/// broker holds the rest).
///
/// Dropping it, even with deliveries in hand unacknowledged, cancels the
/// consumer: deliveries it had not yielded go back to the queue, and
/// unacknowledged ones are redelivered when the channel closes.
///
/// ```no_run
/// use amqp_proto::spec::{BasicConsume, BasicQos};
/// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
/// channel.basic_qos(BasicQos { prefetch_count: 100, ..Default::default() }).await?;
/// let mut consumer = channel.basic_consume(BasicConsume { queue: "jobs".into(), ..Default::default() }).await?;
/// while let Some(delivery) = consumer.recv().await {
///     let delivery = delivery?; // a cancel or a close ends the loop with an error
///     delivery.ack()?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    channel: Channel,
    consumer: ConsumerHandle,
    no_ack: bool,
    spans: ProcessSpans,
    /// Deliveries taken from the shared queue in one go and not yielded
    /// yet: one lock per batch instead of one per delivery, which keeps
    /// the driver and this task from contending for it.
    taken: VecDeque<amqp_proto::Delivery>,
    /// The end was reported.
    finished: bool,
}

amqp_io_common::consumer_api! {
    type = Consumer,
    asyncness = [async],
    awaiting = [.await],
    demo = "# async fn demo(mut consumer: amqp_io_tokio::Consumer) -> amqp_io_tokio::Result<()> {",
    suffix = ".await",
}

impl Consumer {
    pub(crate) fn new(
        channel: Channel,
        consumer: ConsumerHandle,
        no_ack: bool,
        spans: ProcessSpans,
    ) -> Self {
        Self {
            channel,
            consumer,
            no_ack,
            spans,
            taken: VecDeque::new(),
            finished: false,
        }
    }

    /// The next delivery (what `StreamExt::next` gives, without needing
    /// the `futures` crate). Cancellation safe: a delivery is only taken
    /// when this returns it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn demo(mut consumer: amqp_io_tokio::Consumer) -> amqp_io_tokio::Result<()> {
    /// match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
    ///     Ok(Some(delivery)) => delivery?.ack()?,
    ///     Ok(None) => println!("the consumer's end was reported before"),
    ///     Err(_) => println!("nothing for 5 s"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Option<Result<Delivery>> {
        poll_fn(|context| Pin::new(&mut *self).poll_next(context)).await
    }

    /// The next delivery within `timeout`, as
    /// `amqp_io_std::Consumer::recv_timeout` answers: [`Error::Timeout`](crate::Error::Timeout)
    /// when none came, [`Error::MessageRefused`](crate::Error::MessageRefused)
    /// for a refused message (the consumer goes on), or the consumer's end
    /// (every call after it too). Cancellation safe, like [`recv`](Self::recv).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn demo(mut consumer: amqp_io_tokio::Consumer) -> amqp_io_tokio::Result<()> {
    /// let delivery = consumer.recv_timeout(Duration::from_secs(5)).await?;
    /// delivery.ack()?;
    /// # Ok(()) }
    /// ```
    pub async fn recv_timeout(&mut self, timeout: std::time::Duration) -> Result<Delivery> {
        let next = poll_fn(|context| self.poll_delivery(context));
        tokio::time::timeout(timeout, next)
            .await
            .unwrap_or(Err(amqp_io_common::Error::Timeout {
                operation: "consumer receive",
                timeout,
            }))
    }
}

impl Consumer {
    /// The next delivery, a refusal, or the consumer's end (again and
    /// again once it ended).
    fn poll_delivery(&mut self, context: &mut Context<'_>) -> Poll<Result<Delivery>> {
        if let Some(delivery) = self.taken.pop_front() {
            return Poll::Ready(Ok(self.wrap(delivery)));
        }
        let shared = std::sync::Arc::clone(self.channel.shared());
        let mut state = shared.lock();
        let starved = !state.wants_input();
        let polled = state.poll_consumer(&self.consumer, &mut self.taken, |waker| {
            *waker = Some(context.waker().clone());
        });
        match polled {
            Some(Polled::Deliveries) => {
                let resume = starved && state.wants_input();
                drop(state);
                // The driver stopped reading for want of room: there is now.
                if resume {
                    shared.wake_driver.notify_one();
                }
                match self.taken.pop_front() {
                    Some(delivery) => Poll::Ready(Ok(self.wrap(delivery))),
                    None => Poll::Pending,
                }
            }
            Some(Polled::Refused(error) | Polled::Ended(error)) => Poll::Ready(Err(error)),
            None => Poll::Pending,
        }
    }
}

/// Yields each delivery, a refused message as
/// [`Error::MessageRefused`](crate::Error::MessageRefused) (the stream goes
/// on), and the consumer's end as one last error.
impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished && self.taken.is_empty() {
            return Poll::Ready(None);
        }
        let polled = self.poll_delivery(context);
        if let Poll::Ready(Err(error)) = &polled {
            self.finished = !matches!(error, amqp_io_common::Error::MessageRefused(_));
        }
        polled.map(Some)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Taken but never yielded: back to the broker like the rest.
        let untaken = std::mem::take(&mut self.taken);
        let mut state = self.channel.shared().lock();
        state.abandon_consumer_holding(&self.consumer, self.no_ack, untaken);
        drop(state);
        self.channel.shared().wake_driver.notify_one();
    }
}

/// A channel's returned messages, as a [`Stream`] (from
/// [`Channel::returns`]); it ends when the channel closes.
///
/// ```no_run
/// # async fn demo(channel: amqp_io_tokio::Channel) {
/// let mut returns = channel.returns();
/// while let Some(returned) = returns.recv().await {
///     eprintln!("{} {}: {:?}", returned.reply_code, returned.reply_text, returned.routing_key);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Returns {
    channel: Channel,
}

impl Returns {
    pub(crate) fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// The next returned message, or `None` once the channel is closed.
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) {
    /// let mut returns = channel.returns();
    /// if let Some(returned) = returns.recv().await {
    ///     eprintln!("{:?} came back: {}", returned.routing_key, returned.reply_text);
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<Returned> {
        poll_fn(|context| Pin::new(&mut *self).poll_next(context)).await
    }
}

impl Stream for Returns {
    type Item = Returned;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Returned>> {
        let mut state = self.channel.shared().lock();
        let polled = state.poll_returned(self.channel.handle(), |channel| {
            channel.returns_waker = Some(context.waker().clone());
        });
        polled.map_or(Poll::Pending, Poll::Ready)
    }
}
