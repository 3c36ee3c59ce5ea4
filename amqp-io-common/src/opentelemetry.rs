//! OpenTelemetry trace propagation through message headers (feature
//! `opentelemetry`), for applications that export their `tracing` spans
//! with `tracing-opentelemetry`.
//!
//! With the feature on, every connection propagates by default
//! ([`ConnectOptions::trace_context`](crate::ConnectOptions::trace_context)
//! starts as [`OpenTelemetryContext::default`]):
//!
//! - a publish writes the context of its `publish` span into the
//!   message's headers, or the ambient span's when the `publish` span is
//!   filtered out, through the global text-map propagator
//!   (`opentelemetry::global::set_text_map_propagator`; W3C
//!   `traceparent`/`tracestate` with `TraceContextPropagator`). A message
//!   whose headers already carry a `traceparent` is left as the
//!   application wrote it.
//! - a delivery's `process` span takes the context the headers carry as
//!   its parent when the application has no span of its own around the
//!   hand-off (one trace from publisher to consumer), and as a link when
//!   it has one (the consumer's trace stays its own, pointing at the
//!   publisher's); [`ProcessParent`] chooses otherwise.
//!
//! The propagator installed by default is OpenTelemetry's no-op one, which
//! writes and reads nothing: propagation starts when the application
//! installs its propagator, as with any OpenTelemetry instrumentation.
//!
//! [`HeaderInjector`] and [`HeaderExtractor`] are the carrier for other
//! uses (a propagator of the application's, baggage):
//!
//! ```
//! use amqp_io_common::opentelemetry::{HeaderExtractor, HeaderInjector};
//! use amqp_proto::codec::FieldTable;
//! use opentelemetry::propagation::{Extractor, Injector};
//!
//! let mut headers = FieldTable::new();
//! HeaderInjector::new(&mut headers).set("baggage", "tenant=blue".to_owned());
//! assert_eq!(HeaderExtractor::new(&headers).get("baggage"), Some("tenant=blue"));
//! ```

use ::opentelemetry::propagation::{Extractor, Injector};
use ::opentelemetry::trace::TraceContextExt;
use amqp_proto::codec::FieldTable;
use amqp_proto::propagation::{Headers, HeadersMut};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::TraceContext;

/// Writes propagation fields into a message's headers table, as long
/// strings (`S`), replacing an entry of the same name.
#[derive(Debug)]
pub struct HeaderInjector<'a>(HeadersMut<'a>);

impl<'a> HeaderInjector<'a> {
    /// An injector writing into `headers`.
    #[must_use]
    pub fn new(headers: &'a mut FieldTable) -> Self {
        Self(HeadersMut(headers))
    }
}

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, &value);
    }
}

/// Reads propagation fields from a delivery's headers table: long strings
/// (`S`) and byte arrays (`x`) that are UTF-8; any other type reads as
/// absent, so a malformed header starts a new trace instead of failing
/// the delivery.
#[derive(Debug, Clone, Copy)]
pub struct HeaderExtractor<'a>(Headers<'a>);

impl<'a> HeaderExtractor<'a> {
    /// An extractor reading from `headers`.
    #[must_use]
    pub fn new(headers: &'a FieldTable) -> Self {
        Self(Headers(headers))
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().collect()
    }
}

/// How a `process` span relates to the context its delivery carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessParent {
    /// Parent when the application has no span around the hand-off, link
    /// when it has one (the semantic conventions' advice: a consumer that
    /// already is in a trace keeps it).
    #[default]
    Automatic,
    /// Always the parent: the `process` span joins the publisher's trace
    /// even inside a span of the application's.
    Parent,
    /// Always a link: every `process` span stays in the consumer's trace.
    Link,
}

/// The [`TraceContext`] of OpenTelemetry: injects and extracts through
/// the global text-map propagator; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenTelemetryContext {
    process_parent: ProcessParent,
}

impl OpenTelemetryContext {
    /// Propagation relating `process` spans to the publisher's as
    /// `process_parent` says.
    #[must_use]
    pub fn new(process_parent: ProcessParent) -> Self {
        Self { process_parent }
    }
}

/// The OpenTelemetry context of `span`, if it has a valid one (a span that
/// is filtered out, or recorded by no OpenTelemetry layer, has none).
fn valid_context(span: &tracing::Span) -> Option<::opentelemetry::Context> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    context.span().span_context().is_valid().then_some(context)
}

/// The context of the application's current span, if it is in one with a
/// valid context. Most publishes run outside any span: asking the
/// dispatcher for the current span's id first spares them a clone of a
/// span that is not there (a registry lookup and a close, hundreds of
/// instructions a message).
fn ambient_context() -> Option<::opentelemetry::Context> {
    // `id()`, not `is_known()`: a subscriber that knows there is no
    // current span answers "known", with no id.
    let inside =
        tracing::dispatcher::get_default(|dispatch| dispatch.current_span().id().is_some());
    if !inside {
        return None;
    }
    valid_context(&tracing::Span::current())
}

impl TraceContext for OpenTelemetryContext {
    fn inject(&self, span: &tracing::Span, headers: &mut HeadersMut<'_>) {
        let Some(context) = valid_context(span).or_else(ambient_context) else {
            return;
        };
        ::opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(HeadersMut(&mut *headers.0)));
        });
    }

    fn works_without_spans(&self) -> bool {
        false
    }

    fn extract(&self, span: &tracing::Span, headers: &Headers<'_>) {
        if span.is_disabled() {
            return;
        }
        let remote = ::opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(*headers))
        });
        let remote_span = remote.span().span_context().clone();
        if !remote_span.is_valid() {
            return;
        }
        let as_parent = match self.process_parent {
            ProcessParent::Parent => true,
            ProcessParent::Link => false,
            ProcessParent::Automatic => valid_context(&tracing::Span::current()).is_none(),
        };
        // A span already started (entered by someone) can no longer take
        // a parent: it keeps the link instead, so the relation survives.
        if !as_parent || span.set_parent(remote).is_err() {
            span.add_link(remote_span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_proto::codec::{FieldValue, LongString};

    #[test]
    fn the_carrier_writes_long_strings_and_reads_text_of_either_type() {
        let mut headers = FieldTable::new();
        headers.insert(
            "x-bytes",
            FieldValue::ByteArray(bytes::Bytes::from_static(b"raw")),
        );
        headers.insert("x-number", FieldValue::LongInt(7));
        HeaderInjector::new(&mut headers).set("traceparent", "value".to_owned());
        assert_eq!(
            headers.get("traceparent"),
            Some(&FieldValue::LongString(LongString::from("value")))
        );
        let extractor = HeaderExtractor::new(&headers);
        assert_eq!(extractor.get("x-bytes"), Some("raw"));
        assert_eq!(extractor.get("x-number"), None);
        assert_eq!(extractor.get("missing"), None);
        assert_eq!(extractor.keys(), ["x-bytes", "x-number", "traceparent"]);
    }
}
