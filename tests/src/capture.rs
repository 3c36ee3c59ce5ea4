//! A `tracing` layer that keeps what it sees, for tests that check the
//! adapters' spans and events: each span's name, target, fields (at
//! creation and recorded later) and whether it closed, and each event's
//! level, target, message and fields.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span as the layer saw it.
#[derive(Debug, Clone, Default)]
pub struct CapturedSpan {
    /// The span's `tracing` name (`publish`, `process`, ...).
    pub name: String,
    /// Its target.
    pub target: String,
    /// Fields given a value when the span was created.
    pub at_creation: BTreeMap<String, String>,
    /// Every field's latest value (creation and records).
    pub fields: BTreeMap<String, String>,
    /// True once the span closed.
    pub closed: bool,
    /// The name of its parent span, if it has one.
    pub parent: Option<String>,
}

/// An event as the layer saw it.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    /// Its level.
    pub level: Level,
    /// Its target.
    pub target: String,
    /// Its fields, the message under `message`.
    pub fields: BTreeMap<String, String>,
}

/// What the layer saw so far, shared with the test.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    spans: Arc<Mutex<Vec<(u64, CapturedSpan)>>>,
    events: Arc<Mutex<Vec<CapturedEvent>>>,
}

impl Captured {
    /// The spans seen, in creation order.
    #[must_use]
    pub fn spans(&self) -> Vec<CapturedSpan> {
        let spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        spans.iter().map(|(_, span)| span.clone()).collect()
    }

    /// The spans named `name`.
    #[must_use]
    pub fn spans_named(&self, name: &str) -> Vec<CapturedSpan> {
        self.spans()
            .into_iter()
            .filter(|span| span.name == name)
            .collect()
    }

    /// The events seen, in order.
    #[must_use]
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn with_span(&self, id: &Id, change: impl FnOnce(&mut CapturedSpan)) {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, span)) = spans
            .iter_mut()
            .rev()
            .find(|(key, _)| *key == id.into_u64())
        {
            change(span);
        }
    }
}

/// Installs a capturing subscriber as this thread's default until the
/// guard is dropped; returns what it captures.
#[must_use]
pub fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(CaptureLayer(captured.clone()));
    let guard = tracing::subscriber::set_default(subscriber);
    // A callsite another test thread registered while the dispatcher was
    // being added can keep the `never` it computed without it (tracing
    // caches interest across threads); asking again closes that window.
    tracing::callsite::rebuild_interest_cache();
    (captured, guard)
}

struct CaptureLayer(Captured);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let parent = context
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.name().to_owned());
        let mut span = CapturedSpan {
            name: attributes.metadata().name().to_owned(),
            target: attributes.metadata().target().to_owned(),
            parent,
            ..CapturedSpan::default()
        };
        attributes.record(&mut Fields(&mut span.at_creation));
        span.fields.clone_from(&span.at_creation);
        self.0
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id.into_u64(), span));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        self.0
            .with_span(id, |span| values.record(&mut Fields(&mut span.fields)));
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        self.0.with_span(&id, |span| span.closed = true);
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(CapturedEvent {
                level: *event.metadata().level(),
                target: event.metadata().target().to_owned(),
                fields,
            });
    }
}

/// The WARN and ERROR events of the whole test process, from a global
/// subscriber that [`NoErrors::watch`] installs on first use (a binary
/// that uses it must not install another global one). Spans and the lower
/// levels are filtered out at the callsite, so the suites it watches run
/// as they would without it.
fn watched() -> &'static Captured {
    static WATCHED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    WATCHED.get_or_init(|| {
        use tracing_subscriber::Layer as _;
        let captured = Captured::default();
        let layer = CaptureLayer(captured.clone())
            .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
        // A thread-local subscriber a test installs still takes that
        // test's events; the suites watched here install none.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        captured
    })
}

/// A test's promise that the library reports nothing at ERROR, whatever
/// the fault (errors go to the caller): when dropped at the end of a test
/// that did not fail otherwise, it fails the test if any ERROR event was
/// seen in the process so far, naming it.
#[derive(Debug)]
#[must_use]
pub struct NoErrors(());

impl NoErrors {
    /// Starts watching (idempotent across the tests of a binary).
    pub fn watch() -> Self {
        let _ = watched();
        Self(())
    }

    /// The WARN events seen so far in the process, for a test to check
    /// that an occurrence is reported once.
    #[must_use]
    pub fn warnings(&self) -> Vec<CapturedEvent> {
        watched()
            .events()
            .into_iter()
            .filter(|event| event.level == Level::WARN)
            .collect()
    }
}

impl Drop for NoErrors {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let errors: Vec<CapturedEvent> = watched()
            .events()
            .into_iter()
            .filter(|event| event.level == Level::ERROR)
            .collect();
        assert!(errors.is_empty(), "events at ERROR: {errors:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::NoErrors;

    #[test]
    #[should_panic(expected = "events at ERROR")]
    fn an_error_event_fails_the_watching_test() {
        let _no_errors = NoErrors::watch();
        tracing::error!(target: "amqp::connection", "something went wrong");
    }
}
