//! Who waits for which outcome: a registry keyed by request (or channel,
//! for opens), generic over how a waiter is woken. An outcome nobody
//! waits for any more comes back to the session, so what it carries (a
//! message, a consumer, a channel) can be given back to the broker.

use std::hash::Hash;

use amqp_proto::spec::Method;
use amqp_proto::{Failure, GetMessage};

use crate::map::Map;

/// How a waiter is woken once its outcome is in: a task's `Waker`, or
/// nothing for a thread that rechecks after every pass of the connection.
pub trait Wake {
    /// Wakes the waiter.
    fn wake(self);
}

impl Wake for std::task::Waker {
    fn wake(self) {
        Self::wake(self);
    }
}

/// Threads waiting on a condition variable are all woken after each pass
/// of the connection; nothing to do per waiter.
impl Wake for () {
    fn wake(self) {}
}

/// A synchronous request's answer.
#[derive(Debug)]
pub enum Reply {
    /// The reply method (`queue.declare-ok`, `basic.get-empty`, ...).
    Method(Method),
    /// A `basic.get` answered with a message.
    Get(Box<GetMessage>),
    /// A channel opened.
    Opened,
}

/// What a request's waiter receives.
pub type Outcome = Result<Reply, Failure>;

#[derive(Debug)]
enum Slot<W> {
    /// Awaited; the waker of whoever polled last.
    Waiting(Option<W>),
    /// In, not yet taken.
    Ready(Outcome),
    /// The waiter gave up: the outcome goes back to the session.
    Abandoned,
}

/// Outcomes by request, and their waiters.
#[derive(Debug)]
pub(crate) struct Replies<K, W> {
    slots: Map<K, Slot<W>>,
}

impl<K, W> Default for Replies<K, W> {
    fn default() -> Self {
        Self {
            slots: Map::default(),
        }
    }
}

impl<K: Hash + Eq, W: Wake> Replies<K, W> {
    /// Someone will wait for `key`'s outcome.
    pub(crate) fn expect(&mut self, key: K) {
        self.slots.insert(key, Slot::Waiting(None));
    }

    /// True while `key` is awaited or its outcome not taken.
    pub(crate) fn is_expected(&self, key: &K) -> bool {
        matches!(self.slots.get(key), Some(Slot::Waiting(_) | Slot::Ready(_)))
    }

    /// Takes `key`'s outcome if it is in; otherwise keeps `waker` to be
    /// woken when it comes.
    pub(crate) fn poll(&mut self, key: &K, waker: impl FnOnce() -> W) -> Option<Outcome> {
        match self.slots.get_mut(key)? {
            Slot::Waiting(waiting) => {
                *waiting = Some(waker());
                None
            }
            Slot::Ready(_) => match self.slots.remove(key) {
                Some(Slot::Ready(outcome)) => Some(outcome),
                _ => None,
            },
            Slot::Abandoned => None,
        }
    }

    /// The waiter gave up (timed out, or its future was dropped). An
    /// outcome already in is returned, for the caller to use or give back;
    /// one that comes later goes back to the session.
    pub(crate) fn abandon(&mut self, key: K) -> Option<Outcome> {
        match self.slots.insert(key, Slot::Abandoned) {
            Some(Slot::Ready(outcome)) => Some(outcome),
            _ => None,
        }
    }

    /// Forgets `key` (nobody waits, and no outcome will come for it).
    pub(crate) fn forget(&mut self, key: &K) {
        self.slots.remove(key);
    }

    /// Records `key`'s outcome and wakes its waiter. Returns the outcome
    /// when nobody wants it (abandoned, or never expected), so what it
    /// carries can be given back.
    pub(crate) fn answer(&mut self, key: &K, outcome: Outcome) -> Option<Outcome> {
        match self.slots.get_mut(key) {
            Some(slot @ Slot::Waiting(_)) => {
                if let Slot::Waiting(Some(waker)) = std::mem::replace(slot, Slot::Ready(outcome)) {
                    waker.wake();
                }
                None
            }
            Some(Slot::Abandoned) => {
                self.slots.remove(key);
                Some(outcome)
            }
            Some(Slot::Ready(_)) | None => Some(outcome),
        }
    }

    /// Wakes every waiter (the connection ended; their outcomes are in or
    /// will never come).
    pub(crate) fn wake_all(&mut self) {
        for slot in self.slots.values_mut() {
            if let Slot::Waiting(waiting) = slot {
                if let Some(waker) = waiting.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Forgets everything (a new connection starts from nothing).
    pub(crate) fn clear(&mut self) {
        self.wake_all();
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_proto::spec::QueueDeclareOk;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its wakes.
    struct Counter(Arc<AtomicUsize>);

    impl Wake for Counter {
        fn wake(self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ok() -> Outcome {
        Ok(Reply::Method(QueueDeclareOk::default().into()))
    }

    #[test]
    fn an_outcome_wakes_its_waiter_and_is_taken_once() {
        let woken = Arc::new(AtomicUsize::new(0));
        let mut replies = Replies::<u64, Counter>::default();
        replies.expect(1);
        assert!(replies.poll(&1, || Counter(Arc::clone(&woken))).is_none());
        assert!(replies.answer(&1, ok()).is_none());
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert!(replies.poll(&1, || Counter(Arc::clone(&woken))).is_some());
        assert!(replies.poll(&1, || Counter(Arc::clone(&woken))).is_none());
        assert!(!replies.is_expected(&1));
    }

    #[test]
    fn an_abandoned_outcome_comes_back() {
        let mut replies = Replies::<u64, ()>::default();
        replies.expect(1);
        assert!(replies.abandon(1).is_none());
        assert!(replies.answer(&1, ok()).is_some(), "nobody wants it");
        // Answered first, abandoned after: the waiter gets it back.
        replies.expect(2);
        assert!(replies.answer(&2, ok()).is_none());
        assert!(replies.abandon(2).is_some());
        // Never expected.
        assert!(replies.answer(&3, ok()).is_some());
    }
}
