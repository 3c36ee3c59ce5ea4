//! Spans and events for operators, written once for both adapters.
//!
//! With the `tracing` feature (on by default in `amqp-io-std` and
//! `amqp-io-tokio`), the adapters open OpenTelemetry-shaped spans for
//! message operations and report the connection's life under fixed
//! targets, so one filter serves either adapter:
//!
//! | target | level | what |
//! |---|---|---|
//! | `amqp::messaging` | INFO | spans `publish` (producer), `receive` (`basic.get`, client), `process` (consumer: from the hand-off of a delivery until it is settled or dropped) |
//! | `amqp::connection` | INFO | `connection.opened`, `connection.closed` (by the application), `connection.unblocked`, `connection.recovered` |
//! | `amqp::connection` | WARN | `connection.blocked`, a close by the server or the transport, a heartbeat timeout, a consumer cancelled by the server, a channel closed by the server with an error code, recovery given up: what an operator can act on, once per occurrence |
//!
//! Nothing is reported at ERROR: errors are returned to the caller. No
//! event carries a message body or a header value.
//!
//! The spans follow the OpenTelemetry messaging conventions (v1.44.0, with
//! their RabbitMQ refinements): `messaging.system = "rabbitmq"`,
//! `messaging.operation.name` and `.type`, `messaging.destination.name` as
//! `{exchange}:{routing key}` for a publish and
//! `{exchange}:{routing key}:{queue}` for a delivery (`amq.default` for
//! the default exchange), `messaging.rabbitmq.destination.routing_key`,
//! `messaging.rabbitmq.message.delivery_tag`, the message and correlation
//! ids, `server.address` and `server.port`, all set when the span is
//! created; `otel.name` and `otel.kind` for `tracing-opentelemetry`.
//! One deliberate deviation: `otel.name` carries the exchange (or queue),
//! never the routing key, which is often one per entity and would give a
//! span name per message ([`SpanNames`]).
//!
//! [`SpanOptions`] (in [`ConnectOptions::spans`](crate::ConnectOptions::spans))
//! chooses the names and adds `settle` spans (DEBUG, kind client, one per
//! ack, nack or reject, a child of its delivery's `process` span).
//!
//! A failed operation records `error.type` from a closed list
//! ([`error_type`]) and `otel.status_code = "ERROR"`.
//!
//! Spans are not entered by the library: a span measures the operation
//! from its creation to its end wherever the caller's task runs. A
//! `process` span is the delivery's (`Delivery::span`),
//! for the application to enter or `instrument` its handling with.
//!
//! With no subscriber interested, a message's telemetry costs one test of
//! a byte the subscribers' interest keeps current (see `interest`) and of
//! one the connection's options fix; nothing is formatted or allocated.

use amqp_proto::codec::{BasicProperties, ShortString};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::{ConnectionError, Settlement};

use crate::Error;

#[cfg(feature = "tracing")]
mod interest;

/// How message spans are named (`otel.name`; the `tracing` name is
/// always the operation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpanNames {
    /// `{operation} {exchange}` for a publish (the routing key on the
    /// default exchange), `{operation} {queue}` for a delivery or get;
    /// the operation alone for names the broker generated
    /// (`amq.gen-*`, direct reply-to). Never the routing key of a named
    /// exchange: it is often one per entity, a span name per message.
    #[default]
    Destination,
    /// The operation alone (`publish`, `receive`, `process`, `ack`, ...),
    /// for backends that group by name and applications whose exchange
    /// and queue names carry ids.
    Operation,
}

/// Which message spans a connection makes, and how they are named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpanOptions {
    /// How spans are named.
    pub names: SpanNames,
    /// A `settle` span (DEBUG, kind client, operation `ack`, `nack` or
    /// `reject`, type `settle`) for each settlement of a delivery handed
    /// over, a child of its `process` span. Off by default: the `process`
    /// span already records how it was settled.
    pub settle: bool,
}

impl SpanOptions {
    /// These options naming spans as `names` says.
    #[must_use]
    pub fn names(mut self, names: SpanNames) -> Self {
        self.names = names;
        self
    }

    /// These options with settle spans on or off.
    #[must_use]
    pub fn settle(mut self, settle: bool) -> Self {
        self.settle = settle;
        self
    }
}

/// Attribute names, from the OpenTelemetry semantic conventions v1.44.0
/// (messaging, and its RabbitMQ page), kept in one place for the day they
/// are renamed.
pub mod semconv {
    /// Always `"rabbitmq"`.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `publish`, `receive`, `process`.
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// `send`, `receive`, `process`.
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// `{exchange}:{routing key}[:{queue}]`, `amq.default` for `""`.
    pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
    /// The routing key.
    pub const ROUTING_KEY: &str = "messaging.rabbitmq.destination.routing_key";
    /// The delivery tag.
    pub const DELIVERY_TAG: &str = "messaging.rabbitmq.message.delivery_tag";
    /// The `message-id` property.
    pub const MESSAGE_ID: &str = "messaging.message.id";
    /// The `correlation-id` property.
    pub const CONVERSATION_ID: &str = "messaging.message.conversation_id";
    /// The broker's host.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The broker's port.
    pub const SERVER_PORT: &str = "server.port";
    /// The class of a failure, from [`super::error_type`].
    pub const ERROR_TYPE: &str = "error.type";
    /// The exchange used when none is named.
    pub const DEFAULT_EXCHANGE: &str = "amq.default";
}

/// The broker a connection talks to, as spans name it. Cheap to clone
/// (adapters keep one per connection and hand it to their consumers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// `server.address`: the host the connection was opened to.
    pub address: String,
    /// `server.port`.
    pub port: u16,
}

impl From<&crate::Address> for Peer {
    fn from(address: &crate::Address) -> Self {
        Self {
            address: address.host.clone(),
            port: address.port,
        }
    }
}

/// The connected [`Peer`], replaced when a recovery lands on another node
/// while handles read it from other threads. Read only where a span or an
/// event is made, never on a message's bare path.
#[derive(Debug, Default)]
struct PeerSlot(std::sync::Mutex<std::sync::Arc<Peer>>);

impl PeerSlot {
    fn new(peer: Peer) -> Self {
        Self(std::sync::Mutex::new(std::sync::Arc::new(peer)))
    }

    fn get(&self) -> std::sync::Arc<Peer> {
        std::sync::Arc::clone(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn set(&self, peer: Peer) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(peer);
    }
}

impl Clone for PeerSlot {
    fn clone(&self) -> Self {
        Self(std::sync::Mutex::new(self.get()))
    }
}

/// How trace context crosses the broker, for applications that export
/// their spans (with `tracing-opentelemetry`, say): the library has no
/// W3C ids of its own to write, since `tracing`'s span ids are not trace
/// ids, so it hands the application its spans and the message's headers
/// at the two moments that matter, before the span is entered.
///
/// ```
/// use amqp_io_common::telemetry::TraceContext;
/// use amqp_proto::propagation::{Headers, HeadersMut, TraceParent, TRACEPARENT};
///
/// /// Gives every message a fixed context (a real one would ask its
/// /// OpenTelemetry propagator for the span's context).
/// struct Fixed;
///
/// impl TraceContext for Fixed {
///     fn inject(&self, _span: &tracing::Span, headers: &mut HeadersMut<'_>) {
///         headers.set(TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
///     }
///
///     fn extract(&self, span: &tracing::Span, headers: &Headers<'_>) {
///         if let Some(parent) = headers.get(TRACEPARENT).and_then(TraceParent::parse) {
///             // e.g. span.set_parent(...) with tracing-opentelemetry
///             let _ = (span, parent);
///         }
///     }
/// }
/// ```
#[cfg(feature = "tracing")]
pub trait TraceContext: Send + Sync + 'static {
    /// Called for each publish whose headers carry no `traceparent` yet
    /// (one the application set is never replaced), with its `publish`
    /// span (`Span::none()` when spans are off): write the context to
    /// propagate, usually that span's.
    fn inject(&self, span: &tracing::Span, headers: &mut amqp_proto::propagation::HeadersMut<'_>);

    /// Called for each delivery as it is handed over, with its `process`
    /// span, not yet entered: set its parent or add a link from what the
    /// headers carry.
    fn extract(&self, span: &tracing::Span, headers: &amqp_proto::propagation::Headers<'_>);

    /// False for a hook that does nothing without spans: whose
    /// [`extract`](Self::extract) does nothing when the span is not
    /// recorded, and whose [`inject`](Self::inject) does nothing while no
    /// `tracing` subscriber was ever installed. It is then not called in
    /// those cases, which spares every publish and hand-off its work.
    /// True by default.
    fn works_without_spans(&self) -> bool {
        true
    }
}

/// A hook for metrics, with no dependency: the application's recorder
/// (Prometheus, `metrics`, OpenTelemetry) implements what it wants; every
/// method does nothing by default. Set it with
/// [`ConnectOptions::observer`](crate::ConnectOptions::observer). Calls come
/// from whichever thread or task does the work (the publisher's, the
/// consumer's, the connection's driver), never while a lock of the
/// connection is held by the caller's own call, so an observer must be
/// cheap and must not call back into the connection.
///
/// The counters are the core's ([`on_stats`](Self::on_stats), a
/// [`Stats`](amqp_proto::Stats) snapshot at most every 100 ms while the
/// connection works and once when it ends); the per-message calls carry
/// what a histogram needs (the publish's duration until the core took
/// it, a delivery's processing time from its hand-off to its settlement).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use amqp_io_common::telemetry::{Observer, SettleInfo};
///
/// #[derive(Default)]
/// struct Processing(AtomicU64);
///
/// impl Observer for Processing {
///     fn on_settle(&self, settle: &SettleInfo) {
///         let micros = u64::try_from(settle.processing.as_micros()).unwrap_or(u64::MAX);
///         self.0.fetch_add(micros, Ordering::Relaxed);
///     }
/// }
/// ```
pub trait Observer: Send + Sync + 'static {
    /// A publish was taken by the core, or failed before it was.
    fn on_publish(&self, _publish: &PublishInfo<'_>) {}

    /// A delivery was handed to the application.
    fn on_delivery(&self, _delivery: &DeliveryInfo<'_>) {}

    /// The application settled a delivery handed to it.
    fn on_settle(&self, _settle: &SettleInfo) {}

    /// The broker confirmed (or nacked) one publish of a channel in
    /// confirm mode, or it failed with its channel: exactly one call per
    /// sequence number [`on_publish`](Self::on_publish) reported.
    fn on_confirm(&self, _confirm: &ConfirmInfo<'_>) {}

    /// The connection opened, ended, was blocked or unblocked, or
    /// recovered.
    fn on_connection(&self, _event: &ConnectionEvent<'_>) {}

    /// The connection's counters, summed across recoveries.
    fn on_stats(&self, _stats: &amqp_proto::Stats) {}
}

/// One publish, for [`Observer::on_publish`].
#[derive(Debug)]
#[non_exhaustive]
pub struct PublishInfo<'a> {
    /// The channel id.
    pub channel: u16,
    /// The exchange (`""` for the default exchange).
    pub exchange: &'a ShortString,
    /// The routing key (a label of high cardinality: keep it out of
    /// metric labels).
    pub routing_key: &'a ShortString,
    /// The body's size in bytes.
    pub body_size: usize,
    /// The confirm sequence number, in confirm mode.
    pub sequence: Option<u64>,
    /// From the call until the core took the message (waits on flow
    /// control, the confirm window and a full output included).
    pub duration: std::time::Duration,
    /// Why it was not published, if it was not.
    pub error: Option<&'a Error>,
}

/// One delivery handed over, for [`Observer::on_delivery`].
#[derive(Debug)]
#[non_exhaustive]
pub struct DeliveryInfo<'a> {
    /// The queue consumed (`""` if the server named it and the consumer
    /// did not say).
    pub queue: &'a str,
    /// The delivery as the core decoded it.
    pub delivery: &'a amqp_proto::Delivery,
}

/// One publish's confirmation, for [`Observer::on_confirm`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConfirmInfo<'a> {
    /// The channel id.
    pub channel: u16,
    /// The publish's sequence number, as [`PublishInfo::sequence`] gave it.
    pub sequence: u64,
    /// Ack, nack, or the failure of its channel.
    pub outcome: &'a amqp_proto::ConfirmOutcome,
}

/// One settlement, for [`Observer::on_settle`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SettleInfo {
    /// How: ack, nack or reject, `multiple` and `requeue` as sent.
    pub how: Settlement,
    /// From the hand-off of the delivery to its settlement.
    pub processing: std::time::Duration,
    /// True if the settlement could not be sent (the channel was gone).
    pub failed: bool,
}

/// A change of the connection's state, for [`Observer::on_connection`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ConnectionEvent<'a> {
    /// The handshake finished (after a recovery too).
    Opened,
    /// The connection ended, or failed on its way to a recovery.
    Closed(&'a ConnectionError),
    /// The broker blocked publishing, for this reason.
    Blocked(&'a str),
    /// The broker unblocked it.
    Unblocked,
    /// A recovery re-declared the topology.
    Recovered,
}

/// How often [`Observer::on_stats`] is called at most while the
/// connection works.
pub const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a connection's spans need, shared by the session and the
/// adapter's handles: the broker, and the trace-context hook.
#[derive(Clone, Default)]
pub struct Telemetry {
    /// The broker node connected to, as spans name it: the first address
    /// until the connection opens, then the node it opened on (a recovery
    /// that lands on another node changes it).
    peer: PeerSlot,
    /// Which spans, and their names.
    pub spans: SpanOptions,
    #[cfg(feature = "tracing")]
    trace_context: Option<std::sync::Arc<dyn TraceContext>>,
    /// The hook's [`TraceContext::works_without_spans`], asked once: it is
    /// consulted on every message.
    #[cfg(feature = "tracing")]
    hook_works_without_spans: bool,
    observer: Option<std::sync::Arc<dyn Observer>>,
    /// What makes every message worth watching on this connection, decided
    /// once from the options so the per-message check reads one byte.
    watch: Watch,
}

/// What a connection's options ask of every message, whatever the
/// subscribers want.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
enum Watch {
    /// Only spans a subscriber wants: 0, so that one test of this and the
    /// subscribers' interest together answers the usual case.
    #[default]
    SpansOnly = 0,
    /// Always: an observer, or a trace-context hook that works without
    /// spans.
    Always,
    /// The trace-context hook, once any subscriber was installed (one that
    /// filters our spans out still has the application's span to carry).
    HookOnceSubscribed,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("peer", &self.peer())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// For a connection opened with `options`.
    #[must_use]
    pub fn new(options: &crate::ConnectOptions) -> Self {
        let peer = options
            .addresses
            .first()
            .map(Peer::from)
            .unwrap_or_default();
        #[cfg(feature = "tracing")]
        let (hook, hook_works_without_spans) = match &options.trace_context {
            Some(hook) => (true, hook.works_without_spans()),
            None => (false, false),
        };
        #[cfg(not(feature = "tracing"))]
        let (hook, hook_works_without_spans) = (false, false);
        let watch = if options.observer.is_some() || hook_works_without_spans {
            Watch::Always
        } else if hook {
            Watch::HookOnceSubscribed
        } else {
            Watch::SpansOnly
        };
        Self {
            peer: PeerSlot::new(peer),
            spans: options.spans,
            #[cfg(feature = "tracing")]
            trace_context: options.trace_context.clone(),
            #[cfg(feature = "tracing")]
            hook_works_without_spans,
            observer: options.observer.clone(),
            watch,
        }
    }

    /// The broker node connected to (or, before the connection opened, the
    /// one it is opening to).
    #[must_use]
    pub fn peer(&self) -> std::sync::Arc<Peer> {
        self.peer.get()
    }

    /// The connection opened on `peer` (a recovery may land on another
    /// node of the cluster than the last).
    pub fn set_peer(&self, peer: Peer) {
        self.peer.set(peer);
    }

    /// True if a publish has anything to tell: an observer to call, a span
    /// a subscriber wants, or a trace-context hook to run. When it is
    /// false the shared `publish` hands the message straight to the
    /// adapter, and telemetry costs that one check.
    #[must_use]
    #[inline(always)]
    pub fn watches_publishes(&self) -> bool {
        // The usual answer in one test: nothing on this connection asks for
        // every message (0) and no subscriber wants spans (0).
        #[cfg(feature = "tracing")]
        let subscribers = interest::message_spans_byte();
        #[cfg(not(feature = "tracing"))]
        let subscribers = 0;
        if (self.watch as u8 | subscribers) == 0 {
            return false;
        }
        match self.watch {
            Watch::Always => true,
            #[cfg(feature = "tracing")]
            Watch::HookOnceSubscribed if tracing::dispatcher::has_been_set() => true,
            #[cfg(feature = "tracing")]
            _ => wanted(),
            #[cfg(not(feature = "tracing"))]
            _ => false,
        }
    }

    /// True if the trace-context hook is called for a publish: it is set,
    /// and it works without spans or a subscriber was ever installed (one
    /// that filters our span out still has the application's span to
    /// carry).
    #[cfg(feature = "tracing")]
    fn publish_hook_runs(&self) -> bool {
        self.trace_context.is_some()
            && (self.hook_works_without_spans || tracing::dispatcher::has_been_set())
    }

    /// The application's observer, if it set one.
    #[must_use]
    pub fn observer(&self) -> Option<&dyn Observer> {
        self.observer.as_deref()
    }

    /// Tells the observer (if any) of a publish that started at `started`
    /// and ended now, taken by the core or failed with `error`.
    pub fn published(
        &self,
        channel: u16,
        outgoing: &Outgoing<'_>,
        started: std::time::Instant,
        error: Option<&Error>,
    ) {
        if let Some(observer) = &self.observer {
            observer.on_publish(&PublishInfo {
                channel,
                exchange: &outgoing.publish.exchange,
                routing_key: &outgoing.publish.routing_key,
                body_size: outgoing.body.len(),
                sequence: outgoing.sequence(),
                duration: started.elapsed(),
                error,
            });
        }
    }

    /// Tells the observer (if any) of a publish's confirmation.
    pub fn confirmed(&self, channel: u16, sequence: u64, outcome: &amqp_proto::ConfirmOutcome) {
        if let Some(observer) = &self.observer {
            observer.on_confirm(&ConfirmInfo {
                channel,
                sequence,
                outcome,
            });
        }
    }

    /// Tells the observer (if any) of a change of the connection.
    pub fn connection_changed(&self, event: ConnectionEvent<'_>) {
        if let Some(observer) = &self.observer {
            observer.on_connection(&event);
        }
    }

    /// Opens the `publish` span of a message about to be published on
    /// `channel`, and, when the application's hook wrote a trace context,
    /// the copy of the properties to publish instead of its own (copied
    /// only then, and boxed: the common answer, `None`, is one word to
    /// carry through an adapter's publish future).
    #[must_use]
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn publish(
        &self,
        channel: u16,
        publish: &amqp_proto::spec::BasicPublish,
        properties: &BasicProperties,
    ) -> (MessageSpan, Option<Box<BasicProperties>>) {
        let span = MessageSpan::publish(self, channel, publish, properties);
        #[cfg(feature = "tracing")]
        if let Some(hook) = self
            .trace_context
            .as_deref()
            .filter(|_| self.publish_hook_runs())
        {
            let injected = inject(hook, &span, properties);
            return (span, injected);
        }
        (span, None)
    }
}

/// What `hook` writes into a publish's headers, as the properties to
/// publish instead, unless the application's carry a `traceparent`.
#[cfg(feature = "tracing")]
#[inline(never)]
fn inject(
    hook: &dyn TraceContext,
    span: &MessageSpan,
    properties: &BasicProperties,
) -> Option<Box<BasicProperties>> {
    let present = properties
        .headers
        .as_ref()
        .is_some_and(|headers| headers.get(amqp_proto::propagation::TRACEPARENT).is_some());
    if present {
        return None;
    }
    // The hook writes into an empty table first (no allocation): most
    // publishes have no context to carry (no exporter, nothing sampled)
    // and keep their own properties, uncopied.
    let mut written = amqp_proto::codec::FieldTable::new();
    hook.inject(
        &span.span(),
        &mut amqp_proto::propagation::HeadersMut(&mut written),
    );
    if written.is_empty() {
        return None;
    }
    let mut copy = Box::new(properties.clone());
    let headers = copy.headers.get_or_insert_with(Default::default);
    for (name, value) in written.iter() {
        if !headers.iter().any(|(present, _)| present == name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    Some(copy)
}

/// A message on its way to the core, as the shared `publish` hands it to
/// an adapter: what to publish, and (once the core took it) its confirm
/// sequence.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The `basic.publish` method.
    pub publish: &'a amqp_proto::spec::BasicPublish,
    /// The properties to send (the trace context written in, if a hook
    /// did).
    pub properties: &'a BasicProperties,
    /// The body, not copied.
    pub body: bytes::Bytes,
    /// The confirm sequence once the core took it (for the span and the
    /// observer), 0 before or outside confirm mode: sequences start at 1.
    /// Atomic only because an async publish holds the message across
    /// awaits; relaxed, it costs a plain store and load.
    sequence: std::sync::atomic::AtomicU64,
}

impl<'a> Outgoing<'a> {
    /// A message to publish.
    #[must_use]
    #[inline]
    pub fn new(
        publish: &'a amqp_proto::spec::BasicPublish,
        properties: &'a BasicProperties,
        body: bytes::Bytes,
    ) -> Self {
        Self {
            publish,
            properties,
            body,
            sequence: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same message with other properties (the trace context written
    /// in).
    #[must_use]
    pub fn with_properties<'b>(self, properties: &'b BasicProperties) -> Outgoing<'b>
    where
        'a: 'b,
    {
        Outgoing {
            publish: self.publish,
            properties,
            body: self.body,
            sequence: self.sequence,
        }
    }

    /// Publishes on `channel` now, keeping the confirm sequence (in
    /// confirm mode) for the span and the observer.
    ///
    /// # Errors
    ///
    /// The core's refusal: a closed channel, a usage error.
    #[inline]
    pub fn publish_on(
        &self,
        mut channel: amqp_proto::ChannelRef<'_>,
    ) -> Result<Option<u64>, amqp_proto::UsageError> {
        let sequence = channel.publish(self.publish, self.properties, self.body.clone())?;
        self.sequence
            .store(sequence.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        Ok(sequence)
    }

    /// The confirm sequence the core gave it, in confirm mode.
    #[must_use]
    #[inline]
    pub fn sequence(&self) -> Option<u64> {
        match self.sequence.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            sequence => Some(sequence),
        }
    }
}

/// The `error.type` of a failure: the AMQP reply-code name
/// (`precondition-failed`, `not-found`, `connection-forced`, ...) for a
/// close by the server, else one of `nack`, `timeout`,
/// `heartbeat-timeout`, `io`, `tls`, `closed`, `decode-error`,
/// `usage`, `authentication`, `_OTHER`.
#[must_use]
pub fn error_type(error: &Error) -> &'static str {
    match error {
        Error::ChannelClosed(reason) => reply_code_name(reason.code),
        Error::ConnectionClosed(error) => connection_error_type(error),
        Error::Nacked(_) => "nack",
        Error::Timeout { .. } => "timeout",
        Error::Connect { .. } | Error::NoAddressConnected(_) => "io",
        Error::Tls(_) => "tls",
        Error::Usage(_) => "usage",
        Error::MessageRefused(_) => "decode-error",
        Error::ConsumerCancelled(_) | Error::ConsumerCancelledByApplication(_) => "closed",
        _ => "_OTHER",
    }
}

/// The `error.type` of a connection's end.
#[must_use]
pub fn connection_error_type(error: &ConnectionError) -> &'static str {
    match error {
        ConnectionError::Closed(reason) => reply_code_name(reason.code),
        ConnectionError::ProtocolViolation { .. } => "protocol-violation",
        ConnectionError::HeartbeatTimeout => "heartbeat-timeout",
        ConnectionError::HandshakeTimeout | ConnectionError::CloseTimeout => "timeout",
        ConnectionError::AuthenticationFailed(_)
        | ConnectionError::AccessRefused(_)
        | ConnectionError::NoCommonMechanism { .. } => "authentication",
        ConnectionError::TransportClosed(_) => "io",
        _ => "_OTHER",
    }
}

fn reply_code_name(code: ReplyCode) -> &'static str {
    if code == ReplyCode::REPLY_SUCCESS {
        return "closed";
    }
    code.name().unwrap_or("_OTHER")
}

/// `messaging.destination.name` of a publish or delivery.
#[cfg(any(feature = "tracing", test))]
fn destination(exchange: &ShortString, routing_key: &ShortString, queue: Option<&str>) -> String {
    let exchange = exchange.to_string_lossy();
    let exchange = if exchange.is_empty() {
        semconv::DEFAULT_EXCHANGE.into()
    } else {
        exchange
    };
    let routing_key = routing_key.to_string_lossy();
    match queue {
        Some(queue) if !queue.is_empty() => format!("{exchange}:{routing_key}:{queue}"),
        _ => format!("{exchange}:{routing_key}"),
    }
}

/// True for a queue or routing key the broker named or that names a
/// reply queue, which semconv keeps out of span names.
#[cfg(any(feature = "tracing", test))]
fn anonymous(name: &str) -> bool {
    name.starts_with("amq.gen-") || name.starts_with("amq.rabbitmq.reply-to")
}

/// `otel.name` of an `operation` on `target` (an exchange, queue or
/// default-exchange routing key), as `names` says.
#[cfg(feature = "tracing")]
fn span_name(names: SpanNames, operation: &str, target: &str) -> String {
    match names {
        SpanNames::Destination if !target.is_empty() && !anonymous(target) => {
            format!("{operation} {target}")
        }
        _ => operation.to_owned(),
    }
}

/// The span of one message operation (`publish`, `receive`, `process`),
/// or nothing when the `tracing` feature is off or no subscriber wants
/// it. It ends when dropped.
#[derive(Debug, Default)]
pub struct MessageSpan {
    /// Boxed: a message span is carried through every publish and
    /// delivery, and when nobody records spans a word moves cheaper than
    /// a `Span`.
    #[cfg(feature = "tracing")]
    span: Option<Box<tracing::Span>>,
}

/// The fields every message span has, in one place; what is known when
/// the span is made is given to it there (samplers and
/// `tracing-opentelemetry` see the attributes at creation), the rest is
/// declared empty and recorded later.
#[cfg(feature = "tracing")]
#[derive(Default)]
struct Known<'a> {
    otel_name: &'a str,
    destination: Option<&'a str>,
    routing_key: Option<&'a str>,
    delivery_tag: Option<u64>,
    message_id: Option<&'a str>,
    correlation_id: Option<&'a str>,
    channel: u16,
    consumer_tag: Option<&'a str>,
    redelivered: Option<bool>,
}

#[cfg(feature = "tracing")]
macro_rules! message_span {
    ($name:literal, $kind:literal, $operation:literal, $operation_type:literal, $peer:expr, $known:expr) => {{
        let known: Known<'_> = $known;
        tracing::info_span!(
            target: "amqp::messaging",
            $name,
            "otel.name" = known.otel_name,
            "otel.kind" = $kind,
            "otel.status_code" = tracing::field::Empty,
            "messaging.system" = "rabbitmq",
            "messaging.operation.name" = $operation,
            "messaging.operation.type" = $operation_type,
            "messaging.destination.name" = known.destination,
            "messaging.rabbitmq.destination.routing_key" = known.routing_key,
            "messaging.rabbitmq.message.delivery_tag" = known.delivery_tag,
            "messaging.message.id" = known.message_id,
            "messaging.message.conversation_id" = known.correlation_id,
            "rabbitmq.channel.id" = known.channel,
            "rabbitmq.publish.sequence" = tracing::field::Empty,
            "rabbitmq.consumer.tag" = known.consumer_tag,
            "rabbitmq.delivery.redelivered" = known.redelivered,
            "rabbitmq.get.empty" = tracing::field::Empty,
            "rabbitmq.settle" = tracing::field::Empty,
            "rabbitmq.requeue" = tracing::field::Empty,
            "server.address" = $peer.address.as_str(),
            "server.port" = $peer.port,
            "error.type" = tracing::field::Empty,
        )
    }};
}

/// True if a subscriber may want message spans: checked before anything
/// is formatted for one.
#[cfg(feature = "tracing")]
#[inline(always)]
fn wanted() -> bool {
    interest::message_spans_wanted()
}

impl MessageSpan {
    /// A `publish` span (kind producer) for a message about to be
    /// published on `channel`. Its parent is the caller's current span.
    #[must_use]
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn publish(
        telemetry: &Telemetry,
        channel: u16,
        publish: &amqp_proto::spec::BasicPublish,
        properties: &BasicProperties,
    ) -> Self {
        #[cfg(feature = "tracing")]
        if wanted() {
            return Self::publish_recorded(telemetry, channel, publish, properties);
        }
        Self::default()
    }

    /// [`publish`](Self::publish) for a subscriber that records it: out of line,
    /// so the check before it stays small enough to inline.
    #[cfg(feature = "tracing")]
    #[inline(never)]
    fn publish_recorded(
        telemetry: &Telemetry,
        channel: u16,
        publish: &amqp_proto::spec::BasicPublish,
        properties: &BasicProperties,
    ) -> Self {
        let peer = telemetry.peer();
        let exchange = publish.exchange.to_string_lossy();
        let routing_key = publish.routing_key.to_string_lossy();
        let target = if exchange.is_empty() {
            &routing_key
        } else {
            &exchange
        };
        let otel_name = span_name(telemetry.spans.names, "publish", target);
        let destination = destination(&publish.exchange, &publish.routing_key, None);
        let (message_id, correlation_id) = ids(properties);
        let span = message_span!(
            "publish",
            "producer",
            "publish",
            "send",
            peer,
            Known {
                otel_name: &otel_name,
                destination: Some(&destination),
                routing_key: Some(&routing_key),
                message_id: message_id.as_deref(),
                correlation_id: correlation_id.as_deref(),
                channel,
                ..Known::default()
            }
        );
        Self {
            span: Some(Box::new(span)),
        }
    }

    /// A `receive` span (kind client) for a `basic.get` from `queue`. What
    /// it got is known only at its end ([`record_get`](Self::record_get)).
    #[must_use]
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn receive(telemetry: &Telemetry, channel: u16, queue: &ShortString) -> Self {
        #[cfg(feature = "tracing")]
        if wanted() {
            return Self::receive_recorded(telemetry, channel, queue);
        }
        Self::default()
    }

    /// [`receive`](Self::receive) for a subscriber that records it: out of line,
    /// so the check before it stays small enough to inline.
    #[cfg(feature = "tracing")]
    #[inline(never)]
    fn receive_recorded(telemetry: &Telemetry, channel: u16, queue: &ShortString) -> Self {
        let peer = telemetry.peer();
        let queue = queue.to_string_lossy();
        let otel_name = span_name(telemetry.spans.names, "receive", &queue);
        let span = message_span!(
            "receive",
            "client",
            "receive",
            "receive",
            peer,
            Known {
                otel_name: &otel_name,
                channel,
                ..Known::default()
            }
        );
        Self {
            span: Some(Box::new(span)),
        }
    }

    /// A `process` span (kind consumer) for a delivery handed to the
    /// application by the consumer of `queue` (`""` if the server named
    /// it or it is not known).
    #[must_use]
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn process(telemetry: &Telemetry, queue: &str, delivery: &amqp_proto::Delivery) -> Self {
        #[cfg(feature = "tracing")]
        if wanted() {
            return Self::process_recorded(telemetry, queue, delivery);
        }
        Self::default()
    }

    /// [`process`](Self::process) for a subscriber that records it: out of line,
    /// so the check before it stays small enough to inline.
    #[cfg(feature = "tracing")]
    #[inline(never)]
    fn process_recorded(
        telemetry: &Telemetry,
        queue: &str,
        delivery: &amqp_proto::Delivery,
    ) -> Self {
        let peer = telemetry.peer();
        let otel_name = span_name(telemetry.spans.names, "process", queue);
        let destination = destination(&delivery.exchange, &delivery.routing_key, Some(queue));
        let routing_key = delivery.routing_key.to_string_lossy();
        let consumer_tag = delivery.consumer_tag.to_string_lossy();
        let (message_id, correlation_id) = ids(delivery.properties());
        let span = message_span!(
            "process",
            "consumer",
            "process",
            "process",
            peer,
            Known {
                otel_name: &otel_name,
                destination: Some(&destination),
                routing_key: Some(&routing_key),
                delivery_tag: Some(delivery.delivery_tag),
                message_id: message_id.as_deref(),
                correlation_id: correlation_id.as_deref(),
                channel: delivery.channel,
                consumer_tag: Some(&consumer_tag),
                redelivered: Some(delivery.redelivered),
            }
        );
        Self {
            span: Some(Box::new(span)),
        }
    }

    /// A `settle` span (DEBUG, kind client) of settling `delivery`, taken
    /// from `queue`, as `how`, under its `process` span `parent`.
    #[cfg(feature = "tracing")]
    fn settle(
        telemetry: &Telemetry,
        queue: &str,
        delivery: &amqp_proto::Delivery,
        how: Settlement,
        parent: &tracing::Span,
    ) -> Self {
        if !tracing::enabled!(target: "amqp::messaging", tracing::Level::DEBUG) {
            return Self::default();
        }
        let (operation, requeue) = match how {
            Settlement::Ack { .. } => ("ack", None),
            Settlement::Nack { requeue, .. } => ("nack", Some(requeue)),
            Settlement::Reject { requeue } => ("reject", Some(requeue)),
        };
        let otel_name = span_name(telemetry.spans.names, operation, queue);
        let destination = destination(&delivery.exchange, &delivery.routing_key, Some(queue));
        let peer = telemetry.peer();
        let span = tracing::debug_span!(
            target: "amqp::messaging",
            parent: parent,
            "settle",
            "otel.name" = otel_name.as_str(),
            "otel.kind" = "client",
            "otel.status_code" = tracing::field::Empty,
            "messaging.system" = "rabbitmq",
            "messaging.operation.name" = operation,
            "messaging.operation.type" = "settle",
            "messaging.destination.name" = destination.as_str(),
            "messaging.rabbitmq.message.delivery_tag" = delivery.delivery_tag,
            "rabbitmq.channel.id" = delivery.channel,
            "rabbitmq.requeue" = requeue,
            "server.address" = peer.address.as_str(),
            "server.port" = peer.port,
            "error.type" = tracing::field::Empty,
        );
        Self {
            span: Some(Box::new(span)),
        }
    }

    /// The `tracing` span, for the application to enter or instrument
    /// with (`Span::none()` when there is none).
    #[cfg(feature = "tracing")]
    #[must_use]
    pub fn span(&self) -> tracing::Span {
        self.span
            .as_deref()
            .cloned()
            .unwrap_or_else(tracing::Span::none)
    }

    /// True if a subscriber records this span.
    #[must_use]
    #[inline]
    pub fn is_recording(&self) -> bool {
        #[cfg(feature = "tracing")]
        return self.span.is_some();
        #[cfg(not(feature = "tracing"))]
        false
    }

    /// Ends a publish: records its confirm sequence and its failure, if
    /// any (one test when nobody records the span).
    #[inline]
    pub fn published<T>(&self, outgoing: &Outgoing<'_>, result: &crate::Result<T>) {
        #[cfg(feature = "tracing")]
        if self.span.is_some() {
            self.record_sequence(outgoing.sequence());
            if let Err(error) = result {
                self.failed(error);
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (outgoing, result);
    }

    /// Records the publish's confirm sequence number.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    #[inline]
    pub fn record_sequence(&self, sequence: Option<u64>) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            if let Some(sequence) = sequence {
                span.record("rabbitmq.publish.sequence", sequence);
            }
        }
    }

    /// Records what a `basic.get` got: a message, or none (`get-empty`).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn record_get(&self, queue: &ShortString, message: Option<&amqp_proto::GetMessage>) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            let Some(message) = message else {
                span.record("rabbitmq.get.empty", true);
                return;
            };
            let queue = queue.to_string_lossy();
            let destination = destination(&message.exchange, &message.routing_key, Some(&queue));
            span.record("messaging.destination.name", destination.as_str());
            span.record(
                "messaging.rabbitmq.destination.routing_key",
                message.routing_key.to_string_lossy().as_ref(),
            );
            span.record(
                "messaging.rabbitmq.message.delivery_tag",
                message.delivery_tag,
            );
            span.record("rabbitmq.delivery.redelivered", message.redelivered);
            let (message_id, correlation_id) = ids(&message.content.header.properties);
            if let Some(id) = message_id {
                span.record("messaging.message.id", id.as_ref());
            }
            if let Some(id) = correlation_id {
                span.record("messaging.message.conversation_id", id.as_ref());
            }
        }
    }

    /// Records how the delivery was settled, and ends the span.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    #[inline]
    pub fn settled(&mut self, how: Settlement) {
        #[cfg(feature = "tracing")]
        if let Some(span) = self.span.take() {
            let (settle, requeue) = match how {
                Settlement::Ack { .. } => ("ack", None),
                Settlement::Nack { requeue, .. } => ("nack", Some(requeue)),
                Settlement::Reject { requeue } => ("reject", Some(requeue)),
            };
            span.record("rabbitmq.settle", settle);
            if let Some(requeue) = requeue {
                span.record("rabbitmq.requeue", requeue);
            }
        }
    }

    /// Records the failure the operation ended with.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    #[inline]
    pub fn failed(&self, error: &Error) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            span.record("error.type", error_type(error));
            span.record("otel.status_code", "ERROR");
        }
    }

    /// Records `result`'s failure, if any, and hands it back.
    #[inline]
    pub fn outcome<T>(&self, result: crate::Result<T>) -> crate::Result<T> {
        if let Err(error) = &result {
            self.failed(error);
        }
        result
    }
}

/// Ends a recorded span out of line, so that dropping a message span
/// nobody records is a test of one word, inlined where it happens.
#[cfg(feature = "tracing")]
impl Drop for MessageSpan {
    #[inline]
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            end(span);
        }
    }
}

#[cfg(feature = "tracing")]
#[inline(never)]
fn end(span: Box<tracing::Span>) {
    drop(span);
}

/// What a consumer names its deliveries' `process` spans with: the
/// broker and the queue it consumes from. An adapter's consumer keeps one
/// and opens a span with [`open`](Self::open) as it hands each delivery
/// over (never for deliveries still buffered).
#[derive(Debug, Clone, Default)]
pub struct ProcessSpans {
    telemetry: std::sync::Arc<Telemetry>,
    queue: String,
}

impl ProcessSpans {
    /// For a consumer of `queue` on the connection `telemetry` describes.
    #[must_use]
    pub fn new(telemetry: &std::sync::Arc<Telemetry>, queue: &ShortString) -> Self {
        Self {
            telemetry: std::sync::Arc::clone(telemetry),
            queue: queue.to_string_lossy().into_owned(),
        }
    }

    /// What the hand-off of `delivery` now starts: its `process` span,
    /// the observer's `on_delivery`, and the clock of its processing time
    /// (`None` when no subscriber records spans and there is no observer).
    #[must_use]
    #[inline]
    pub fn open(&self, delivery: &amqp_proto::Delivery) -> HandedOver {
        // A hook that needs spans has nothing to extract into without one.
        #[cfg(feature = "tracing")]
        let watched = self.telemetry.watch == Watch::Always || wanted();
        #[cfg(not(feature = "tracing"))]
        let watched = self.telemetry.watch == Watch::Always;
        if !watched {
            return None;
        }
        let handover = self.open_watched(delivery);
        handover
            .is_needed()
            .then(|| Box::new(std::sync::Mutex::new(handover)))
    }

    /// [`open`](Self::open) when a span or an observer may wait for the
    /// delivery.
    #[inline(never)]
    fn open_watched(&self, delivery: &amqp_proto::Delivery) -> Handover {
        #[cfg(feature = "tracing")]
        let span = {
            let span = MessageSpan::process(&self.telemetry, &self.queue, delivery);
            if let (Some(hook), Some(headers)) = (
                &self.telemetry.trace_context,
                &delivery.properties().headers,
            ) {
                hook.extract(&span.span(), &amqp_proto::propagation::Headers(headers));
            }
            span
        };
        #[cfg(not(feature = "tracing"))]
        let span = MessageSpan::default();
        let observed = self.telemetry.observer.as_ref().map(|observer| {
            observer.on_delivery(&DeliveryInfo {
                queue: &self.queue,
                delivery,
            });
            (std::sync::Arc::clone(observer), std::time::Instant::now())
        });
        Handover {
            #[cfg(feature = "tracing")]
            settle_spans: (self.telemetry.spans.settle && span.is_recording())
                .then(|| Box::new(self.clone())),
            span,
            observed,
        }
    }
}

/// What [`ProcessSpans::open`] gives a delivery: its [`Handover`], boxed
/// (a delivery nobody watches carries one empty word), and locked, since
/// a delivery's settlement may come from any thread.
pub type HandedOver = Option<Box<std::sync::Mutex<Handover>>>;

/// What a delivery carries from its hand-off to its settlement: its
/// `process` span and, for the observer, when it was handed over.
#[derive(Default)]
pub struct Handover {
    span: MessageSpan,
    observed: Option<(std::sync::Arc<dyn Observer>, std::time::Instant)>,
    /// What names a settle span, when they are asked for.
    #[cfg(feature = "tracing")]
    settle_spans: Option<Box<ProcessSpans>>,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover")
            .field("span", &self.span)
            .field("observed", &self.observed.is_some())
            .finish()
    }
}

impl Handover {
    /// True if anything waits for the settlement (a span being recorded,
    /// an observer).
    #[must_use]
    pub fn is_needed(&self) -> bool {
        self.span.is_recording() || self.observed.is_some()
    }

    /// The `process` span.
    #[must_use]
    pub fn message_span(&self) -> &MessageSpan {
        &self.span
    }

    /// The `settle` span of settling `delivery` as `how`, a child of its
    /// `process` span, if settle spans are on and it is the first
    /// settlement; it ends when dropped.
    #[must_use]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn settle_span(&self, how: Settlement, delivery: &amqp_proto::Delivery) -> MessageSpan {
        #[cfg(feature = "tracing")]
        if let (Some(spans), Some(parent)) = (&self.settle_spans, &self.span.span) {
            return MessageSpan::settle(&spans.telemetry, &spans.queue, delivery, how, parent);
        }
        MessageSpan::default()
    }

    /// The delivery was settled as `how` (or could not be, with `error`):
    /// ends the span and tells the observer. Only the first call counts.
    pub fn settled(&mut self, how: Settlement, error: Option<&Error>) {
        match error {
            None => self.span.settled(how),
            Some(error) => self.span.failed(error),
        }
        if let Some((observer, handed_over)) = self.observed.take() {
            observer.on_settle(&SettleInfo {
                how,
                processing: handed_over.elapsed(),
                failed: error.is_some(),
            });
        }
    }
}

/// The message and correlation ids, as text.
#[cfg(feature = "tracing")]
fn ids(
    properties: &BasicProperties,
) -> (
    Option<std::borrow::Cow<'_, str>>,
    Option<std::borrow::Cow<'_, str>>,
) {
    (
        properties
            .message_id
            .as_ref()
            .map(ShortString::to_string_lossy),
        properties
            .correlation_id
            .as_ref()
            .map(ShortString::to_string_lossy),
    )
}

/// A `connect` or `recover` span (target `amqp::connection`), held by the
/// session from the attempt until the connection opened (or recovered)
/// or failed; nothing without the `tracing` feature or a subscriber.
#[derive(Debug, Default)]
pub struct LifecycleSpan {
    #[cfg(feature = "tracing")]
    span: Option<tracing::Span>,
}

/// A `connect` span's `otel.name`: the node it connects to.
#[cfg(feature = "tracing")]
fn connect_span_name(peer: &Peer) -> String {
    format!("connect {}:{}", peer.address, peer.port)
}

impl LifecycleSpan {
    /// The `connect` span (kind client) of the `attempt`th connection
    /// attempt (1 for the first of a recovery, or of the connection).
    #[must_use]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn connect(peer: &Peer, attempt: u32, recovery: bool) -> Self {
        #[cfg(feature = "tracing")]
        {
            if !tracing::enabled!(target: "amqp::connection", tracing::Level::INFO) {
                return Self::default();
            }
            let otel_name = connect_span_name(peer);
            let span = tracing::info_span!(
                target: "amqp::connection",
                "connect",
                "otel.name" = otel_name.as_str(),
                "otel.kind" = "client",
                "otel.status_code" = tracing::field::Empty,
                "messaging.system" = "rabbitmq",
                "network.protocol.name" = "amqp",
                "network.protocol.version" = "0.9.1",
                "server.address" = peer.address.as_str(),
                "server.port" = peer.port,
                "rabbitmq.connection.attempt" = attempt,
                "rabbitmq.connection.recovery" = recovery,
                "error.type" = tracing::field::Empty,
            );
            Self { span: Some(span) }
        }
        #[cfg(not(feature = "tracing"))]
        Self::default()
    }

    /// The `recover` span (kind internal) of a connection lost with
    /// recovery on.
    #[must_use]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn recover(peer: &Peer, cause: &ConnectionError) -> Self {
        #[cfg(feature = "tracing")]
        {
            if !tracing::enabled!(target: "amqp::connection", tracing::Level::INFO) {
                return Self::default();
            }
            let span = tracing::info_span!(
                target: "amqp::connection",
                "recover",
                "otel.name" = "recover",
                "otel.kind" = "internal",
                "otel.status_code" = tracing::field::Empty,
                "messaging.system" = "rabbitmq",
                "server.address" = peer.address.as_str(),
                "server.port" = peer.port,
                "rabbitmq.recovery.cause" = connection_error_type(cause),
                "rabbitmq.recovery.attempts" = tracing::field::Empty,
                "error.type" = tracing::field::Empty,
            );
            Self { span: Some(span) }
        }
        #[cfg(not(feature = "tracing"))]
        Self::default()
    }

    /// Names `peer` as the node the attempt's socket reached (a recovery
    /// attempt's span starts before the address is chosen).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn record_peer(&self, peer: &Peer) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            span.record("server.address", peer.address.as_str());
            span.record("server.port", peer.port);
            span.record("otel.name", connect_span_name(peer).as_str());
        }
    }

    /// Records how many connection attempts the recovery made.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn record_attempts(&self, attempts: u32) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            span.record("rabbitmq.recovery.attempts", attempts);
        }
    }

    /// Ends the span with the failure that ended the attempt.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn failed(self, error: &ConnectionError) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            span.record("error.type", connection_error_type(error));
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Connection events at `amqp::connection`, from the session's event
/// sorting (both adapters). Without the `tracing` feature these do
/// nothing.
pub(crate) mod events {
    use super::Peer;
    #[cfg(feature = "tracing")]
    use super::{connection_error_type, reply_code_name};
    #[cfg(feature = "tracing")]
    use amqp_proto::Initiator;
    use amqp_proto::{CloseReason, ConnectionError, Tuning};

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn opened(peer: &Peer, tuning: &Tuning) {
        #[cfg(feature = "tracing")]
        tracing::event!(
            target: "amqp::connection",
            tracing::Level::INFO,
            server.address = peer.address.as_str(),
            server.port = peer.port,
            frame_max = tuning.frame_max,
            channel_max = tuning.channel_max,
            heartbeat = tuning.heartbeat,
            "connection.opened"
        );
    }

    /// The end of a connection: INFO when the application closed it, WARN
    /// for anything an operator should hear of (the server's close, a
    /// dead peer, a broken socket).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn closed(peer: &Peer, error: &ConnectionError) {
        #[cfg(feature = "tracing")]
        {
            let by_application = matches!(
                error,
                ConnectionError::Closed(reason) if reason.initiator == Initiator::Client
                    && reason.code == amqp_proto::spec::constants::ReplyCode::REPLY_SUCCESS
            );
            let error_type = connection_error_type(error);
            if by_application {
                tracing::event!(
                    target: "amqp::connection",
                    tracing::Level::INFO,
                    server.address = peer.address.as_str(),
                    server.port = peer.port,
                    "connection.closed"
                );
            } else {
                tracing::event!(
                    target: "amqp::connection",
                    tracing::Level::WARN,
                    server.address = peer.address.as_str(),
                    server.port = peer.port,
                    error.type = error_type,
                    reason = %error,
                    "connection.closed"
                );
            }
        }
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn blocked(peer: &Peer, reason: &str) {
        #[cfg(feature = "tracing")]
        tracing::event!(
            target: "amqp::connection",
            tracing::Level::WARN,
            server.address = peer.address.as_str(),
            server.port = peer.port,
            reason,
            "connection.blocked"
        );
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn unblocked(peer: &Peer) {
        #[cfg(feature = "tracing")]
        tracing::event!(
            target: "amqp::connection",
            tracing::Level::INFO,
            server.address = peer.address.as_str(),
            server.port = peer.port,
            "connection.unblocked"
        );
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn recovered(peer: &Peer) {
        #[cfg(feature = "tracing")]
        tracing::event!(
            target: "amqp::connection",
            tracing::Level::INFO,
            server.address = peer.address.as_str(),
            server.port = peer.port,
            "connection.recovered"
        );
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn recovery_given_up(peer: &Peer, error: &ConnectionError) {
        #[cfg(feature = "tracing")]
        tracing::event!(
            target: "amqp::connection",
            tracing::Level::WARN,
            server.address = peer.address.as_str(),
            server.port = peer.port,
            error.type = connection_error_type(error),
            reason = %error,
            "connection.recovery_given_up"
        );
    }

    /// A channel the server closed with an error code (the application's
    /// own closes, and the server's 200, are not worth a warning).
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn channel_closed(peer: &Peer, channel: u16, reason: &CloseReason) {
        #[cfg(feature = "tracing")]
        if reason.initiator == Initiator::Server
            && reason.code != amqp_proto::spec::constants::ReplyCode::REPLY_SUCCESS
        {
            tracing::event!(
                target: "amqp::connection",
                tracing::Level::WARN,
                server.address = peer.address.as_str(),
                server.port = peer.port,
                rabbitmq.channel.id = channel,
                error.type = reply_code_name(reason.code),
                reply_code = reason.code.0,
                reply_text = reason.text.as_str(),
                "channel.closed"
            );
        }
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn consumer_cancelled(peer: &Peer, channel: u16, consumer_tag: &str) {
        #[cfg(feature = "tracing")]
        tracing::event!(
            target: "amqp::connection",
            tracing::Level::WARN,
            server.address = peer.address.as_str(),
            server.port = peer.port,
            rabbitmq.channel.id = channel,
            rabbitmq.consumer.tag = consumer_tag,
            "consumer.cancelled_by_server"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_proto::CloseReason;

    #[test]
    fn error_types_come_from_a_closed_list() {
        let closed = |code| {
            Error::ChannelClosed(CloseReason {
                code: ReplyCode(code),
                text: String::new(),
                class_id: 0,
                method_id: 0,
                initiator: amqp_proto::Initiator::Server,
            })
        };
        assert_eq!(error_type(&closed(406)), "precondition-failed");
        assert_eq!(error_type(&closed(404)), "not-found");
        assert_eq!(error_type(&closed(200)), "closed");
        assert_eq!(error_type(&closed(999)), "_OTHER");
        assert_eq!(error_type(&Error::Nacked(3)), "nack");
        assert_eq!(
            error_type(&Error::ConnectionClosed(ConnectionError::HeartbeatTimeout)),
            "heartbeat-timeout"
        );
        assert_eq!(
            error_type(&Error::ConnectionClosed(ConnectionError::TransportClosed(
                "reset".into()
            ))),
            "io"
        );
    }

    #[test]
    fn destinations_name_the_default_exchange_and_the_queue() {
        assert_eq!(
            destination(&"".into(), &"jobs".into(), None),
            "amq.default:jobs"
        );
        assert_eq!(
            destination(&"logs".into(), &"a.b".into(), Some("q")),
            "logs:a.b:q"
        );
        assert_eq!(
            destination(&"logs".into(), &"a.b".into(), Some("")),
            "logs:a.b"
        );
        assert!(anonymous("amq.gen-XyZ"));
        assert!(anonymous("amq.rabbitmq.reply-to.g1h2"));
        assert!(!anonymous("orders"));
    }
}
