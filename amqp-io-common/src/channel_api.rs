//! The channel calls both adapters offer, written once: every request that
//! is "send one method, map its reply" and every settlement, with their
//! documentation and examples, and `publish` around the adapter's own
//! `publish_traced`. An adapter's `Channel` adds only how it waits
//! (blocking or `async`), how it publishes and its consumers.
//!
//! Not public API (hidden from the docs, no semver promise): a macro is the
//! one way Rust lets two crates share methods that differ only in being
//! `async`.

/// Writes an adapter's `Channel`: the struct (its attributes and the field
/// that reaches the connection are the adapter's; the macro adds
/// `channel: amqp_proto::ChannelHandle` and `timeout: std::time::Duration`)
/// and its shared methods. The adapter writes these methods:
///
/// - `fn command<T>(&self, f: impl FnOnce(&mut S) -> Result<T>) -> Result<T>`
///   runs `f` on the session (`S` dereferences to
///   [`Session`](crate::session::Session)) under the connection's lock,
///   then sends what it queued;
/// - `fn reply(&self, operation: &'static str, request: RequestId) -> Result<Reply>`,
///   `async` in an async adapter, waits within the timeout for a reply and
///   gives back one that comes too late;
/// - `fn publish_traced(&self, outgoing: &Outgoing<'_>) -> Result<Confirmation>`,
///   `async` in an async adapter, publishes once flow control allows
///   (with [`Outgoing::publish_on`](crate::telemetry::Outgoing::publish_on)).
///
/// `asyncness` is `[async]` or `[]`, `awaiting` `[.await]` or `[]`; the
/// examples use `demo` as their hidden first line and `suffix` after each
/// call (`".await"` or `""`).
#[doc(hidden)]
#[macro_export]
// `crate::Confirmation` is the adapter's own type, at the call site, on
// purpose.
#[allow(clippy::crate_in_macro_def)]
macro_rules! channel_api {
    (
        $(#[$attribute:meta])*
        pub struct $channel:ident { $owner:ident: $owner_type:ty }
        asyncness = [$($asyncness:tt)*],
        awaiting = [$($awaiting:tt)*],
        demo = $demo:literal,
        suffix = $suffix:literal $(,)?
    ) => {
        $(#[$attribute])*
        #[derive(Clone)]
        pub struct $channel {
            $owner: $owner_type,
            channel: ::amqp_proto::ChannelHandle,
            timeout: ::std::time::Duration,
        }

        impl ::std::fmt::Debug for $channel {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("Channel")
                    .field("id", &self.channel.id())
                    .field("timeout", &self.timeout)
                    .finish_non_exhaustive()
            }
        }

        /// What lets a [`Delivery`](crate::Delivery) acknowledge itself:
        /// this channel's [`ack`](Self::ack), [`nack`](Self::nack) and
        /// [`reject`](Self::reject), as one call.
        impl $crate::delivery::Settle for $channel {
            fn settle(
                &self,
                delivery_tag: u64,
                how: ::amqp_proto::Settlement,
            ) -> $crate::Result<()> {
                self.command(|state| {
                    state.channel(self.channel)?;
                    Ok(state.core.channel(self.channel)?.settle(delivery_tag, how)?)
                })
            }
        }

        impl $channel {
            pub(crate) fn new(
                $owner: $owner_type,
                channel: ::amqp_proto::ChannelHandle,
                timeout: ::std::time::Duration,
            ) -> Self {
                Self {
                    $owner,
                    channel,
                    timeout,
                }
            }

            #[doc = "The channel id."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "println!(\"working on channel {}\", channel.id());"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn id(&self) -> u16 {
                self.channel.id()
            }

            #[doc = "How long this handle's calls wait for their replies (and publishes"]
            #[doc = "for flow control to allow them)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "let mut patient = channel.clone();"]
            #[doc = "patient.set_timeout(std::time::Duration::from_secs(120));"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub fn set_timeout(&mut self, timeout: ::std::time::Duration) {
                self.timeout = timeout;
            }

            #[doc = "Publishes a message. Waits first (up to the channel's timeout) while"]
            #[doc = "the broker blocks the connection, `channel.flow` pauses the channel,"]
            #[doc = "the channel has its maximum of unconfirmed publishes"]
            #[doc = "([`Config::max_unconfirmed`](amqp_proto::Config::max_unconfirmed)), or"]
            #[doc = "too much output waits for the socket; then queues it whole, its body"]
            #[doc = "not copied, so memory stays bounded. In confirm mode the returned"]
            #[doc = "[`Confirmation`](crate::Confirmation) says how the broker took it;"]
            #[doc = "see also [`wait_for_confirms`](Self::wait_for_confirms)."]
            #[doc = ""]
            #[doc = "With the `tracing` feature the publish has a `publish` span, and a"]
            #[doc = "[`TraceContext`]($crate::telemetry::TraceContext) hook in the options"]
            #[doc = "writes the trace context into the headers (copying the properties"]
            #[doc = "only then)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::codec::BasicProperties;"]
            #[doc = "use amqp_proto::spec::BasicPublish;"]
            #[doc = ""]
            #[doc = "let publish = BasicPublish {"]
            #[doc = "    exchange: \"events\".into(),"]
            #[doc = "    routing_key: \"orders.created\".into(),"]
            #[doc = "    ..Default::default()"]
            #[doc = "};"]
            #[doc = "let properties = BasicProperties::default()"]
            #[doc = "    .content_type(\"text/plain\")"]
            #[doc = "    .delivery_mode(2);"]
            #[doc = concat!("channel.publish(&publish, &properties, \"order 42\")", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            // Into the caller, so the one check of the bare path costs no
            // call of its own (the traced path is out of line).
            #[inline(always)]
            pub $($asyncness)* fn publish(
                &self,
                publish: &::amqp_proto::spec::BasicPublish,
                properties: &::amqp_proto::codec::BasicProperties,
                body: impl Into<::bytes::Bytes>,
            ) -> $crate::Result<crate::Confirmation> {
                let outgoing = $crate::telemetry::Outgoing::new(publish, properties, body.into());
                // Nothing to trace or measure: the bare publish, so that
                // telemetry nobody uses costs one check per message.
                if !self.shared().telemetry.watches_publishes() {
                    return self.publish_traced(&outgoing) $($awaiting)*;
                }
                self.publish_watched(outgoing) $($awaiting)*
            }

            /// [`publish`](Self::publish) with its span, trace context and
            /// observer; out of line, so the check before it inlines.
            #[inline(never)]
            $($asyncness)* fn publish_watched(
                &self,
                outgoing: $crate::telemetry::Outgoing<'_>,
            ) -> $crate::Result<crate::Confirmation> {
                let telemetry = &self.shared().telemetry;
                // The clock only for an observer, which measures the call.
                let started = telemetry.observer().map(|_| ::std::time::Instant::now());
                let (span, injected) =
                    telemetry.publish(self.channel.id(), outgoing.publish, outgoing.properties);
                let outgoing = match injected.as_deref() {
                    Some(properties) => outgoing.with_properties(properties),
                    None => outgoing,
                };
                let confirmation = self.publish_traced(&outgoing) $($awaiting)*;
                span.published(&outgoing, &confirmation);
                if let Some(started) = started {
                    telemetry.published(self.channel.id(), &outgoing, started, confirmation.as_ref().err());
                }
                confirmation
            }

            /// Sends `method`; returns the request its reply will answer,
            /// if one will come.
            fn send(
                &self,
                method: ::amqp_proto::spec::Method,
            ) -> $crate::Result<Option<::amqp_proto::RequestId>> {
                self.command(|state| state.request(self.channel, method))
            }

            #[doc = "Sends any method a client may send on a channel and waits for its"]
            #[doc = "reply: `None` for methods without one (or with `nowait` set). The"]
            #[doc = "typed methods below are shorthands for this."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::{ChannelFlow, Method};"]
            #[doc = ""]
            #[doc = "// Any client method, for example asking the server to pause deliveries."]
            #[doc = concat!("if let Some(Method::ChannelFlowOk(ok)) = channel.call(ChannelFlow { active: false })", $suffix, "? {")]
            #[doc = "    assert!(!ok.active);"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn call(
                &self,
                method: impl Into<::amqp_proto::spec::Method>,
            ) -> $crate::Result<Option<::amqp_proto::spec::Method>> {
                let method = method.into();
                let operation = method.name();
                let reply = match self.send(method)? {
                    Some(request) => Some(self.reply(operation, request) $($awaiting)* ?),
                    None => None,
                };
                $crate::session::typed::method(operation, reply)
            }

            #[doc = "Declares an exchange (`exchange.declare`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::ExchangeDeclare;"]
            #[doc = ""]
            #[doc = "channel.exchange_declare(ExchangeDeclare {"]
            #[doc = "    exchange: \"logs\".into(),"]
            #[doc = "    exchange_type: \"fanout\".into(),"]
            #[doc = "    durable: true,"]
            #[doc = "    ..Default::default()"]
            #[doc = concat!("})", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn exchange_declare(
                &self,
                declare: ::amqp_proto::spec::ExchangeDeclare,
            ) -> $crate::Result<()> {
                self.call(declare) $($awaiting)* .map(drop)
            }

            #[doc = "Deletes an exchange (`exchange.delete`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::ExchangeDelete;"]
            #[doc = ""]
            #[doc = "let delete = ExchangeDelete { exchange: \"logs\".into(), if_unused: true, ..Default::default() };"]
            #[doc = concat!("channel.exchange_delete(delete)", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn exchange_delete(
                &self,
                delete: ::amqp_proto::spec::ExchangeDelete,
            ) -> $crate::Result<()> {
                self.call(delete) $($awaiting)* .map(drop)
            }

            #[doc = "Binds an exchange to another (RabbitMQ's `exchange.bind`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::ExchangeBind;"]
            #[doc = ""]
            #[doc = "// Everything published to \"events\" also reaches \"audit\"."]
            #[doc = "channel.exchange_bind(ExchangeBind {"]
            #[doc = "    destination: \"audit\".into(),"]
            #[doc = "    source: \"events\".into(),"]
            #[doc = "    routing_key: \"#\".into(),"]
            #[doc = "    ..Default::default()"]
            #[doc = concat!("})", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn exchange_bind(
                &self,
                bind: ::amqp_proto::spec::ExchangeBind,
            ) -> $crate::Result<()> {
                self.call(bind) $($awaiting)* .map(drop)
            }

            #[doc = "Removes an exchange-to-exchange binding (`exchange.unbind`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::ExchangeUnbind;"]
            #[doc = ""]
            #[doc = "channel.exchange_unbind(ExchangeUnbind {"]
            #[doc = "    destination: \"audit\".into(),"]
            #[doc = "    source: \"events\".into(),"]
            #[doc = "    routing_key: \"#\".into(),"]
            #[doc = "    ..Default::default()"]
            #[doc = concat!("})", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn exchange_unbind(
                &self,
                unbind: ::amqp_proto::spec::ExchangeUnbind,
            ) -> $crate::Result<()> {
                self.call(unbind) $($awaiting)* .map(drop)
            }

            #[doc = "Declares a queue (`queue.declare`); an empty name asks the server to"]
            #[doc = "make one up, returned in the reply. With `nowait`, the reply is"]
            #[doc = "made up locally from the request (counts zero)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::codec::{FieldTable, FieldValue};"]
            #[doc = "use amqp_proto::spec::QueueDeclare;"]
            #[doc = ""]
            #[doc = "let mut arguments = FieldTable::new();"]
            #[doc = "arguments.insert(\"x-queue-type\", FieldValue::LongString(\"quorum\".into()));"]
            #[doc = "let declared = channel.queue_declare(QueueDeclare {"]
            #[doc = "    queue: \"orders\".into(),"]
            #[doc = "    durable: true,"]
            #[doc = "    arguments,"]
            #[doc = "    ..Default::default()"]
            #[doc = concat!("})", $suffix, "?;")]
            #[doc = "println!(\"{} holds {} messages\", declared.queue, declared.message_count);"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn queue_declare(
                &self,
                declare: ::amqp_proto::spec::QueueDeclare,
            ) -> $crate::Result<::amqp_proto::spec::QueueDeclareOk> {
                let queue = declare.queue.clone();
                $crate::session::typed::queue_declared(queue, self.call(declare) $($awaiting)* ?)
            }

            #[doc = "Binds a queue to an exchange (`queue.bind`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::QueueBind;"]
            #[doc = ""]
            #[doc = "channel.queue_bind(QueueBind {"]
            #[doc = "    queue: \"orders\".into(),"]
            #[doc = "    exchange: \"events\".into(),"]
            #[doc = "    routing_key: \"orders.*\".into(),"]
            #[doc = "    ..Default::default()"]
            #[doc = concat!("})", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn queue_bind(
                &self,
                bind: ::amqp_proto::spec::QueueBind,
            ) -> $crate::Result<()> {
                self.call(bind) $($awaiting)* .map(drop)
            }

            #[doc = "Removes a binding (`queue.unbind`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::QueueUnbind;"]
            #[doc = ""]
            #[doc = "channel.queue_unbind(QueueUnbind {"]
            #[doc = "    queue: \"orders\".into(),"]
            #[doc = "    exchange: \"events\".into(),"]
            #[doc = "    routing_key: \"orders.*\".into(),"]
            #[doc = "    ..Default::default()"]
            #[doc = concat!("})", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn queue_unbind(
                &self,
                unbind: ::amqp_proto::spec::QueueUnbind,
            ) -> $crate::Result<()> {
                self.call(unbind) $($awaiting)* .map(drop)
            }

            #[doc = "Removes every ready message from a queue; returns how many"]
            #[doc = "(`queue.purge`; 0 with `nowait`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::QueuePurge;"]
            #[doc = ""]
            #[doc = "let purge = QueuePurge { queue: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("let removed = channel.queue_purge(purge)", $suffix, "?;")]
            #[doc = "println!(\"purged {removed} messages\");"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn queue_purge(
                &self,
                purge: ::amqp_proto::spec::QueuePurge,
            ) -> $crate::Result<u32> {
                $crate::session::typed::message_count("queue.purge", self.call(purge) $($awaiting)* ?)
            }

            #[doc = "Deletes a queue; returns how many messages it held (`queue.delete`;"]
            #[doc = "0 with `nowait`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::QueueDelete;"]
            #[doc = ""]
            #[doc = "let delete = QueueDelete { queue: \"orders\".into(), if_empty: true, ..Default::default() };"]
            #[doc = concat!("let lost = channel.queue_delete(delete)", $suffix, "?;")]
            #[doc = "assert_eq!(lost, 0);"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn queue_delete(
                &self,
                delete: ::amqp_proto::spec::QueueDelete,
            ) -> $crate::Result<u32> {
                $crate::session::typed::message_count("queue.delete", self.call(delete) $($awaiting)* ?)
            }

            #[doc = "Limits unacknowledged deliveries (`basic.qos`): per consumer, or with"]
            #[doc = "`global` per channel, as RabbitMQ interprets it."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::BasicQos;"]
            #[doc = ""]
            #[doc = "// At most 100 unacknowledged deliveries per consumer on this channel."]
            #[doc = concat!("channel.basic_qos(BasicQos { prefetch_count: 100, ..Default::default() })", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn basic_qos(
                &self,
                qos: ::amqp_proto::spec::BasicQos,
            ) -> $crate::Result<()> {
                self.call(qos) $($awaiting)* .map(drop)
            }

            #[doc = "Redelivers every unacknowledged message of this channel"]
            #[doc = "(`basic.recover`; RabbitMQ always requeues)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("channel.basic_recover(true)", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn basic_recover(&self, requeue: bool) -> $crate::Result<()> {
                self.call(::amqp_proto::spec::BasicRecover { requeue }) $($awaiting)* .map(drop)
            }

            #[doc = "Puts the channel in transaction mode (`tx.select`): publishes and"]
            #[doc = "acknowledgements take effect at [`tx_commit`](Self::tx_commit), all"]
            #[doc = "or none."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::codec::BasicProperties;"]
            #[doc = "use amqp_proto::spec::BasicPublish;"]
            #[doc = ""]
            #[doc = concat!("channel.tx_select()", $suffix, "?;")]
            #[doc = "let publish = BasicPublish { routing_key: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("channel.publish(&publish, &BasicProperties::default(), \"one\")", $suffix, "?;")]
            #[doc = concat!("channel.publish(&publish, &BasicProperties::default(), \"two\")", $suffix, "?;")]
            #[doc = concat!("channel.tx_commit()", $suffix, "?; // both, or neither")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn tx_select(&self) -> $crate::Result<()> {
                self.call(::amqp_proto::spec::TxSelect {}) $($awaiting)* .map(drop)
            }

            #[doc = "Commits the current transaction (`tx.commit`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("channel.tx_select()", $suffix, "?;")]
            #[doc = "// ... publishes and acks ..."]
            #[doc = concat!("channel.tx_commit()", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn tx_commit(&self) -> $crate::Result<()> {
                self.call(::amqp_proto::spec::TxCommit {}) $($awaiting)* .map(drop)
            }

            #[doc = "Abandons the current transaction (`tx.rollback`)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = concat!("channel.tx_select()", $suffix, "?;")]
            #[doc = "// ... publishes and acks that must not happen after all ..."]
            #[doc = concat!("channel.tx_rollback()", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn tx_rollback(&self) -> $crate::Result<()> {
                self.call(::amqp_proto::spec::TxRollback {}) $($awaiting)* .map(drop)
            }

            #[doc = "Puts the channel in publisher-confirm mode (`confirm.select`): from"]
            #[doc = "now on the [`Confirmation`](crate::Confirmation) of every"]
            #[doc = "[`publish`](Self::publish) can be waited on, and"]
            #[doc = "[`wait_for_confirms`](Self::wait_for_confirms) waits for them all."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::codec::BasicProperties;"]
            #[doc = "use amqp_proto::spec::BasicPublish;"]
            #[doc = ""]
            #[doc = concat!("channel.confirm_select()", $suffix, "?;")]
            #[doc = "let publish = BasicPublish { routing_key: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("let confirmation = channel.publish(&publish, &BasicProperties::default(), \"order 1\")", $suffix, "?;")]
            #[doc = "assert!(confirmation.sequence().is_some());"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn confirm_select(&self) -> $crate::Result<()> {
                self.call(::amqp_proto::spec::ConfirmSelect { nowait: false }) $($awaiting)* .map(drop)
            }

            #[doc = "Fetches one message (`basic.get`); `None` when the queue is empty."]
            #[doc = "A message that arrives after the call gave up waiting goes back to"]
            #[doc = "the queue."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::BasicGet;"]
            #[doc = ""]
            #[doc = "let get = BasicGet { queue: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("match channel.basic_get(get)", $suffix, "? {")]
            #[doc = "    Some(message) => {"]
            #[doc = "        println!(\"{:?}, {} more waiting\", message.content.body, message.message_count);"]
            #[doc = "        channel.ack(message.delivery_tag, false)?;"]
            #[doc = "    }"]
            #[doc = "    None => println!(\"the queue is empty\"),"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn basic_get(
                &self,
                get: ::amqp_proto::spec::BasicGet,
            ) -> $crate::Result<Option<::amqp_proto::GetMessage>> {
                let span = $crate::telemetry::MessageSpan::receive(
                    &self.shared().telemetry,
                    self.channel.id(),
                    &get.queue,
                );
                let queue = get.queue.clone();
                // One body for both adapters: a closure called at once (or
                // an async block awaited), so `?` ends the get, not the call.
                #[allow(clippy::redundant_closure_call)]
                let got = (|| $($asyncness)* {
                    let Some(request) = self.send(get.into())? else {
                        return Err($crate::session::typed::missing("basic.get"));
                    };
                    $crate::session::typed::got(self.reply("basic.get", request) $($awaiting)* ?)
                })() $($awaiting)*;
                let got = span.outcome(got);
                if let Ok(message) = &got {
                    span.record_get(&queue, message.as_ref());
                }
                got
            }

            #[doc = "Cancels a consumer (`basic.cancel`), waiting for `cancel-ok`: no"]
            #[doc = "delivery for it arrives after this returns. Takes the tag as the API"]
            #[doc = "hands it out ([`Consumer::tag`](crate::Consumer::tag)); a"]
            #[doc = "[`Consumer`](crate::Consumer) of it then ends with"]
            #[doc = "[`Error::ConsumerCancelledByApplication`](crate::Error::ConsumerCancelledByApplication)."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::BasicConsume;"]
            #[doc = ""]
            #[doc = "let consume = BasicConsume { queue: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("let consumer = channel.basic_consume(consume)", $suffix, "?;")]
            #[doc = concat!("channel.basic_cancel(consumer.tag())", $suffix, "?;")]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub $($asyncness)* fn basic_cancel(
                &self,
                consumer_tag: &::amqp_proto::codec::ShortString,
            ) -> $crate::Result<()> {
                let cancel = ::amqp_proto::spec::BasicCancel {
                    consumer_tag: consumer_tag.clone(),
                    nowait: false,
                };
                self.call(cancel) $($awaiting)* .map(drop)
            }

            #[doc = "Acknowledges a delivery (with `multiple`, every one up to it). A tag"]
            #[doc = "from before a recovery is dropped (the broker requeued it); a"]
            #[doc = "channel that closed since fails with its close."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::BasicGet;"]
            #[doc = ""]
            #[doc = "let get = BasicGet { queue: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("if let Some(message) = channel.basic_get(get)", $suffix, "? {")]
            #[doc = "    channel.ack(message.delivery_tag, false)?;"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub fn ack(&self, delivery_tag: u64, multiple: bool) -> $crate::Result<()> {
                $crate::delivery::Settle::settle(
                    self,
                    delivery_tag,
                    ::amqp_proto::Settlement::Ack { multiple },
                )
            }

            #[doc = "Refuses deliveries (`basic.nack`), requeueing them or not."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::BasicGet;"]
            #[doc = ""]
            #[doc = "let get = BasicGet { queue: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("if let Some(message) = channel.basic_get(get)", $suffix, "? {")]
            #[doc = "    // Not now: back to the queue."]
            #[doc = "    channel.nack(message.delivery_tag, false, true)?;"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub fn nack(
                &self,
                delivery_tag: u64,
                multiple: bool,
                requeue: bool,
            ) -> $crate::Result<()> {
                $crate::delivery::Settle::settle(
                    self,
                    delivery_tag,
                    ::amqp_proto::Settlement::Nack { multiple, requeue },
                )
            }

            #[doc = "Refuses one delivery (`basic.reject`), requeueing it or not."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "use amqp_proto::spec::BasicGet;"]
            #[doc = ""]
            #[doc = "let get = BasicGet { queue: \"orders\".into(), ..Default::default() };"]
            #[doc = concat!("if let Some(message) = channel.basic_get(get)", $suffix, "? {")]
            #[doc = "    // Malformed: drop it (or dead-letter it, if the queue says so)."]
            #[doc = "    channel.reject(message.delivery_tag, false)?;"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            pub fn reject(&self, delivery_tag: u64, requeue: bool) -> $crate::Result<()> {
                $crate::delivery::Settle::settle(
                    self,
                    delivery_tag,
                    ::amqp_proto::Settlement::Reject { requeue },
                )
            }

            #[doc = "Why the channel closed, once it has."]
            #[doc = ""]
            #[doc = "```no_run"]
            #[doc = $demo]
            #[doc = "if let Some(reason) = channel.close_reason() {"]
            #[doc = "    eprintln!(\"channel {} closed: {reason}\", channel.id());"]
            #[doc = "}"]
            #[doc = "# Ok(()) }"]
            #[doc = "```"]
            #[must_use]
            pub fn close_reason(&self) -> Option<::amqp_proto::CloseReason> {
                match self.command(|state| state.channel(self.channel).map(drop)) {
                    Err($crate::Error::ChannelClosed(reason)) => Some(reason),
                    _ => None,
                }
            }

            /// Queues `channel.close`; wait for its end with
            /// [`Session::poll_channel_closed`]($crate::session::Session::poll_channel_closed).
            fn start_close(&self) -> $crate::Result<()> {
                self.command(|state| {
                    state.channel(self.channel)?;
                    let handle = state.core.channel(self.channel)?;
                    Ok(handle.close(
                        ::amqp_proto::spec::constants::ReplyCode::REPLY_SUCCESS,
                        "closed by the application",
                    )?)
                })
            }
        }
    };
}
