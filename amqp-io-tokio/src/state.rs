//! The state every handle and the driver share: the session (the core and
//! who waits for what, from `amqp-io-common`) with wakers for waiters.
//! Handles queue commands into the core under the lock and wake the
//! driver; the driver feeds the core and has the session sort its events
//! (a `Notify` wakes everything polled by condition).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use amqp_io_common::session::{Attach, Session};
use amqp_io_common::telemetry::Telemetry;
use amqp_io_common::ConnectOptions;
use amqp_proto::{ChannelHandle, Failure, RequestId};
use tokio::sync::{watch, Notify};

pub(crate) use amqp_io_common::session::Reply;

/// What this adapter attaches to the session's records: wakers.
pub(crate) struct Tokio;

impl Attach for Tokio {
    type Waker = Waker;
    type Channel = ChannelExtra;
    type Consumer = Option<Waker>;

    fn consumer_changed(consumer: &mut Option<Waker>) {
        wake(consumer);
    }

    fn returns_changed(channel: &mut ChannelExtra) {
        wake(&mut channel.returns_waker);
    }
}

/// What this adapter keeps per channel: who waits for its returns.
#[derive(Default)]
pub(crate) struct ChannelExtra {
    pub(crate) returns_waker: Option<Waker>,
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// Everything behind the connection lock: the session, and what only this
/// adapter needs (the blocked watch, the socket's address, how to connect
/// again and whom to tell).
pub(crate) struct State {
    pub(crate) session: Session<Tokio>,
    pub(crate) blocked: watch::Sender<Option<String>>,
    /// This side's socket address.
    pub(crate) local_addr: Option<std::net::SocketAddr>,
}

amqp_io_common::deref_session!(State, Tokio);

impl State {
    /// A connection opened with `options` on its address `address`.
    pub(crate) fn new(options: ConnectOptions, address: usize) -> Self {
        Self {
            session: Session::open(options, address, Instant::now()),
            blocked: watch::Sender::new(None),
            local_addr: None,
        }
    }

    /// Sorts the core's events to their waiters; `live_confirmations` is
    /// how many [`Confirmation`](crate::Confirmation)s exist.
    pub(crate) fn dispatch(&mut self, live_confirmations: usize) {
        self.session.dispatch(live_confirmations, Instant::now());
        for change in self.session.take_blocked_changes() {
            self.blocked.send_replace(change);
        }
    }
}

/// The state, and the two ways of waking: the driver (commands queued,
/// room freed) and everyone polling a condition (after each driver pass).
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Handles to driver: there is output to write or room to read.
    pub(crate) wake_driver: Notify,
    /// Driver to handles: the state moved on; check your condition.
    pub(crate) changed: Notify,
    /// Driver to publishers held back by a full confirm window: it has
    /// drained to half (or the channel or connection closed). Waking them
    /// on every ack instead would cost a thread switch per few messages.
    pub(crate) window: Notify,
    /// [`Confirmation`](crate::Confirmation)s in existence. Raised under
    /// the lock, so the driver's dispatch (also under it) never misses
    /// one; lowered on drop without the lock, which costs a confirmation
    /// nothing but an atomic decrement.
    pub(crate) live_confirmations: AtomicUsize,
    /// What spans need, readable without the lock.
    pub(crate) telemetry: Arc<Telemetry>,
}

impl Shared {
    pub(crate) fn new(state: State) -> Self {
        Self {
            telemetry: Arc::clone(state.telemetry()),
            state: Mutex::new(state),
            wake_driver: Notify::new(),
            changed: Notify::new(),
            window: Notify::new(),
            live_confirmations: AtomicUsize::new(0),
        }
    }

    /// Sorts the core's events to their waiters. The driver calls it in
    /// the same critical section as every change it makes to the core, so
    /// no handle ever sees the core ahead of the records (a publish settled
    /// whose nack is not sorted yet, a channel id freed with its old
    /// channel's events still queued).
    pub(crate) fn dispatch(&self, state: &mut State) {
        state.dispatch(self.live_confirmations.load(Ordering::Acquire));
    }

    /// Waits for `request`'s reply on `channel`, failing it after
    /// `timeout`; dropping the future gives back what the reply carries.
    pub(crate) fn reply(
        self: &Arc<Self>,
        channel: ChannelHandle,
        request: RequestId,
        timeout: std::time::Duration,
    ) -> ReplyFuture {
        self.lock().set_timeout(request, timeout, Instant::now());
        // The driver sleeps until the core's next deadline: this one may
        // be sooner.
        self.wake_driver.notify_one();
        ReplyFuture {
            shared: Arc::clone(self),
            channel,
            request,
            done: false,
        }
    }

    /// Locks the state; a panic elsewhere while it was held leaves it
    /// usable (no code of ours panics under it by design).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request's reply, awaited; see [`Shared::reply`].
pub(crate) struct ReplyFuture {
    shared: Arc<Shared>,
    channel: ChannelHandle,
    request: RequestId,
    done: bool,
}

impl Future for ReplyFuture {
    type Output = Result<Reply, Failure>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let request = self.request;
        let outcome = {
            let mut state = self.shared.lock();
            match state.poll_reply(request, || context.waker().clone()) {
                Some(outcome) => Some(outcome),
                // The core fails every request before it reports the end;
                // this guards a driver that stopped without a word.
                None => state
                    .closed()
                    .map(|error| Err(Failure::Connection(error.clone()))),
            }
        };
        match outcome {
            Some(outcome) => {
                self.done = true;
                Poll::Ready(outcome)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for ReplyFuture {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        let idle = state.core.queued_output() == 0;
        state.abandon_reply(self.channel, self.request);
        let queued = idle && state.core.queued_output() > 0;
        drop(state);
        if queued {
            self.shared.wake_driver.notify_one();
        }
    }
}
