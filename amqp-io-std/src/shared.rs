//! State every handle shares: the core, the socket halves, and the outcomes
//! the core reported that some caller has not collected yet.
//!
//! One thread at a time reads the socket (whoever holds the reader) without
//! holding the state lock, so others can publish and ack meanwhile; it then
//! feeds the bytes to the core under the lock, sorts the events into the
//! records below and wakes every waiter. A waiter that finds the reader
//! taken sleeps on the condition variable instead.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use amqp_io_common::ledger::{Cleanup, ConsumerEnd, ConsumerKey, Ledger, Sorted};
use amqp_io_common::map::Map;
use amqp_io_common::{Error, Result};
use amqp_proto::codec::ShortString;
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicCancel, BasicReject, Method};
use amqp_proto::{
    Connection as Core, ConnectionError, Delivery, Event, Failure, GetMessage, RequestId, Returned,
    Tuning,
};

use crate::recovery::{Phase, Recovery};
use crate::transport::{ReadOutcome, Reader, Writer};
use amqp_io_common::recovery::RecoveryEvent;

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

/// A synchronous request's answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Method(Method),
    Get(Box<GetMessage>),
}

/// What this adapter keeps per channel, beside the ledger's record.
#[derive(Default)]
pub(crate) struct ChannelExtra {
    /// `channel.open-ok` arrived.
    pub(crate) opened: bool,
    /// The opener stopped waiting before `open-ok`: close it when it comes.
    pub(crate) abandoned: bool,
    pub(crate) return_handler: Option<ReturnCallback>,
}

/// What this adapter keeps per consumer: its callback, if it has one and
/// it is not lent out to a running `drain_events`.
pub(crate) type ConsumerExtra = Option<DeliveryCallback>;

/// Callbacks lent out with what they are to be called with.
#[derive(Default)]
pub(crate) struct CallbackWork {
    pub(crate) deliveries: Vec<Lent<ConsumerKey, DeliveryCallback, Delivery>>,
    pub(crate) returns: Vec<Lent<u16, ReturnCallback, Returned>>,
    pub(crate) blocked: Option<(BlockedCallback, VecDeque<Option<String>>)>,
}

/// One callback lent out of its owner (`key` at `generation`) with what it
/// is to be called with.
pub(crate) struct Lent<K, C, T> {
    key: K,
    generation: u64,
    callback: C,
    items: VecDeque<T>,
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

/// A `basic.consume` awaiting its `consume-ok`.
pub(crate) struct PendingConsume {
    pub(crate) generation: u64,
    pub(crate) no_ack: bool,
    pub(crate) callback: Option<DeliveryCallback>,
}

/// Everything behind the connection lock.
pub(crate) struct Inner {
    pub(crate) core: Core,
    writer: Writer,
    /// Encryption between the core and the socket, for `amqps://`.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Session>,
    pub(crate) replies: Map<RequestId, Result<Reply, Failure>>,
    /// Requests whose caller gave up waiting: their replies are dropped.
    pub(crate) abandoned: HashSet<RequestId>,
    pub(crate) pending_consumes: Map<RequestId, PendingConsume>,
    pub(crate) ledger: Ledger<ChannelExtra, ConsumerExtra>,
    max_buffered_deliveries: usize,
    pub(crate) opened: Option<(Tuning, amqp_proto::codec::FieldTable)>,
    pub(crate) blocked: Option<String>,
    /// Changes of `blocked` not yet handed to the handler.
    blocked_changes: VecDeque<Option<String>>,
    pub(crate) blocked_handler: Option<BlockedCallback>,
    /// A custom SASL mechanism's challenge, for the handshake to answer.
    pub(crate) challenge: Option<amqp_proto::codec::LongString>,
    /// Automatic recovery, when the options asked for it.
    pub(crate) recovery: Option<Recovery>,
    /// The application closed the connection or dropped it: no recovery.
    pub(crate) shutdown: bool,
}

impl Inner {
    pub(crate) fn new(core: Core, writer: Writer) -> Self {
        let max_buffered_deliveries = core.config().max_buffered_events;
        Self {
            core,
            writer,
            #[cfg(feature = "tls")]
            tls: None,
            replies: Map::default(),
            abandoned: HashSet::new(),
            pending_consumes: Map::default(),
            ledger: Ledger::default(),
            max_buffered_deliveries,
            opened: None,
            blocked: None,
            blocked_changes: VecDeque::new(),
            blocked_handler: None,
            challenge: None,
            recovery: None,
            shutdown: false,
        }
    }

    /// True between a failure and the next socket of a recovery: there is
    /// nothing to read from or write to.
    pub(crate) fn between_sockets(&self) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(Recovery::is_between_sockets)
    }

    /// True while a recovery opens a new socket.
    pub(crate) fn is_connecting(&self) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(|recovery| matches!(recovery.phase, Phase::Connecting))
    }

    /// When the next reconnection attempt is due, while one is awaited.
    pub(crate) fn attempt_due(&self) -> Option<Instant> {
        self.recovery.as_ref().and_then(Recovery::attempt_due)
    }

    /// The core's deadline, unless there is no socket to serve it.
    pub(crate) fn core_deadline(&self) -> Option<Instant> {
        if self.between_sockets() {
            None
        } else {
            self.core.poll_timeout()
        }
    }

    /// Fires the core's timers, unless there is no socket to serve them.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if !self.between_sockets() {
            self.core.handle_timeout(now);
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

    /// Why the connection ended, once it has.
    pub(crate) fn closed(&self) -> Option<&ConnectionError> {
        self.ledger.connection_error()
    }

    /// The channel's record, or why it is unusable.
    pub(crate) fn channel(
        &mut self,
        id: u16,
        generation: u64,
    ) -> Result<&mut amqp_io_common::ledger::ChannelRecord<ChannelExtra>> {
        self.ledger.channel(id, generation)
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
            let decrypted = session.receive(raw, self.core.input_buffer());
            self.core.handle_buffered_input(now);
            if let Err(reason) = decrypted {
                self.core.handle_transport_closed(reason);
            }
            return;
        }
        self.core.handle_input(raw, now);
    }

    /// Hands what the core queued to the socket. A write failure ends the
    /// connection in the core, which resolves everything outstanding.
    pub(crate) fn flush(&mut self) {
        if self.between_sockets() {
            return;
        }
        let now = Instant::now();
        while let Some(chunk) = self.core.poll_transmit(now) {
            #[cfg(feature = "tls")]
            if let Some(session) = &mut self.tls {
                match session.send(&chunk) {
                    Ok(()) => {
                        if let Some(records) = session.take_output() {
                            self.writer.push(records);
                        }
                    }
                    Err(reason) => self.core.handle_transport_closed(reason),
                }
                continue;
            }
            self.writer.push(chunk);
        }
        #[cfg(feature = "tls")]
        if let Some(records) = self.tls.as_mut().and_then(crate::tls::Session::take_output) {
            self.writer.push(records);
        }
        if let Err(error) = self.writer.write_out() {
            self.core
                .handle_transport_closed(format!("writing to the socket failed: {error}"));
        }
        if self.core.is_closed() {
            self.writer.shutdown();
        }
    }

    /// Sorts the core's events into the records callers wait on.
    pub(crate) fn dispatch(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.handle_event(event);
        }
    }

    /// True while the socket should be read: the core is not closed and
    /// the consumers' queues have room. Reading stops otherwise, so a slow
    /// consumer bounds memory (one read's worth of deliveries past the
    /// limit at most) and the broker holds the rest.
    pub(crate) fn wants_input(&self) -> bool {
        self.core.wants_input()
            && self.ledger.buffered_deliveries() < self.max_buffered_deliveries
            && !self.between_sockets()
    }

    /// Records a request's outcome for its caller, unless the caller gave up.
    fn answer(&mut self, request: RequestId, outcome: Result<Reply, Failure>) {
        if !self.abandoned.remove(&request) {
            self.replies.insert(request, outcome);
        }
    }

    /// Sends a method the application did not ask for directly (cleanup
    /// of abandoned work); its reply, if any, is dropped. Failure means the
    /// channel is gone, which makes the cleanup moot.
    fn send_on(&mut self, channel: u16, method: impl Into<Method>) {
        if let Ok(mut handle) = self.core.channel(channel) {
            if let Ok(Some(request)) = handle.request(method) {
                self.abandoned.insert(request);
            }
        }
    }

    fn clean_up(&mut self, cleanup: Vec<Cleanup>) {
        for action in cleanup {
            match action {
                Cleanup::Requeue {
                    channel,
                    delivery_tag,
                } => self.send_on(
                    channel,
                    BasicReject {
                        delivery_tag,
                        requeue: true,
                    },
                ),
                Cleanup::Cancel {
                    channel,
                    consumer_tag,
                } => self.send_on(
                    channel,
                    BasicCancel {
                        consumer_tag,
                        nowait: false,
                    },
                ),
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Opened {
                tuning,
                server_properties,
            } => self.opened = Some((tuning, server_properties)),
            Event::ChannelOpened { channel, .. } => {
                let Some(record) = self.ledger.channel_record(channel) else {
                    return;
                };
                if record.extra.abandoned {
                    // Whoever opened it stopped waiting: nobody holds it.
                    if let Ok(handle) = self.core.channel(channel) {
                        let _ = handle.close(ReplyCode::REPLY_SUCCESS, "abandoned");
                    }
                } else {
                    record.extra.opened = true;
                }
            }
            Event::Reply {
                channel,
                request,
                method,
            } => {
                if let Method::BasicConsumeOk(ok) = &method {
                    self.consumer_started(channel, request, ok.consumer_tag.clone());
                }
                if let Method::BasicCancelOk(ok) = &method {
                    self.ledger
                        .consumer_ended(channel, &ok.consumer_tag, ConsumerEnd::Cancelled);
                }
                self.answer(request, Ok(Reply::Method(method)));
            }
            Event::GetOk {
                channel,
                request,
                message,
            } => {
                if self.abandoned.remove(&request) {
                    let delivery_tag = message.delivery_tag;
                    self.clean_up(vec![Cleanup::Requeue {
                        channel,
                        delivery_tag,
                    }]);
                } else {
                    self.replies.insert(request, Ok(Reply::Get(message)));
                }
            }
            Event::RequestFailed {
                request, failure, ..
            } => {
                self.pending_consumes.remove(&request);
                self.answer(request, Err(failure));
            }
            Event::Delivery(delivery) => {
                if let Sorted::Returned(cleanup) = self.ledger.delivered(delivery) {
                    self.clean_up(vec![cleanup]);
                }
            }
            Event::Returned(returned) => {
                self.ledger.returned(*returned);
            }
            Event::Confirm {
                channel,
                sequence,
                outcome,
            } => {
                // Kept until the channel's next batch wait.
                self.ledger.confirmed(channel, sequence, outcome, true);
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                self.ledger
                    .consumer_ended(channel, &consumer_tag, ConsumerEnd::CancelledByServer);
            }
            Event::Blocked { reason } => {
                let reason = reason.to_string_lossy().into_owned();
                self.blocked = Some(reason.clone());
                self.blocked_changed(Some(reason));
            }
            Event::Unblocked => {
                self.blocked = None;
                self.blocked_changed(None);
            }
            Event::ChannelClosed { channel, reason } => {
                self.ledger.channel_closed(channel, &reason, |_| {});
            }
            Event::Closed(error) if !self.start_recovery(&error) => {
                self.ledger.connection_closed(&error, |_| {});
            }
            Event::Recovered {
                renamed_queues,
                failures,
            } => self.recovered(RecoveryEvent::Recovered {
                renamed_queues,
                failures,
            }),
            Event::SaslChallenge { challenge } => {
                // During a recovery nobody else is there to answer.
                let responder = self
                    .recovery
                    .as_ref()
                    .filter(|recovery| !matches!(recovery.phase, Phase::Connected))
                    .and_then(|recovery| recovery.options.sasl_responder.clone());
                match responder {
                    Some(respond) => {
                        let _ = self
                            .core
                            .respond_to_challenge(respond(challenge.as_bytes()));
                    }
                    None => self.challenge = Some(challenge),
                }
            }
            // Flow is visible through the core's publish readiness.
            _ => {}
        }
    }

    fn blocked_changed(&mut self, change: Option<String>) {
        // Only the latest few matter to a handler; an alarm that flaps
        // while nobody drains must not grow memory.
        const KEPT: usize = 16;
        if self.blocked_changes.len() >= KEPT {
            self.blocked_changes.pop_front();
        }
        self.blocked_changes.push_back(change);
    }

    fn consumer_started(&mut self, channel: u16, request: RequestId, tag: ShortString) {
        let Some(pending) = self.pending_consumes.remove(&request) else {
            return;
        };
        let key = (channel, tag);
        let generation = pending.generation;
        self.register_consumer(key.clone(), pending);
        if self.abandoned.contains(&request) {
            let cleanup = self.ledger.abandon_consumer(&key, generation);
            self.clean_up(cleanup);
        }
    }

    /// Starts the record that deliveries for `key` are sorted into.
    pub(crate) fn register_consumer(&mut self, key: ConsumerKey, pending: PendingConsume) {
        self.ledger
            .register_consumer(key, pending.generation, pending.no_ack, pending.callback);
    }

    /// Takes the next delivery of a consumer.
    pub(crate) fn take_delivery(&mut self, key: &ConsumerKey) -> Option<Delivery> {
        self.ledger.take_delivery(key)
    }

    /// True when a callback has something to be called with: deliveries
    /// for callback consumers (if `consumers`), returned messages for
    /// channels with a return handler, blocked changes for its handler.
    pub(crate) fn has_callback_work(&mut self, consumers: bool) -> bool {
        let deliveries = consumers
            && self
                .ledger
                .consumers()
                .any(|(_, consumer)| consumer.extra.is_some() && consumer.has_deliveries());
        let blocked = self.blocked_handler.is_some() && !self.blocked_changes.is_empty();
        deliveries
            || blocked
            || self.ledger.channel_records().any(|(_, channel)| {
                channel.extra.return_handler.is_some() && !channel.returns.is_empty()
            })
    }

    /// Takes the callbacks that have work, with their work, so they can be
    /// called without the lock (they may call back into the connection).
    pub(crate) fn take_callback_work(&mut self, consumers: bool) -> CallbackWork {
        let mut work = CallbackWork::default();
        if consumers {
            let ready: Vec<(ConsumerKey, u64, DeliveryCallback)> = self
                .ledger
                .consumers()
                .filter(|(_, consumer)| consumer.has_deliveries())
                .filter_map(|(key, consumer)| {
                    let callback = consumer.extra.take()?;
                    Some((key.clone(), consumer.generation, callback))
                })
                .collect();
            for (key, generation, callback) in ready {
                let items = self.ledger.take_deliveries(&key);
                work.deliveries.push(Lent {
                    key,
                    generation,
                    callback,
                    items,
                });
            }
        }
        for (id, channel) in self.ledger.channel_records() {
            if channel.returns.is_empty() {
                continue;
            }
            if let Some(handler) = channel.extra.return_handler.take() {
                work.returns.push(Lent {
                    key: *id,
                    generation: channel.generation,
                    callback: handler,
                    items: std::mem::take(&mut channel.returns),
                });
            }
        }
        if !self.blocked_changes.is_empty() {
            if let Some(handler) = self.blocked_handler.take() {
                work.blocked = Some((handler, std::mem::take(&mut self.blocked_changes)));
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
            match self.ledger.consumer(&lent.key) {
                Some(consumer) if consumer.generation == lent.generation => {
                    consumer.extra = Some(lent.callback);
                }
                _ => {}
            }
        }
        for lent in work.returns {
            match self.ledger.channel_record(lent.key) {
                Some(channel)
                    if channel.generation == lent.generation
                        && channel.extra.return_handler.is_none() =>
                {
                    channel.extra.return_handler = Some(lent.callback);
                }
                _ => {}
            }
        }
    }

    /// A consumer handle went away: give back what it did not take, cancel
    /// it with the server, and give back what arrives meanwhile.
    pub(crate) fn abandon_consumer(&mut self, key: &ConsumerKey, generation: u64) {
        let cleanup = self.ledger.abandon_consumer(key, generation);
        self.clean_up(cleanup);
        self.flush();
        self.dispatch();
    }
}

/// The state behind every handle of one connection.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    reader: Mutex<Reader>,
}

impl Shared {
    pub(crate) fn new(inner: Inner, reader: Reader) -> Self {
        Self {
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
        let attempt_due = inner.attempt_due();
        let until = [
            deadline,
            inner.core_deadline(),
            Some(now + MAX_PASS),
            attempt_due,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now);
        let wants_input = inner.wants_input();
        let reader = if wants_input {
            self.reader.try_lock().ok()
        } else {
            None
        };
        match reader {
            Some(mut reader) => {
                drop(inner);
                let outcome = reader.read(until);
                inner = self.lock();
                let now = Instant::now();
                match outcome {
                    ReadOutcome::Data(bytes) => inner.receive(bytes, now),
                    ReadOutcome::Idle => {}
                    ReadOutcome::Closed(reason) => inner.core.handle_transport_closed(reason),
                }
                // Released only after its bytes reached the core, so the
                // next reader's bytes come after them.
                drop(reader);
            }
            None => {
                let wait = until.saturating_duration_since(now);
                inner = self
                    .changed
                    .wait_timeout(inner, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        if attempt_due.is_some_and(|due| due <= Instant::now()) {
            inner = self.reconnect(inner);
        }
        inner.handle_timeout(Instant::now());
        inner.flush();
        inner.dispatch();
        self.changed.notify_all();
        self.report_recovery(inner)
    }

    /// Services the connection without waiting for anything: reads what
    /// is already there, sends due heartbeats. Returns false once the
    /// connection is closed. For the heartbeat keeper.
    pub(crate) fn service(&self) -> bool {
        let mut inner = self.lock();
        if inner.closed().is_some() {
            return false;
        }
        let now = Instant::now();
        if inner.wants_input() {
            if let Ok(mut reader) = self.reader.try_lock() {
                drop(inner);
                let outcome = reader.read(now);
                inner = self.lock();
                match outcome {
                    ReadOutcome::Data(bytes) => inner.receive(bytes, Instant::now()),
                    ReadOutcome::Idle => {}
                    ReadOutcome::Closed(reason) => inner.core.handle_transport_closed(reason),
                }
                drop(reader);
            }
        }
        if inner.attempt_due().is_some_and(|due| due <= Instant::now()) {
            inner = self.reconnect(inner);
        }
        inner.handle_timeout(Instant::now());
        inner.flush();
        inner.dispatch();
        self.changed.notify_all();
        let inner = self.report_recovery(inner);
        inner.closed().is_none()
    }

    /// The earliest time the connection needs attention: the core's next
    /// deadline, or a recovery's next attempt.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let inner = self.lock();
        inner
            .core_deadline()
            .into_iter()
            .chain(inner.attempt_due())
            .min()
    }
}
