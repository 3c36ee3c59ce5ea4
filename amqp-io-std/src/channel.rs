//! Blocking calls on one channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use amqp_proto::codec::{BasicProperties, ShortString};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{
    BasicCancel, BasicConsume, BasicGet, BasicPublish, BasicQos, BasicRecover, ConfirmSelect,
    ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeUnbind, Method, QueueBind, QueueDeclare,
    QueueDeclareOk, QueueDelete, QueuePurge, QueueUnbind, TxCommit, TxRollback, TxSelect,
};
use amqp_proto::{GetMessage, Readiness, RequestId, Returned, Settlement};
use bytes::Bytes;

use crate::consumer::{Consumer, Delivery};
use crate::shared::{Reply, Shared};
use amqp_io_common::delivery::Settle;
use amqp_io_common::session::typed;
use amqp_io_common::{Error, Result};

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
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
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
    pub(crate) fn new(shared: Arc<Shared>, id: u16, generation: u64, timeout: Duration) -> Self {
        Self {
            shared,
            id,
            generation,
            timeout,
        }
    }

    /// The channel id.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// println!("working on channel {}", channel.id());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn id(&self) -> u16 {
        self.id
    }

    /// How long this handle's calls wait for their replies (and publishes
    /// for flow control to allow them).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// let mut patient = channel.clone();
    /// patient.set_timeout(std::time::Duration::from_secs(120));
    /// # Ok(()) }
    /// ```
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends any method a client may send on a channel and waits for its
    /// reply: `None` for methods without one (or with `nowait` set). The
    /// typed methods below are shorthands for this.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::{ChannelFlow, Method};
    ///
    /// // Any client method, for example asking the server to pause deliveries.
    /// if let Some(Method::ChannelFlowOk(ok)) = channel.call(ChannelFlow { active: false })? {
    ///     assert!(!ok.active);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn call(&self, method: impl Into<Method>) -> Result<Option<Method>> {
        let method = method.into();
        let operation = method.name();
        let reply = match self.send(method)? {
            Some(request) => Some(self.await_reply(operation, request)?),
            None => None,
        };
        typed::method(operation, reply)
    }

    /// Sends `method`; returns the request its reply will answer, if one
    /// will come.
    fn send(&self, method: Method) -> Result<Option<RequestId>> {
        let mut inner = self.shared.lock();
        let request = inner.request(self.id, self.generation, method)?;
        inner.flush();
        inner.dispatch();
        Ok(request)
    }

    fn await_reply(&self, operation: &'static str, request: RequestId) -> Result<Reply> {
        let result = self.shared.wait(operation, Some(self.timeout), |inner| {
            inner
                .poll_reply(request, || ())
                .map(|reply| reply.map_err(Error::from))
        });
        if result.is_err() {
            let mut inner = self.shared.lock();
            if let Some(reply) = inner.poll_reply(request, || ()) {
                return reply.map_err(Error::from);
            }
            // A reply that comes after all is given back to the broker
            // (its message requeued, its consumer cancelled).
            inner.abandon_reply(self.id, request);
            inner.flush();
        }
        result
    }

    /// Declares an exchange (`exchange.declare`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::ExchangeDeclare;
    ///
    /// channel.exchange_declare(ExchangeDeclare {
    ///     exchange: "logs".into(),
    ///     exchange_type: "fanout".into(),
    ///     durable: true,
    ///     ..Default::default()
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn exchange_declare(&self, declare: ExchangeDeclare) -> Result<()> {
        self.call(declare).map(drop)
    }

    /// Deletes an exchange (`exchange.delete`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::ExchangeDelete;
    ///
    /// channel.exchange_delete(ExchangeDelete { exchange: "logs".into(), if_unused: true, ..Default::default() })?;
    /// # Ok(()) }
    /// ```
    pub fn exchange_delete(&self, delete: ExchangeDelete) -> Result<()> {
        self.call(delete).map(drop)
    }

    /// Binds an exchange to another (RabbitMQ's `exchange.bind`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::ExchangeBind;
    ///
    /// // Everything published to "events" also reaches "audit".
    /// channel.exchange_bind(ExchangeBind {
    ///     destination: "audit".into(),
    ///     source: "events".into(),
    ///     routing_key: "#".into(),
    ///     ..Default::default()
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn exchange_bind(&self, bind: ExchangeBind) -> Result<()> {
        self.call(bind).map(drop)
    }

    /// Removes an exchange-to-exchange binding (`exchange.unbind`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::ExchangeUnbind;
    ///
    /// channel.exchange_unbind(ExchangeUnbind {
    ///     destination: "audit".into(),
    ///     source: "events".into(),
    ///     routing_key: "#".into(),
    ///     ..Default::default()
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn exchange_unbind(&self, unbind: ExchangeUnbind) -> Result<()> {
        self.call(unbind).map(drop)
    }

    /// Declares a queue (`queue.declare`); an empty name asks the server to
    /// make one up, returned in the reply. With `nowait`, the reply is
    /// made up locally from the request (counts zero).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::codec::{FieldTable, FieldValue};
    /// use amqp_proto::spec::QueueDeclare;
    ///
    /// let mut arguments = FieldTable::new();
    /// arguments.insert("x-queue-type", FieldValue::LongString("quorum".into()));
    /// let declared = channel.queue_declare(QueueDeclare {
    ///     queue: "orders".into(),
    ///     durable: true,
    ///     arguments,
    ///     ..Default::default()
    /// })?;
    /// println!("{} holds {} messages", declared.queue, declared.message_count);
    /// # Ok(()) }
    /// ```
    pub fn queue_declare(&self, declare: QueueDeclare) -> Result<QueueDeclareOk> {
        let queue = declare.queue.clone();
        typed::queue_declared(queue, self.call(declare)?)
    }

    /// Binds a queue to an exchange (`queue.bind`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::QueueBind;
    ///
    /// channel.queue_bind(QueueBind {
    ///     queue: "orders".into(),
    ///     exchange: "events".into(),
    ///     routing_key: "orders.*".into(),
    ///     ..Default::default()
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn queue_bind(&self, bind: QueueBind) -> Result<()> {
        self.call(bind).map(drop)
    }

    /// Removes a binding (`queue.unbind`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::QueueUnbind;
    ///
    /// channel.queue_unbind(QueueUnbind {
    ///     queue: "orders".into(),
    ///     exchange: "events".into(),
    ///     routing_key: "orders.*".into(),
    ///     ..Default::default()
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn queue_unbind(&self, unbind: QueueUnbind) -> Result<()> {
        self.call(unbind).map(drop)
    }

    /// Removes every ready message from a queue; returns how many
    /// (`queue.purge`; 0 with `nowait`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::QueuePurge;
    ///
    /// let removed = channel.queue_purge(QueuePurge { queue: "orders".into(), ..Default::default() })?;
    /// println!("purged {removed} messages");
    /// # Ok(()) }
    /// ```
    pub fn queue_purge(&self, purge: QueuePurge) -> Result<u32> {
        typed::message_count("queue.purge", self.call(purge)?)
    }

    /// Deletes a queue; returns how many messages it held (`queue.delete`;
    /// 0 with `nowait`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::QueueDelete;
    ///
    /// let lost = channel.queue_delete(QueueDelete { queue: "orders".into(), if_empty: true, ..Default::default() })?;
    /// assert_eq!(lost, 0);
    /// # Ok(()) }
    /// ```
    pub fn queue_delete(&self, delete: QueueDelete) -> Result<u32> {
        typed::message_count("queue.delete", self.call(delete)?)
    }

    /// Limits unacknowledged deliveries (`basic.qos`): per consumer, or with
    /// `global` per channel, as RabbitMQ interprets it.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::BasicQos;
    ///
    /// // At most 100 unacknowledged deliveries per consumer on this channel.
    /// channel.basic_qos(BasicQos { prefetch_count: 100, ..Default::default() })?;
    /// # Ok(()) }
    /// ```
    pub fn basic_qos(&self, qos: BasicQos) -> Result<()> {
        self.call(qos).map(drop)
    }

    /// Redelivers every unacknowledged message of this channel
    /// (`basic.recover`; RabbitMQ always requeues).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// channel.basic_recover(true)?;
    /// # Ok(()) }
    /// ```
    pub fn basic_recover(&self, requeue: bool) -> Result<()> {
        self.call(BasicRecover { requeue }).map(drop)
    }

    /// Puts the channel in transaction mode (`tx.select`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::codec::BasicProperties;
    /// use amqp_proto::spec::BasicPublish;
    ///
    /// channel.tx_select()?;
    /// let publish = BasicPublish { routing_key: "orders".into(), ..Default::default() };
    /// channel.publish(&publish, &BasicProperties::default(), "one")?;
    /// channel.publish(&publish, &BasicProperties::default(), "two")?;
    /// channel.tx_commit()?; // both, or neither
    /// # Ok(()) }
    /// ```
    pub fn tx_select(&self) -> Result<()> {
        self.call(TxSelect {}).map(drop)
    }

    /// Commits the current transaction (`tx.commit`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// channel.tx_select()?;
    /// // ... publishes and acks ...
    /// channel.tx_commit()?;
    /// # Ok(()) }
    /// ```
    pub fn tx_commit(&self) -> Result<()> {
        self.call(TxCommit {}).map(drop)
    }

    /// Abandons the current transaction (`tx.rollback`).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// channel.tx_select()?;
    /// // ... publishes and acks that must not happen after all ...
    /// channel.tx_rollback()?;
    /// # Ok(()) }
    /// ```
    pub fn tx_rollback(&self) -> Result<()> {
        self.call(TxRollback {}).map(drop)
    }

    /// Puts the channel in publisher-confirm mode (`confirm.select`): from
    /// now on every [`publish`](Self::publish) can be waited on.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use std::time::Duration;
    /// use amqp_proto::codec::BasicProperties;
    /// use amqp_proto::spec::BasicPublish;
    ///
    /// channel.confirm_select()?;
    /// let publish = BasicPublish { routing_key: "orders".into(), ..Default::default() };
    /// channel
    ///     .publish(&publish, &BasicProperties::default(), "order 1")?
    ///     .wait(Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    pub fn confirm_select(&self) -> Result<()> {
        self.call(ConfirmSelect { nowait: false }).map(drop)
    }

    /// Fetches one message (`basic.get`); `None` when the queue is empty.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::BasicGet;
    ///
    /// match channel.basic_get(BasicGet { queue: "orders".into(), ..Default::default() })? {
    ///     Some(message) => {
    ///         println!("{:?}, {} more waiting", message.content.body, message.message_count);
    ///         channel.ack(message.delivery_tag, false)?;
    ///     }
    ///     None => println!("the queue is empty"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn basic_get(&self, get: BasicGet) -> Result<Option<GetMessage>> {
        let Some(request) = self.send(get.into())? else {
            return Err(typed::missing("basic.get"));
        };
        typed::got(self.await_reply("basic.get", request)?)
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
        let (tag, generation) = self.start_consumer(consume, None)?;
        Ok(Consumer::new(
            Arc::clone(&self.shared),
            self.clone(),
            tag,
            generation,
        ))
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
        let (id, generation, timeout) = (self.id, self.generation, self.timeout);
        let wrapped = move |delivery: amqp_proto::Delivery| {
            if let Some(shared) = Weak::upgrade(&shared) {
                let channel = Self::new(shared, id, generation, timeout);
                callback(Delivery::new(delivery, channel));
            }
        };
        self.start_consumer(consume, Some(Box::new(wrapped)))
            .map(|(tag, _)| tag)
    }

    fn start_consumer(
        &self,
        consume: BasicConsume,
        callback: Option<crate::shared::DeliveryCallback>,
    ) -> Result<(ShortString, u64)> {
        let generation = self.generation;
        // An unnamed consumer gets a tag from the core: without a reply
        // (nowait), that tag is the consumer's.
        let (tag, request) = {
            let mut inner = self.shared.lock();
            let started = inner.consume(self.id, generation, consume, callback)?;
            inner.flush();
            inner.dispatch();
            started
        };
        let Some(request) = request else {
            return Ok((tag, generation));
        };
        let tag = typed::consumed(self.await_reply("basic.consume", request)?)?;
        Ok((tag, generation))
    }

    /// Cancels a consumer (`basic.cancel`), waiting for `cancel-ok`: no
    /// delivery for it arrives after this returns. Takes the tag as the
    /// API hands it out ([`Consumer::tag`], or what
    /// [`basic_consume_with_callback`](Self::basic_consume_with_callback)
    /// returns); a [`Consumer`] of it then ends with
    /// [`Error::ConsumerCancelledByApplication`].
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::BasicConsume;
    ///
    /// let tag = channel.basic_consume_with_callback(BasicConsume { queue: "orders".into(), ..Default::default() }, |_| {})?;
    /// channel.basic_cancel(&tag)?;
    /// # Ok(()) }
    /// ```
    pub fn basic_cancel(&self, consumer_tag: &ShortString) -> Result<()> {
        self.call(BasicCancel {
            consumer_tag: consumer_tag.clone(),
            nowait: false,
        })
        .map(drop)
    }

    /// Publishes a message. Waits first (up to the channel's timeout) while
    /// the broker blocks the connection, pauses the channel with
    /// `channel.flow`, or the channel has
    /// [`Config::max_unconfirmed`](amqp_proto::Config::max_unconfirmed)
    /// publishes unconfirmed, so memory stays bounded. The body is sent
    /// without being copied.
    ///
    /// In confirm mode the returned [`Confirmation`] can be waited on; see
    /// also [`wait_for_confirms`](Self::wait_for_confirms).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::codec::BasicProperties;
    /// use amqp_proto::spec::BasicPublish;
    ///
    /// let publish = BasicPublish {
    ///     exchange: "events".into(),
    ///     routing_key: "orders.created".into(),
    ///     ..Default::default()
    /// };
    /// let properties = BasicProperties::default()
    ///     .content_type("application/json")
    ///     .delivery_mode(2);
    /// channel.publish(&publish, &properties, r#"{"id": 42}"#)?;
    /// # Ok(()) }
    /// ```
    pub fn publish(
        &self,
        publish: &BasicPublish,
        properties: &BasicProperties,
        body: impl Into<Bytes>,
    ) -> Result<Confirmation> {
        let mut inner = self.shared.lock();
        if inner.publish_readiness(self.id) != Readiness::Ready {
            drop(inner);
            self.wait_until_ready()?;
            inner = self.shared.lock();
        }
        inner.channel(self.id, self.generation)?;
        let sequence = inner
            .core
            .channel(self.id)?
            .publish(publish, properties, body)?;
        let live = sequence.map(|_| Live::count(&inner.live_confirmations));
        inner.flush();
        inner.dispatch();
        Ok(Confirmation {
            shared: Arc::clone(&self.shared),
            channel: self.id,
            generation: self.generation,
            sequence,
            _live: live,
        })
    }

    fn wait_until_ready(&self) -> Result<()> {
        self.shared.wait("publish", Some(self.timeout), |inner| {
            match inner.publish_readiness(self.id) {
                Readiness::Ready => Some(Ok(())),
                Readiness::Closed => Some(inner.channel(self.id, self.generation).and(Err(
                    Error::Usage(amqp_proto::UsageError::ChannelNotOpen(self.id)),
                ))),
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
        let (id, generation) = (self.id, self.generation);
        let result = self
            .shared
            .wait("wait_for_confirms", Some(timeout), |inner| {
                inner.poll_confirms(id, generation)
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
        let state = inner.channel(self.id, self.generation)?;
        state.extra.return_handler = Some(Box::new(handler));
        Ok(())
    }

    /// Acknowledges a delivery (with `multiple`, every one up to it).
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::BasicGet;
    ///
    /// if let Some(message) = channel.basic_get(BasicGet { queue: "orders".into(), ..Default::default() })? {
    ///     channel.ack(message.delivery_tag, false)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ack(&self, delivery_tag: u64, multiple: bool) -> Result<()> {
        self.with_channel(|channel| channel.ack(delivery_tag, multiple))
    }

    /// Refuses deliveries (`basic.nack`), requeueing them or not.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::BasicGet;
    ///
    /// if let Some(message) = channel.basic_get(BasicGet { queue: "orders".into(), ..Default::default() })? {
    ///     // Not now: back to the queue.
    ///     channel.nack(message.delivery_tag, false, true)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn nack(&self, delivery_tag: u64, multiple: bool, requeue: bool) -> Result<()> {
        self.with_channel(|channel| channel.nack(delivery_tag, multiple, requeue))
    }

    /// Refuses one delivery (`basic.reject`), requeueing it or not.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// use amqp_proto::spec::BasicGet;
    ///
    /// if let Some(message) = channel.basic_get(BasicGet { queue: "orders".into(), ..Default::default() })? {
    ///     // Malformed: drop it (or dead-letter it, if the queue says so).
    ///     channel.reject(message.delivery_tag, false)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn reject(&self, delivery_tag: u64, requeue: bool) -> Result<()> {
        self.with_channel(|channel| channel.reject(delivery_tag, requeue))
    }

    fn with_channel(
        &self,
        send: impl FnOnce(&mut amqp_proto::ChannelRef<'_>) -> Result<(), amqp_proto::UsageError>,
    ) -> Result<()> {
        let mut inner = self.shared.lock();
        inner.channel(self.id, self.generation)?;
        send(&mut inner.core.channel(self.id)?)?;
        inner.flush();
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
        {
            let mut inner = self.shared.lock();
            inner.channel(self.id, self.generation)?;
            inner
                .core
                .channel(self.id)?
                .close(ReplyCode::REPLY_SUCCESS, "closed by the application")?;
            inner.flush();
        }
        let (id, generation) = (self.id, self.generation);
        self.shared
            .wait("channel.close", Some(self.timeout), |inner| {
                match inner.channel(id, generation) {
                    Err(Error::ChannelClosed(_)) => Some(Ok(())),
                    Err(error) => Some(Err(error)),
                    Ok(_) => None,
                }
            })
    }

    /// Why the channel closed, once it has.
    ///
    /// ```no_run
    /// # fn demo(channel: &amqp_io_std::Channel) -> amqp_io_std::Result<()> {
    /// if let Some(reason) = channel.close_reason() {
    ///     eprintln!("channel {} closed: {reason}", channel.id());
    /// }
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn close_reason(&self) -> Option<amqp_proto::CloseReason> {
        match self.shared.lock().channel(self.id, self.generation) {
            Err(Error::ChannelClosed(reason)) => Some(reason),
            _ => None,
        }
    }
}

/// What lets a [`Delivery`] acknowledge itself: this channel's
/// [`ack`](Channel::ack), [`nack`](Channel::nack) and
/// [`reject`](Channel::reject), as one call.
impl Settle for Channel {
    fn settle(&self, delivery_tag: u64, how: Settlement) -> Result<()> {
        self.with_channel(|channel| channel.settle(delivery_tag, how))
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
    channel: u16,
    generation: u64,
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
            .field("channel", &self.channel)
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
    /// A `basic.nack` is remembered for this wait until the channel's next
    /// [`Channel::wait_for_confirms`] (which counts it too); wait before
    /// that to see it here.
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
        let (id, generation) = (self.channel, self.generation);
        let result = self
            .shared
            .wait("publisher confirm", Some(timeout), |inner| {
                inner.poll_confirm(id, generation, sequence, || ())
            });
        run_return_handlers(&self.shared);
        result
    }
}
