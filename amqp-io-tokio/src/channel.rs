//! Async calls on one channel, and publish confirmations.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use amqp_io_common::session::{typed, ConsumerHandle};
use amqp_io_common::telemetry::{Outgoing, ProcessSpans};
use amqp_io_common::{Error, Result};
use amqp_proto::spec::BasicConsume;
use amqp_proto::{ChannelHandle, Readiness, RequestId};

use crate::connection::Handle;
use crate::consumer::{Consumer, Returns};
use crate::state::{Reply, Shared, State};

amqp_io_common::channel_api! {
    /// One channel of a [`Connection`](crate::Connection); clones are handles
    /// on the same channel, usable from many tasks at once.
    ///
    /// Every call waits at most the channel's timeout
    /// ([`set_timeout`](Self::set_timeout); the connection's
    /// `operation_timeout` to start with) and fails with the channel's close
    /// (reply code and text) or the connection's end. Requests take the
    /// specification's method structs, so every argument the protocol has is
    /// reachable.
    ///
    /// # Cancellation
    ///
    /// Every future here may be dropped at any await point without harming
    /// the connection or the channel. A request whose frame was sent is still
    /// answered by the server and its reply discarded; where the reply carries
    /// something (a `basic.get` message, a consumer, a channel), it is given
    /// back: the message requeued, the consumer cancelled, the channel closed.
    /// A publish is either not sent at all (dropped while waiting for flow
    /// control) or sent whole; its confirmation is tracked by the core either
    /// way, and dropping the [`Confirmation`] loses nothing.
    pub struct Channel { handle: Arc<Handle> }
    asyncness = [async],
    awaiting = [.await],
    demo = "# async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {",
    suffix = ".await",
}

impl Channel {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    pub(crate) fn handle(&self) -> ChannelHandle {
        self.channel
    }

    /// Runs `command` on the state under the lock, then wakes the driver
    /// to send what it queued.
    fn command<T>(&self, command: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let (result, wake) = {
            let mut state = self.shared().lock();
            let idle = state.core.queued_output() == 0;
            let result = command(&mut state);
            (result, idle && state.core.queued_output() > 0)
        };
        if wake {
            self.shared().wake_driver.notify_one();
        }
        result
    }

    /// Waits for `request`'s reply within the channel's timeout, which the
    /// core keeps: it fails the request when the time is up and gives back
    /// what a later reply carries (as it does if this future is dropped).
    async fn reply(&self, operation: &'static str, request: RequestId) -> Result<Reply> {
        let timeout = self.timeout;
        let reply = self.shared().reply(self.channel, request, timeout);
        reply
            .await
            .map_err(|failure| Error::from_request_failure(failure, operation, timeout))
    }

    /// Waits within the channel's timeout until `ready` answers, checking
    /// again whenever the connection's state changed.
    async fn until<T>(
        &self,
        operation: &'static str,
        timeout: Duration,
        mut ready: impl FnMut(&mut State) -> Option<Result<T>>,
    ) -> Result<T> {
        let wait = async {
            loop {
                let changed = self.shared().changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(result) = ready(&mut self.shared().lock()) {
                    return result;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(Error::Timeout { operation, timeout }))
    }

    /// Starts a consumer (`basic.consume`): a stream of deliveries, each
    /// acknowledged through itself. An empty consumer tag is filled in by
    /// the core (RabbitMQ's consume-oks can overtake each other; the core
    /// matches them by tag).
    ///
    /// Cancellation: a consumer whose consume-ok arrives after the future
    /// was dropped is cancelled, and its deliveries requeued.
    ///
    /// ```no_run
    /// use amqp_proto::spec::BasicConsume;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// let mut consumer = channel.basic_consume(BasicConsume { queue: "orders".into(), ..Default::default() }).await?;
    /// while let Some(delivery) = consumer.recv().await {
    ///     let delivery = delivery?;
    ///     println!("{:?}", delivery.body());
    ///     delivery.ack()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn basic_consume(&self, consume: BasicConsume) -> Result<Consumer> {
        let no_ack = consume.no_ack;
        let spans = ProcessSpans::new(&self.shared().telemetry, &consume.queue);
        let (consumer, request) =
            self.command(|state| state.consume(self.channel, consume, None))?;
        let Some(request) = request else {
            return Ok(Consumer::new(self.clone(), consumer, no_ack, spans));
        };
        let tag = typed::consumed(self.reply("basic.consume", request).await?)?;
        let consumer = ConsumerHandle::new(self.channel, tag);
        Ok(Consumer::new(self.clone(), consumer, no_ack, spans))
    }

    async fn publish_traced(&self, outgoing: &Outgoing<'_>) -> Result<Confirmation> {
        // The common case, ready at once, needs no timer and no waiter.
        if let Ok(confirmation) = self.try_publish(outgoing)? {
            return Ok(confirmation);
        }
        let attempt = async {
            loop {
                let changed = self.shared().changed.notified();
                let window = self.shared().window.notified();
                tokio::pin!(changed, window);
                changed.as_mut().enable();
                window.as_mut().enable();
                match self.try_publish(outgoing)? {
                    Ok(confirmation) => return Ok(confirmation),
                    // Resumed only once the window drained to half.
                    Err(Readiness::ConfirmWindowFull) => window.await,
                    Err(_) => changed.await,
                }
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(Err(Error::Timeout {
                operation: "publish",
                timeout: self.timeout,
            }))
    }

    /// Publishes if flow control allows it now; otherwise says what holds
    /// it back.
    fn try_publish(
        &self,
        outgoing: &Outgoing<'_>,
    ) -> Result<std::result::Result<Confirmation, Readiness>> {
        let mut state = self.shared().lock();
        state.channel(self.channel)?;
        match state.publish_readiness(self.channel) {
            Readiness::Ready => {
                let idle = state.core.queued_output() == 0;
                let confirmation = self.publish_now(&mut state, outgoing);
                drop(state);
                // Output already queued means the driver was woken for it
                // and has not collected it yet.
                if idle {
                    self.shared().wake_driver.notify_one();
                }
                confirmation.map(Ok)
            }
            Readiness::Closed => Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(
                self.channel.id(),
            ))),
            // Queued output drains only if the driver runs.
            Readiness::OutputFull => {
                drop(state);
                self.shared().wake_driver.notify_one();
                Ok(Err(Readiness::OutputFull))
            }
            other => Ok(Err(other)),
        }
    }

    fn publish_now(&self, state: &mut State, outgoing: &Outgoing<'_>) -> Result<Confirmation> {
        let sequence = outgoing.publish_on(state.core.channel(self.channel)?)?;
        Ok(match sequence {
            Some(sequence) => Confirmation::track(self.shared(), self.channel, sequence),
            None => Confirmation::settled(),
        })
    }

    /// Waits until every publish of this channel so far is confirmed:
    /// `Ok` if the broker took them all, [`Error::Nacked`] with how many it
    /// refused since the last call, or the close that failed them.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use amqp_proto::codec::BasicProperties;
    /// use amqp_proto::spec::BasicPublish;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.confirm_select().await?;
    /// let publish = BasicPublish { routing_key: "orders".into(), ..Default::default() };
    /// for n in 0..1_000 {
    ///     channel.publish(&publish, &BasicProperties::default(), format!("order {n}")).await?;
    /// }
    /// channel.wait_for_confirms(Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_confirms(&self, timeout: Duration) -> Result<()> {
        let channel = self.channel;
        self.until("wait_for_confirms", timeout, |state| {
            state.poll_confirms(channel)
        })
        .await
    }

    /// The messages the broker returns on this channel (unroutable
    /// `mandatory` publishes), as a stream. RabbitMQ returns a message
    /// before confirming it. Up to 1,024 not yet taken are kept.
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) {
    /// let mut returns = channel.returns();
    /// tokio::spawn(async move {
    ///     while let Some(returned) = returns.recv().await {
    ///         eprintln!("unroutable: {} {}", returned.reply_code, returned.reply_text);
    ///     }
    /// });
    /// # }
    /// ```
    #[must_use]
    pub fn returns(&self) -> Returns {
        Returns::new(self.clone())
    }

    /// Closes the channel and waits for the server's `close-ok`.
    ///
    /// Cancellation: the close goes ahead.
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) -> Result<()> {
        self.start_close()?;
        let channel = self.channel;
        self.until("channel.close", self.timeout, |state| {
            state.poll_channel_closed(channel)
        })
        .await
    }
}

/// The broker's verdict on one publish, from [`Channel::publish`]: a
/// future resolving to `Ok` for `basic.ack`, [`Error::Nacked`] for
/// `basic.nack`, or the close that failed the publish (which is never
/// re-sent). Outside confirm mode it resolves at once.
///
/// Dropping it loses nothing: the confirm is still counted for
/// [`Channel::wait_for_confirms`].
///
/// ```no_run
/// use amqp_proto::codec::BasicProperties;
/// use amqp_proto::spec::BasicPublish;
/// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
/// let publish = BasicPublish { routing_key: "jobs".into(), ..Default::default() };
/// let confirmation = channel.publish(&publish, &BasicProperties::default(), "job").await?;
/// match confirmation.await {
///     Ok(()) => println!("the broker has it"),
///     Err(amqp_io_tokio::Error::Nacked(_)) => println!("refused"),
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
pub struct Confirmation {
    sequence: Option<u64>,
    /// Until it resolves: where its outcome will be. No allocation and no
    /// registration per publish; a waker is registered only when polled
    /// before the confirm arrived.
    pending: Option<PendingConfirm>,
}

/// What an unresolved [`Confirmation`] needs to find its outcome.
struct PendingConfirm {
    shared: Arc<Shared>,
    channel: ChannelHandle,
    sequence: u64,
}

impl Drop for PendingConfirm {
    fn drop(&mut self) {
        self.shared
            .live_confirmations
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmation")
            .field("sequence", &self.sequence)
            .field("resolved", &self.pending.is_none())
            .finish()
    }
}

impl Confirmation {
    /// Outside confirm mode: nothing to wait for.
    fn settled() -> Self {
        Self {
            sequence: None,
            pending: None,
        }
    }

    /// Follows `sequence` on the channel; called under the state lock, so
    /// the driver cannot dispatch its confirm before it is counted.
    fn track(shared: &Arc<Shared>, channel: ChannelHandle, sequence: u64) -> Self {
        shared.live_confirmations.fetch_add(1, Ordering::AcqRel);
        Self {
            sequence: Some(sequence),
            pending: Some(PendingConfirm {
                shared: Arc::clone(shared),
                channel,
                sequence,
            }),
        }
    }

    /// The publish's sequence number on its channel, in confirm mode.
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel, publish: amqp_proto::spec::BasicPublish) -> amqp_io_tokio::Result<()> {
    /// let confirmation = channel.publish(&publish, &Default::default(), "job").await?;
    /// println!("published as {:?}", confirmation.sequence());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }
}

impl PendingConfirm {
    /// The outcome if the confirm has arrived; otherwise registers `waker`.
    fn check(&self, waker: &std::task::Waker) -> Option<Result<()>> {
        self.shared
            .lock()
            .poll_confirm(self.channel, self.sequence, || waker.clone())
    }
}

impl Future for Confirmation {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(pending) = self.pending.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        match pending.check(context.waker()) {
            None => Poll::Pending,
            Some(outcome) => {
                self.pending = None;
                Poll::Ready(outcome)
            }
        }
    }
}
