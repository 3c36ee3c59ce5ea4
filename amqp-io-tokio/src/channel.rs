//! Async calls on one channel, and publish confirmations.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use amqp_io_common::delivery::Settle;
use amqp_io_common::session::typed;
use amqp_io_common::{Error, Result};
use amqp_proto::codec::{BasicProperties, ShortString};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{
    BasicCancel, BasicConsume, BasicGet, BasicPublish, BasicQos, BasicRecover, ConfirmSelect,
    ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeUnbind, Method, QueueBind, QueueDeclare,
    QueueDeclareOk, QueueDelete, QueuePurge, QueueUnbind, TxCommit, TxRollback, TxSelect,
};
use amqp_proto::{GetMessage, Readiness, RequestId};
use bytes::Bytes;

use crate::connection::Handle;
use crate::consumer::{Consumer, Returns};
use crate::state::{Reply, Shared, State};

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
#[derive(Clone)]
pub struct Channel {
    handle: Arc<Handle>,
    id: u16,
    generation: u64,
    timeout: Duration,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Channel {
    pub(crate) fn new(handle: Arc<Handle>, id: u16, generation: u64, timeout: Duration) -> Self {
        Self {
            handle,
            id,
            generation,
            timeout,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The channel id.
    ///
    /// ```no_run
    /// # fn demo(channel: amqp_io_tokio::Channel) {
    /// println!("on channel {}", channel.id());
    /// # }
    /// ```
    #[must_use]
    pub fn id(&self) -> u16 {
        self.id
    }

    /// How long this handle's calls may wait (replies, and flow control
    /// before a publish).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_tokio::Channel) {
    /// let mut patient = channel.clone();
    /// patient.set_timeout(std::time::Duration::from_secs(120));
    /// # }
    /// ```
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs `command` on the state under the lock, for this channel, then
    /// wakes the driver to send what it queued.
    fn command<T>(&self, command: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let (result, wake) = {
            let mut state = self.shared().lock();
            state.channel(self.id, self.generation)?;
            let idle = state.core.queued_output() == 0;
            let result = command(&mut state);
            (result, idle && state.core.queued_output() > 0)
        };
        if wake {
            self.shared().wake_driver.notify_one();
        }
        result
    }

    /// Sends `method`; returns the request its reply will answer, if one
    /// will come.
    fn send(&self, method: Method) -> Result<Option<RequestId>> {
        self.command(|state| state.request(self.id, self.generation, method))
    }

    /// Waits for `request`'s reply within the channel's timeout; a reply
    /// that comes after is given back to the broker by the session.
    async fn reply(&self, operation: &'static str, request: RequestId) -> Result<Reply> {
        let reply = self.shared().reply(self.id, request);
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(reply) => reply.map_err(Error::from),
            Err(_) => Err(Error::Timeout {
                operation,
                timeout: self.timeout,
            }),
        }
    }

    /// Sends any method a client may send on a channel and waits for its
    /// reply: `None` for methods without one (or with `nowait`). The typed
    /// methods below are shorthands for this.
    ///
    /// ```no_run
    /// use amqp_proto::spec::{ChannelFlow, Method};
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// if let Some(Method::ChannelFlowOk(ok)) = channel.call(ChannelFlow { active: false }).await? {
    ///     assert!(!ok.active);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn call(&self, method: impl Into<Method>) -> Result<Option<Method>> {
        let method = method.into();
        let operation = method.name();
        let reply = match self.send(method)? {
            Some(request) => Some(self.reply(operation, request).await?),
            None => None,
        };
        typed::method(operation, reply)
    }

    /// Declares an exchange (`exchange.declare`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::ExchangeDeclare;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.exchange_declare(ExchangeDeclare {
    ///     exchange: "events".into(),
    ///     exchange_type: "topic".into(),
    ///     durable: true,
    ///     ..Default::default()
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn exchange_declare(&self, declare: ExchangeDeclare) -> Result<()> {
        self.call(declare).await.map(drop)
    }

    /// Deletes an exchange (`exchange.delete`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::ExchangeDelete;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.exchange_delete(ExchangeDelete { exchange: "events".into(), ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn exchange_delete(&self, delete: ExchangeDelete) -> Result<()> {
        self.call(delete).await.map(drop)
    }

    /// Binds an exchange to another (RabbitMQ's `exchange.bind`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::ExchangeBind;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.exchange_bind(ExchangeBind {
    ///     destination: "audit".into(),
    ///     source: "events".into(),
    ///     routing_key: "#".into(),
    ///     ..Default::default()
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn exchange_bind(&self, bind: ExchangeBind) -> Result<()> {
        self.call(bind).await.map(drop)
    }

    /// Removes an exchange-to-exchange binding (`exchange.unbind`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::ExchangeUnbind;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.exchange_unbind(ExchangeUnbind {
    ///     destination: "audit".into(),
    ///     source: "events".into(),
    ///     routing_key: "#".into(),
    ///     ..Default::default()
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn exchange_unbind(&self, unbind: ExchangeUnbind) -> Result<()> {
        self.call(unbind).await.map(drop)
    }

    /// Declares a queue (`queue.declare`); an empty name asks the server
    /// for one. With `nowait` the reply is made up from the request.
    ///
    /// ```no_run
    /// use amqp_proto::spec::QueueDeclare;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// let declared = channel.queue_declare(QueueDeclare {
    ///     queue: "orders".into(),
    ///     durable: true,
    ///     ..Default::default()
    /// }).await?;
    /// println!("{} holds {} messages", declared.queue, declared.message_count);
    /// # Ok(()) }
    /// ```
    pub async fn queue_declare(&self, declare: QueueDeclare) -> Result<QueueDeclareOk> {
        let queue = declare.queue.clone();
        typed::queue_declared(queue, self.call(declare).await?)
    }

    /// Binds a queue to an exchange (`queue.bind`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::QueueBind;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.queue_bind(QueueBind {
    ///     queue: "orders".into(),
    ///     exchange: "events".into(),
    ///     routing_key: "orders.*".into(),
    ///     ..Default::default()
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn queue_bind(&self, bind: QueueBind) -> Result<()> {
        self.call(bind).await.map(drop)
    }

    /// Removes a binding (`queue.unbind`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::QueueUnbind;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.queue_unbind(QueueUnbind {
    ///     queue: "orders".into(),
    ///     exchange: "events".into(),
    ///     routing_key: "orders.*".into(),
    ///     ..Default::default()
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn queue_unbind(&self, unbind: QueueUnbind) -> Result<()> {
        self.call(unbind).await.map(drop)
    }

    /// Removes every ready message from a queue; returns how many
    /// (`queue.purge`; 0 with `nowait`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::QueuePurge;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// let removed = channel.queue_purge(QueuePurge { queue: "orders".into(), ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn queue_purge(&self, purge: QueuePurge) -> Result<u32> {
        typed::message_count("queue.purge", self.call(purge).await?)
    }

    /// Deletes a queue; returns how many messages it held (`queue.delete`;
    /// 0 with `nowait`).
    ///
    /// ```no_run
    /// use amqp_proto::spec::QueueDelete;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// let lost = channel.queue_delete(QueueDelete { queue: "orders".into(), ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn queue_delete(&self, delete: QueueDelete) -> Result<u32> {
        typed::message_count("queue.delete", self.call(delete).await?)
    }

    /// Limits unacknowledged deliveries (`basic.qos`): per consumer, or
    /// with `global` per channel, as RabbitMQ interprets it.
    ///
    /// ```no_run
    /// use amqp_proto::spec::BasicQos;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.basic_qos(BasicQos { prefetch_count: 100, ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn basic_qos(&self, qos: BasicQos) -> Result<()> {
        self.call(qos).await.map(drop)
    }

    /// Redelivers every unacknowledged message of this channel
    /// (`basic.recover`).
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.basic_recover(true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn basic_recover(&self, requeue: bool) -> Result<()> {
        self.call(BasicRecover { requeue }).await.map(drop)
    }

    /// Puts the channel in transaction mode (`tx.select`).
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.tx_select().await?;
    /// // publishes and acks ...
    /// channel.tx_commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn tx_select(&self) -> Result<()> {
        self.call(TxSelect {}).await.map(drop)
    }

    /// Commits the current transaction (`tx.commit`).
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.tx_commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn tx_commit(&self) -> Result<()> {
        self.call(TxCommit {}).await.map(drop)
    }

    /// Abandons the current transaction (`tx.rollback`).
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.tx_rollback().await?;
    /// # Ok(()) }
    /// ```
    pub async fn tx_rollback(&self) -> Result<()> {
        self.call(TxRollback {}).await.map(drop)
    }

    /// Puts the channel in publisher-confirm mode (`confirm.select`).
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// channel.confirm_select().await?;
    /// # Ok(()) }
    /// ```
    pub async fn confirm_select(&self) -> Result<()> {
        self.call(ConfirmSelect { nowait: false }).await.map(drop)
    }

    /// Fetches one message (`basic.get`); `None` when the queue is empty.
    ///
    /// Cancellation: a message that arrives after the future was dropped
    /// is requeued.
    ///
    /// ```no_run
    /// use amqp_proto::spec::BasicGet;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// if let Some(message) = channel.basic_get(BasicGet { queue: "orders".into(), ..Default::default() }).await? {
    ///     channel.ack(message.delivery_tag, false)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn basic_get(&self, get: BasicGet) -> Result<Option<GetMessage>> {
        let Some(request) = self.send(get.into())? else {
            return Err(typed::missing("basic.get"));
        };
        typed::got(self.reply("basic.get", request).await?)
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
        let (tag, request) =
            self.command(|state| state.consume(self.id, self.generation, consume, None))?;
        let Some(request) = request else {
            return Ok(Consumer::new(self.clone(), tag, no_ack));
        };
        let tag = typed::consumed(self.reply("basic.consume", request).await?)?;
        Ok(Consumer::new(self.clone(), tag, no_ack))
    }

    /// Cancels a consumer (`basic.cancel`), waiting for `cancel-ok`. Takes
    /// the tag as the API hands it out ([`Consumer::tag`]); a [`Consumer`]
    /// of it then yields
    /// [`Error::ConsumerCancelledByApplication`] once and ends (see also
    /// [`Consumer::cancel`]).
    ///
    /// ```no_run
    /// # async fn demo(channel: amqp_io_tokio::Channel, consumer: amqp_io_tokio::Consumer) -> amqp_io_tokio::Result<()> {
    /// channel.basic_cancel(consumer.tag()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn basic_cancel(&self, consumer_tag: &ShortString) -> Result<()> {
        let cancel = BasicCancel {
            consumer_tag: consumer_tag.clone(),
            nowait: false,
        };
        self.call(cancel).await.map(drop)
    }

    /// Publishes a message. Waits first (up to the channel's timeout)
    /// while the broker blocks the connection, `channel.flow` pauses the
    /// channel, the channel has its maximum of unconfirmed publishes, or
    /// too much output is queued; then queues it whole, its body not copied.
    /// Returns a [`Confirmation`] to await (in confirm mode).
    ///
    /// Cancellation: dropped while waiting, nothing is sent; once this
    /// returns the message is queued, and its confirm is tracked whether
    /// or not the [`Confirmation`] is kept.
    ///
    /// ```no_run
    /// use amqp_proto::codec::BasicProperties;
    /// use amqp_proto::spec::BasicPublish;
    /// # async fn demo(channel: amqp_io_tokio::Channel) -> amqp_io_tokio::Result<()> {
    /// let publish = BasicPublish { routing_key: "orders".into(), ..Default::default() };
    /// let properties = BasicProperties::default().content_type("application/json");
    /// channel.publish(&publish, &properties, r#"{"id": 7}"#).await?.await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<Confirmation> {
        let body = body.into();
        // The common case, ready at once, needs no timer and no waiter.
        if let Ok(confirmation) = self.try_publish(publish, properties, &body)? {
            return Ok(confirmation);
        }
        let attempt = async {
            loop {
                let changed = self.shared().changed.notified();
                let window = self.shared().window.notified();
                tokio::pin!(changed, window);
                changed.as_mut().enable();
                window.as_mut().enable();
                match self.try_publish(publish, properties, &body)? {
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
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> Result<std::result::Result<Confirmation, Readiness>> {
        let mut state = self.shared().lock();
        state.channel(self.id, self.generation)?;
        match state.publish_readiness(self.id) {
            Readiness::Ready => {
                let idle = state.core.queued_output() == 0;
                let confirmation = self.publish_now(&mut state, publish, properties, body.clone());
                drop(state);
                // Output already queued means the driver was woken for it
                // and has not collected it yet.
                if idle {
                    self.shared().wake_driver.notify_one();
                }
                confirmation.map(Ok)
            }
            Readiness::Closed => Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(
                self.id,
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

    fn publish_now(
        &self,
        state: &mut State,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: Bytes,
    ) -> Result<Confirmation> {
        let sequence = state
            .core
            .channel(self.id)?
            .publish(publish, properties, body)?;
        Ok(match sequence {
            Some(sequence) => {
                Confirmation::track(self.shared(), self.id, self.generation, sequence)
            }
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
        let wait = async {
            loop {
                let changed = self.shared().changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let done = self.shared().lock().poll_confirms(self.id, self.generation);
                if let Some(result) = done {
                    return result;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(Error::Timeout {
                operation: "wait_for_confirms",
                timeout,
            }))
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

    /// Acknowledges a delivery (with `multiple`, every one up to it).
    ///
    /// ```no_run
    /// # fn demo(channel: amqp_io_tokio::Channel, tag: u64) -> amqp_io_tokio::Result<()> {
    /// channel.ack(tag, false)?;
    /// # Ok(()) }
    /// ```
    pub fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()> {
        self.command(|state| Ok(state.core.channel(self.id)?.ack(delivery_tag, multiple)?))
    }

    /// Refuses deliveries (`basic.nack`), requeueing them or not.
    ///
    /// ```no_run
    /// # fn demo(channel: amqp_io_tokio::Channel, tag: u64) -> amqp_io_tokio::Result<()> {
    /// channel.nack(tag, false, true)?;
    /// # Ok(()) }
    /// ```
    pub fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        self.command(|state| {
            Ok(state
                .core
                .channel(self.id)?
                .nack(delivery_tag, multiple, requeue)?)
        })
    }

    /// Refuses one delivery (`basic.reject`), requeueing it or not.
    ///
    /// ```no_run
    /// # fn demo(channel: amqp_io_tokio::Channel, tag: u64) -> amqp_io_tokio::Result<()> {
    /// channel.reject(tag, false)?;
    /// # Ok(()) }
    /// ```
    pub fn reject(&self, delivery_tag: u64, requeue: bool) -> Result<()> {
        self.command(|state| Ok(state.core.channel(self.id)?.reject(delivery_tag, requeue)?))
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
        self.command(|state| {
            let handle = state.core.channel(self.id)?;
            Ok(handle.close(ReplyCode::REPLY_SUCCESS, "closed by the application")?)
        })?;
        let wait = async {
            loop {
                let changed = self.shared().changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                match self.shared().lock().channel(self.id, self.generation) {
                    Err(Error::ChannelClosed(_)) => return Ok(()),
                    Err(error) => return Err(error),
                    Ok(_) => {}
                }
                changed.await;
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .unwrap_or(Err(Error::Timeout {
                operation: "channel.close",
                timeout: self.timeout,
            }))
    }

    /// Why the channel closed, once it has.
    ///
    /// ```no_run
    /// # fn demo(channel: amqp_io_tokio::Channel) {
    /// if let Some(reason) = channel.close_reason() {
    ///     eprintln!("channel closed: {reason}");
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn close_reason(&self) -> Option<amqp_proto::CloseReason> {
        match self.shared().lock().channel(self.id, self.generation) {
            Err(Error::ChannelClosed(reason)) => Some(reason),
            _ => None,
        }
    }
}

/// What lets a [`Delivery`](crate::Delivery) acknowledge itself: this
/// channel's [`ack`](Channel::ack), [`nack`](Channel::nack) and
/// [`reject`](Channel::reject), as one call.
impl Settle for Channel {
    fn settle(&self, delivery_tag: u64, how: amqp_proto::Settlement) -> Result<()> {
        self.command(|state| Ok(state.core.channel(self.id)?.settle(delivery_tag, how)?))
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
    channel: u16,
    generation: u64,
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
    fn track(shared: &Arc<Shared>, channel: u16, generation: u64, sequence: u64) -> Self {
        shared.live_confirmations.fetch_add(1, Ordering::AcqRel);
        Self {
            sequence: Some(sequence),
            pending: Some(PendingConfirm {
                shared: Arc::clone(shared),
                channel,
                generation,
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
            .poll_confirm(self.channel, self.generation, self.sequence, || {
                waker.clone()
            })
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
