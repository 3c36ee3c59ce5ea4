//! Whether any subscriber may want the message spans, answered from one
//! byte.
//!
//! `tracing::enabled!` decodes the global level filter and then its
//! callsite's cached interest on every call: about a dozen instructions,
//! which every publish and delivery would pay even when each subscriber
//! filters `amqp::messaging` out (issue #18 allows 1% of a publish). Here
//! a callsite of our own stands for "a span at `amqp::messaging`, INFO";
//! tracing-core keeps its interest current the way it keeps every
//! callsite's (it calls [`Callsite::set_interest`] when the callsite is
//! registered, when a dispatcher is registered and when the interest cache
//! is rebuilt), and we keep that interest in a byte whose zero means "no
//! subscriber wants these spans".
//!
//! The answer is a prefilter, never the last word: the span macros behind
//! a `true` still ask their own callsites, so a stale "maybe" (a scoped
//! dispatcher dropped since the last rebuild) costs a span nobody records,
//! never a span recorded against a filter.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;

use tracing_core::callsite::{self, Callsite};
use tracing_core::field::FieldSet;
use tracing_core::metadata::{Kind, Level, LevelFilter, Metadata};
use tracing_core::subscriber::Interest;

/// No subscriber wants the spans.
const NEVER: u8 = 0;
/// Not registered yet: the first check registers the callsite.
const UNREGISTERED: u8 = 1;
/// Some subscriber decides span by span (a dynamic filter).
const SOMETIMES: u8 = 2;
/// Every subscriber that has a say wants them.
const ALWAYS: u8 = 3;

static INTEREST: AtomicU8 = AtomicU8::new(UNREGISTERED);
static REGISTRATION: Once = Once::new();

/// The callsite whose interest is the message spans'.
struct MessageSpans;

static MESSAGE_SPANS: MessageSpans = MessageSpans;

static METADATA: Metadata<'static> = Metadata::new(
    "amqp message spans",
    "amqp::messaging",
    Level::INFO,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&[], tracing_core::identify_callsite!(&MESSAGE_SPANS)),
    Kind::SPAN,
);

impl Callsite for MessageSpans {
    fn set_interest(&self, interest: Interest) {
        let value = if interest.is_never() {
            NEVER
        } else if interest.is_always() {
            ALWAYS
        } else {
            SOMETIMES
        };
        INTEREST.store(value, Ordering::Relaxed);
    }

    fn metadata(&self) -> &Metadata<'_> {
        &METADATA
    }
}

/// True if a subscriber may want a span at `amqp::messaging`, INFO: one
/// load and a compare when none does (no subscriber, or each filters the
/// target out).
#[inline(always)]
pub(crate) fn message_spans_wanted() -> bool {
    message_spans_byte() != NEVER && message_spans_maybe()
}

/// The byte itself: 0 if no subscriber wants the spans, for a caller that
/// tests it together with flags of its own.
#[inline(always)]
pub(crate) fn message_spans_byte() -> u8 {
    // Spans compiled out by tracing's `max_level_*` features: a constant.
    if tracing::level_filters::STATIC_MAX_LEVEL < LevelFilter::INFO {
        return NEVER;
    }
    INTEREST.load(Ordering::Relaxed)
}

/// The interest is not "never": register on first use, then ask the
/// dispatcher when the interest is per span.
#[cold]
#[inline(never)]
fn message_spans_maybe() -> bool {
    REGISTRATION.call_once(|| callsite::register(&MESSAGE_SPANS));
    match INTEREST.load(Ordering::Relaxed) {
        NEVER => false,
        ALWAYS => true,
        _ => tracing::dispatcher::get_default(|dispatch| dispatch.enabled(&METADATA)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::filter::{LevelFilter as Filter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    /// A layer that records nothing: only its filter matters here.
    struct Quiet;
    impl<S: tracing::Subscriber> Layer<S> for Quiet {}

    fn with<T>(subscriber: impl tracing::Subscriber + Send + Sync, f: impl FnOnce() -> T) -> T {
        tracing::subscriber::with_default(subscriber, f)
    }

    // One test, because the interest is process-wide and each scoped
    // dispatcher rebuilds it: run in parallel, the cases would see each
    // other's subscribers.
    #[test]
    fn follows_each_subscribers_filter() {
        let off = Targets::new()
            .with_default(Filter::INFO)
            .with_target("amqp::messaging", Filter::OFF);
        let registry = tracing_subscriber::registry().with(Quiet.with_filter(off));
        assert!(!with(registry, message_spans_wanted));
        // Answered by the byte, not by asking the dispatcher.
        assert_eq!(INTEREST.load(Ordering::Relaxed), NEVER);

        let on = Targets::new().with_default(Filter::INFO);
        assert!(with(
            tracing_subscriber::registry().with(Quiet.with_filter(on)),
            message_spans_wanted
        ));
        assert_eq!(INTEREST.load(Ordering::Relaxed), ALWAYS);

        let warn = Targets::new().with_default(Filter::WARN);
        assert!(!with(
            tracing_subscriber::registry().with(Quiet.with_filter(warn)),
            message_spans_wanted
        ));
        assert_eq!(INTEREST.load(Ordering::Relaxed), NEVER);

        // A filter that looks at more than the callsite decides per span.
        let dynamic = tracing_subscriber::filter::dynamic_filter_fn(|metadata, _| {
            metadata.target() == "amqp::messaging"
        });
        assert!(with(
            tracing_subscriber::registry().with(Quiet.with_filter(dynamic)),
            message_spans_wanted
        ));
        assert_eq!(INTEREST.load(Ordering::Relaxed), SOMETIMES);
    }
}
