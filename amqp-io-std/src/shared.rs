//! State every handle shares: the core, the socket halves, and the outcomes
//! the core reported that some caller has not collected yet.
//!
//! One thread at a time reads the socket (whoever holds the reader) without
//! holding the state lock, so others can publish and ack meanwhile; it then
//! feeds the bytes to the core under the lock, sorts the events into the
//! records below and wakes every waiter. A waiter that finds the reader
//! taken sleeps on the condition variable instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use amqp_io_common::session::{Attach, ConsumerHandle, Session};
use amqp_io_common::telemetry::Telemetry;
use amqp_io_common::{ConnectOptions, Error, Result};
use amqp_proto::{ChannelHandle, Delivery, Returned};

use crate::transport::{write_until_empty, ReadOutcome, Reader, Writer};

/// The longest one pass sleeps, so that a waiter notices a reader that
/// left without anyone else taking over.
const MAX_PASS: Duration = Duration::from_millis(200);

/// Called with each delivery for a callback consumer.
pub(crate) type DeliveryCallback = Box<dyn FnMut(Delivery) + Send>;
/// Called with each returned message of a channel.
pub(crate) type ReturnCallback = Box<dyn FnMut(Returned) + Send>;
/// Called when the broker blocks (`Some(reason)`) or unblocks (`None`)
/// the connection.
pub(crate) type BlockedCallback = Box<dyn FnMut(Option<&str>) + Send>;

pub(crate) use amqp_io_common::session::Reply;

/// What this adapter attaches to the session's records: callbacks. Its
/// waiters are threads that recheck after every pass, so nothing is woken
/// one by one.
pub(crate) struct Blocking;

impl Attach for Blocking {
    type Waker = ();
    type Channel = ChannelExtra;
    type Consumer = ConsumerExtra;

    fn consumer_changed(_: &mut ConsumerExtra) {}

    fn returns_changed(_: &mut ChannelExtra) {}
}

/// What this adapter keeps per channel, beside the ledger's record.
#[derive(Default)]
pub(crate) struct ChannelExtra {
    pub(crate) return_handler: Option<ReturnCallback>,
}

/// What this adapter keeps per consumer: its callback, if it has one and
/// it is not lent out to a running `drain_events`.
pub(crate) type ConsumerExtra = Option<DeliveryCallback>;

/// Callbacks lent out with what they are to be called with.
#[derive(Default)]
pub(crate) struct CallbackWork {
    pub(crate) deliveries: Vec<Lent<ConsumerHandle, DeliveryCallback, Delivery>>,
    pub(crate) returns: Vec<Lent<ChannelHandle, ReturnCallback, Returned>>,
    pub(crate) blocked: Option<(BlockedCallback, VecDeque<Option<String>>)>,
}

/// One callback lent out of its owner with what it is to be called with.
pub(crate) struct Lent<K, C, T> {
    owner: K,
    callback: C,
    items: VecDeque<T>,
}

impl<K, C, T> From<(K, C, VecDeque<T>)> for Lent<K, C, T> {
    fn from((owner, callback, items): (K, C, VecDeque<T>)) -> Self {
        Self {
            owner,
            callback,
            items,
        }
    }
}

impl CallbackWork {
    /// Calls every callback with its work; returns how many items it
    /// handed over.
    pub(crate) fn run(&mut self) -> usize {
        let mut count = 0;
        for lent in &mut self.deliveries {
            for delivery in lent.items.drain(..) {
                count += 1;
                (lent.callback)(delivery);
            }
        }
        for lent in &mut self.returns {
            for message in lent.items.drain(..) {
                count += 1;
                (lent.callback)(message);
            }
        }
        if let Some((handler, changes)) = &mut self.blocked {
            for change in changes.drain(..) {
                count += 1;
                handler(change.as_deref());
            }
        }
        count
    }
}

/// Everything behind the connection lock: the session, and what only this
/// adapter needs (the socket's writer, TLS, callbacks, how to connect
/// again).
pub(crate) struct Inner {
    pub(crate) session: Session<Blocking>,
    writer: Writer,
    /// Encryption between the core and the socket, for `amqps://`.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Session>,
    pub(crate) blocked_handler: Option<BlockedCallback>,
    /// [`Confirmation`](crate::Confirmation)s in existence: while none
    /// lives, no refused confirm needs keeping.
    pub(crate) live_confirmations: Arc<AtomicUsize>,
}

amqp_io_common::deref_session!(Inner, Blocking);

impl Inner {
    /// A connection opened with `options` on its address `address`.
    pub(crate) fn new(options: ConnectOptions, address: usize, writer: Writer) -> Self {
        Self {
            session: Session::open(options, address, Instant::now()),
            writer,
            #[cfg(feature = "tls")]
            tls: None,
            blocked_handler: None,
            live_confirmations: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes a new socket's writer (and TLS session) for a recovery.
    #[cfg(feature = "tls")]
    pub(crate) fn replace_transport(&mut self, writer: Writer, tls: Option<crate::tls::Session>) {
        self.writer = writer;
        self.tls = tls;
    }

    /// Takes a new socket's writer for a recovery.
    #[cfg(not(feature = "tls"))]
    pub(crate) fn replace_transport(&mut self, writer: Writer) {
        self.writer = writer;
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.writer.local_addr()
    }

    pub(crate) fn set_write_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.writer.set_timeout(timeout)
    }

    /// Encrypts everything from now on (set before the first flush).
    #[cfg(feature = "tls")]
    pub(crate) fn set_tls(&mut self, session: crate::tls::Session) {
        self.tls = Some(session);
    }

    /// Feeds bytes read from the socket to the core (through TLS, if on).
    pub(crate) fn receive(&mut self, raw: &[u8], now: Instant) {
        #[cfg(feature = "tls")]
        if let Some(session) = &mut self.tls {
            let decrypted = session.receive(raw, self.session.core.input_buffer());
            self.session.core.handle_buffered_input(now);
            if let Err(reason) = decrypted {
                self.session.core.handle_transport_closed(reason);
            }
            return;
        }
        self.session.core.handle_input(raw, now);
    }

    /// Writes what the core queued to the socket, blocking until it is
    /// all taken (the socket's write timeout bounds each write): for a
    /// blocking client the write itself is the back-pressure. A write
    /// failure ends the connection in the core, which resolves everything
    /// outstanding.
    pub(crate) fn flush(&mut self) {
        if self.is_between_sockets() {
            return;
        }
        if let Err(reason) = self.write_out(Instant::now()) {
            self.session.core.handle_transport_closed(reason);
        }
        if self.session.core.is_closed() {
            self.writer.shutdown();
        }
    }

    /// Moves the core's output to the socket with its `write_to` (many
    /// frames and bodies per system call, none copied here), through TLS
    /// when it is on.
    fn write_out(&mut self, now: Instant) -> Result<(), String> {
        let core = &mut self.session.core;
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.send(core, now, &mut self.writer);
        }
        let writer = &mut self.writer;
        write_until_empty(|| core.wants_write().then(|| core.write_to(writer, now)))
            .map_err(|error| format!("writing to the socket failed: {error}"))
    }

    /// Sorts the core's events into the records callers wait on.
    pub(crate) fn dispatch(&mut self) {
        let live = self.live_confirmations.load(Ordering::Acquire);
        self.session.dispatch(live, Instant::now());
    }

    /// True when a callback has something to be called with: deliveries
    /// for callback consumers (if `consumers`), returned messages for
    /// channels with a return handler, blocked changes for its handler.
    pub(crate) fn has_callback_work(&mut self, consumers: bool) -> bool {
        let blocked = self.blocked_handler.is_some() && self.has_blocked_changes();
        blocked
            || self.session.has_lendable_work(
                |callback| consumers && callback.is_some(),
                |channel| channel.return_handler.is_some(),
            )
    }

    /// Takes the callbacks that have work, with their work, so they can be
    /// called without the lock (they may call back into the connection).
    pub(crate) fn take_callback_work(&mut self, consumers: bool) -> CallbackWork {
        let mut work = CallbackWork::default();
        if consumers {
            let lent = self.session.lend_consumers(Option::take);
            work.deliveries = lent.into_iter().map(Lent::from).collect();
        }
        let lent = self
            .session
            .lend_returns(|channel| channel.return_handler.take());
        work.returns = lent.into_iter().map(Lent::from).collect();
        if self.has_blocked_changes() {
            if let Some(handler) = self.blocked_handler.take() {
                work.blocked = Some((handler, self.session.take_blocked_changes()));
            }
        }
        work
    }

    /// Puts back the callbacks [`take_callback_work`](Self::take_callback_work)
    /// lent out, unless their consumer or channel went away meanwhile.
    pub(crate) fn restore_callbacks(&mut self, work: CallbackWork) {
        if let Some((handler, _)) = work.blocked {
            if self.blocked_handler.is_none() {
                self.blocked_handler = Some(handler);
            }
        }
        for lent in work.deliveries {
            let callback = lent.callback;
            self.session
                .restore_consumer(&lent.owner, |slot| *slot = Some(callback));
        }
        for lent in work.returns {
            let handler = lent.callback;
            self.session.restore_channel(lent.owner, |channel| {
                channel.return_handler.get_or_insert(handler);
            });
        }
    }

    /// A consumer handle went away: give back what it did not take, cancel
    /// it with the server, and give back what arrives meanwhile.
    pub(crate) fn abandon_consumer(&mut self, consumer: &ConsumerHandle) {
        self.session.abandon_consumer(consumer);
        self.flush();
        self.dispatch();
    }
}

/// The state behind every handle of one connection.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    reader: Mutex<Reader>,
    /// What spans need, readable without the lock.
    pub(crate) telemetry: Arc<Telemetry>,
}

impl Shared {
    pub(crate) fn new(inner: Inner, reader: Reader) -> Self {
        Self {
            telemetry: Arc::clone(inner.telemetry()),
            inner: Mutex::new(inner),
            changed: Condvar::new(),
            reader: Mutex::new(reader),
        }
    }

    /// Locks the state. A panic elsewhere while it was held (in code of
    /// ours, never in a callback: those run unlocked) leaves it usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reader, waiting for whoever holds it.
    pub(crate) fn lock_reader(&self) -> MutexGuard<'_, Reader> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every waiter: something they wait for may have happened.
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Drives the connection until `ready` returns a result, the
    /// connection ends, or `timeout` passes (`None`: only the connection's
    /// own deadlines bound the wait).
    pub(crate) fn wait<T>(
        &self,
        operation: &'static str,
        timeout: Option<Duration>,
        mut ready: impl FnMut(&mut Inner) -> Option<Result<T>>,
    ) -> Result<T> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut inner = self.lock();
        loop {
            if let Some(result) = ready(&mut inner) {
                return result;
            }
            if let Some(error) = inner.closed() {
                return Err(Error::ConnectionClosed(error.clone()));
            }
            let now = Instant::now();
            if let (Some(deadline), Some(timeout)) = (deadline, timeout) {
                if now >= deadline {
                    return Err(Error::Timeout { operation, timeout });
                }
            }
            inner = self.pass(inner, deadline, now);
        }
    }

    /// One step of progress: read once if no one else is reading (and the
    /// core has room), otherwise sleep until woken; then act on due timers.
    fn pass<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        deadline: Option<Instant>,
        now: Instant,
    ) -> MutexGuard<'a, Inner> {
        inner.flush();
        let until = [
            deadline,
            inner.core_deadline(),
            Some(now + MAX_PASS),
            inner.reconnect_due(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now);
        self.step(inner, until, true)
    }

    /// Services the connection without waiting for anything: reads what
    /// is already there, sends due heartbeats. Returns false once the
    /// connection is closed. For the heartbeat keeper.
    pub(crate) fn service(&self) -> bool {
        let inner = self.lock();
        if inner.closed().is_some() {
            return false;
        }
        let inner = self.step(inner, Instant::now(), false);
        inner.closed().is_none()
    }

    /// Reads once, until `until` at the latest, if no one else is reading
    /// and the core has room; else sleeps until woken or `until` (if
    /// `sleep`). Then reconnects if an attempt is due, acts on the core's
    /// timers, sends, sorts, wakes every waiter and reports recovery.
    fn step<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        until: Instant,
        sleep: bool,
    ) -> MutexGuard<'a, Inner> {
        let reader = if inner.wants_input() {
            self.reader.try_lock().ok()
        } else {
            None
        };
        match reader {
            Some(mut reader) => {
                drop(inner);
                let outcome = reader.read(until);
                inner = self.lock();
                match outcome {
                    ReadOutcome::Data(bytes) => inner.receive(bytes, Instant::now()),
                    ReadOutcome::Idle => {}
                    ReadOutcome::Closed(reason) => inner.core.handle_transport_closed(reason),
                }
                // Released only after its bytes reached the core, so the
                // next reader's bytes come after them.
                drop(reader);
            }
            None if sleep => {
                let wait = until.saturating_duration_since(Instant::now());
                inner = self
                    .changed
                    .wait_timeout(inner, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            None => {}
        }
        if inner
            .reconnect_due()
            .is_some_and(|due| due <= Instant::now())
        {
            inner = self.reconnect(inner);
        }
        inner.handle_timeout(Instant::now());
        inner.flush();
        inner.dispatch();
        self.changed.notify_all();
        self.report_recovery(inner)
    }

    /// The earliest time the connection needs attention: the core's next
    /// deadline, or a recovery's next attempt.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let inner = self.lock();
        inner
            .core_deadline()
            .into_iter()
            .chain(inner.reconnect_due())
            .min()
    }
}
