//! One IO-free session under every adapter: the core, plus everything an
//! adapter would otherwise derive from its events. It sorts the events to
//! their waiters, keeps the registry of who waits for which reply (generic
//! over how a waiter is woken), gives back what nobody waits for any more,
//! decides when a publisher may go on, when to reconnect, and how long a
//! write may take.
//!
//! An adapter keeps one [`Session`] behind its connection lock and adds
//! only a socket, a clock and its way of waiting: after feeding the core
//! input, time or a command it calls [`dispatch`](Session::dispatch), then
//! wakes its waiters (the tokio adapter's wakers are woken by the session
//! itself; the blocking adapter's threads recheck after every pass).

mod replies;
pub mod typed;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_proto::codec::{FieldTable, ShortString};
use amqp_proto::recovery::{Decision, RecoveryEvent, Supervisor};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicCancel, Method};
use amqp_proto::{
    ChannelHandle, Config, Connection as Core, ConnectionError, Delivery, Event, Failure,
    Initiator, Readiness, RequestId, Returned, Tuning, UsageError,
};

use crate::ledger::{Cleanup, ConsumerEnd, ConsumerKey, Ledger, Sorted};
use crate::map::Map;
use crate::recovery::RecoveryHandler;
use crate::telemetry::{self, ConnectionEvent, LifecycleSpan, Telemetry};
use crate::{ConnectOptions, Error, SaslResponder};
use replies::Replies;
pub use replies::{Outcome, Reply, Wake};

/// Lets an adapter's state behind its lock (a struct with a field
/// `session: Session<A>` beside what only that adapter needs) be used as
/// the session itself.
///
/// ```
/// use amqp_io_common::session::{Attach, Session};
///
/// struct Plain;
/// impl Attach for Plain {
///     type Waker = ();
///     type Channel = ();
///     type Consumer = ();
///     fn consumer_changed((): &mut ()) {}
///     fn returns_changed((): &mut ()) {}
/// }
///
/// struct State {
///     session: Session<Plain>,
///     writes: usize,
/// }
/// amqp_io_common::deref_session!(State, Plain);
///
/// let session = Session::new(Default::default(), std::time::Instant::now(), None, None);
/// let state = State { session, writes: 0 };
/// assert!(state.opened().is_none() && state.writes == 0);
/// ```
#[macro_export]
macro_rules! deref_session {
    ($state:ty, $attach:ty) => {
        impl ::std::ops::Deref for $state {
            type Target = $crate::session::Session<$attach>;

            fn deref(&self) -> &Self::Target {
                &self.session
            }
        }

        impl ::std::ops::DerefMut for $state {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.session
            }
        }
    };
}

/// What an adapter attaches to the session's records, and how it learns
/// that they changed.
pub trait Attach {
    /// How a waiter for a reply, a confirm or the open is woken.
    type Waker: Wake;
    /// Kept per channel (a return handler, a returns stream's waker).
    type Channel: Default;
    /// Kept per consumer (a callback, a stream's waker).
    type Consumer;
    /// A consumer's queue grew or it ended.
    fn consumer_changed(consumer: &mut Self::Consumer);
    /// A channel's returned messages grew or it closed.
    fn returns_changed(channel: &mut Self::Channel);
}

/// What a consumer's reader sees next, from
/// [`Session::poll_consumer`].
#[derive(Debug)]
pub enum Polled {
    /// Deliveries were moved into the reader's queue.
    Deliveries,
    /// A message for the consumer broke a per-message limit: the core
    /// rejected it without requeueing ([`Error::MessageRefused`]). The
    /// consumer goes on.
    Refused(Error),
    /// The consumer receives nothing more, for this reason.
    Ended(Error),
}

/// One consumer on one opening of its channel: what an adapter's
/// consumer handle holds to poll it, cancel it or give it up. Once the
/// channel closes and its id is reused, it names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHandle {
    key: ConsumerKey,
    channel: ChannelHandle,
}

impl ConsumerHandle {
    /// The consumer `tag` on the channel opening `channel`.
    #[must_use]
    pub fn new(channel: ChannelHandle, tag: ShortString) -> Self {
        Self {
            key: (channel.id(), tag),
            channel,
        }
    }

    /// Its channel's opening.
    #[must_use]
    pub fn channel(&self) -> ChannelHandle {
        self.channel
    }

    /// Its consumer tag.
    #[must_use]
    pub fn tag(&self) -> &ShortString {
        &self.key.1
    }
}

/// A `basic.consume` awaiting its `consume-ok`.
#[derive(Debug)]
pub struct PendingConsume<K> {
    /// The opening of the channel it was sent on.
    pub channel: ChannelHandle,
    /// Whether its deliveries need no acknowledgement.
    pub no_ack: bool,
    /// What the adapter keeps for the consumer.
    pub extra: K,
}

/// Blocked changes kept for a handler that has not run yet: only the
/// latest few matter, and an alarm that flaps while nobody drains must not
/// grow memory.
const KEPT_BLOCKED_CHANGES: usize = 16;

/// The shortest write deadline: a broker that stops reading (a resource
/// alarm it did not announce) must not block a writer for ever, and a
/// dead peer must be noticed even when heartbeats cannot be written.
const MIN_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The core and the adapter-independent state around it; see the module
/// docs.
pub struct Session<A: Attach> {
    /// The protocol core.
    pub core: Core,
    config: Config,
    ledger: Ledger<A::Channel, A::Consumer>,
    replies: Replies<RequestId, A::Waker>,
    opens: Replies<u16, A::Waker>,
    pending_consumes: Map<RequestId, PendingConsume<A::Consumer>>,
    confirm_waiters: Map<(u16, u64), A::Waker>,
    /// Channels whose publishers were told the confirm window is full:
    /// they wait until it drains to half, not for every ack.
    window_full: Vec<u16>,
    window_opened: bool,
    opened: Option<(Tuning, FieldTable)>,
    open_waiter: Option<A::Waker>,
    blocked: Option<String>,
    blocked_changes: VecDeque<Option<String>>,
    sasl_responder: Option<SaslResponder>,
    supervisor: Option<Supervisor>,
    /// The application closed the connection (or dropped it): no recovery.
    shutdown: bool,
    /// The last bytes of a core replaced by a recovery, to be written
    /// before its socket is shut.
    final_output: Vec<bytes::Bytes>,
    /// How the connection was opened, to open it again for a recovery.
    options: Option<ConnectOptions>,
    /// The application's recovery handler; lent out while it runs.
    recovery_handler: Option<RecoveryHandler>,
    /// Which of the options' addresses the socket is connected to; a
    /// recovery starts after it.
    address: usize,
    /// The broker and the trace-context hook, as spans need them.
    telemetry: Arc<Telemetry>,
    /// The connection attempt under way, until it opens or fails.
    connect_span: Option<LifecycleSpan>,
    /// The recovery under way, until it recovers or gives up.
    recover_span: Option<LifecycleSpan>,
    /// Connection attempts of the recovery under way.
    attempts: u32,
    /// The counters of the cores a recovery replaced.
    earlier_stats: amqp_proto::Stats,
    /// When the observer last had the counters, and whether it had them
    /// after the end.
    stats_reported: Option<Instant>,
    final_stats_reported: bool,
}

impl<A: Attach> std::fmt::Debug for Session<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("core", &self.core)
            .field("opened", &self.opened.is_some())
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl<A: Attach> Session<A> {
    /// A session over a connection about to start with `config` at `now`.
    /// With `recovery`, a connection that fails after opening is recovered
    /// as the backoff says (the topology is recorded for it).
    #[must_use]
    pub fn new(
        mut config: Config,
        now: Instant,
        recovery: Option<amqp_proto::Backoff>,
        sasl_responder: Option<SaslResponder>,
    ) -> Self {
        if recovery.is_some() {
            config.record_topology = true;
            // A channel the broker closed for a consumer timeout comes back
            // too, with its consumers.
            config.reopen_timed_out_channels = true;
        }
        Self {
            core: Core::new(config.clone(), now),
            config,
            ledger: Ledger::default(),
            replies: Replies::default(),
            opens: Replies::default(),
            pending_consumes: Map::default(),
            confirm_waiters: Map::default(),
            window_full: Vec::new(),
            window_opened: false,
            opened: None,
            open_waiter: None,
            blocked: None,
            blocked_changes: VecDeque::new(),
            sasl_responder,
            supervisor: recovery.map(Supervisor::new),
            shutdown: false,
            final_output: Vec::new(),
            options: None,
            recovery_handler: None,
            address: 0,
            telemetry: Arc::default(),
            connect_span: None,
            recover_span: None,
            attempts: 0,
            earlier_stats: amqp_proto::Stats::default(),
            stats_reported: None,
            final_stats_reported: false,
        }
    }

    /// A session for a connection opened with `options` at `now` on its
    /// address `address` (an index into `options.addresses`): its config,
    /// recovery backoff and SASL responder, kept to connect again.
    #[must_use]
    pub fn open(options: ConnectOptions, address: usize, now: Instant) -> Self {
        let mut session = Self::new(
            options.config.clone(),
            now,
            options.recovery,
            options.sasl_responder.clone(),
        );
        session.telemetry = Arc::new(Telemetry::new(&options));
        session.options = Some(options);
        session.set_address(address);
        // After the address: the span names the node the socket reached.
        session.connect_span = Some(LifecycleSpan::connect(&session.telemetry.peer(), 1, false));
        session
    }

    /// What this connection's spans need (shared with the adapter's
    /// handles, which open `publish` and `process` spans).
    #[must_use]
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The options the session was opened with (`None` for one made with
    /// [`new`](Self::new)).
    #[must_use]
    pub fn options(&self) -> Option<&ConnectOptions> {
        self.options.as_ref()
    }

    /// The adapter's socket is connected to address `index` of the
    /// options (at the opening, and at each reconnection): spans and
    /// events name that node from now on, and a recovery tries the
    /// addresses after it first.
    pub fn set_address(&mut self, index: usize) {
        self.address = index;
        if let Some(address) = self
            .options
            .as_ref()
            .and_then(|options| options.addresses.get(index))
        {
            let peer = telemetry::Peer::from(address);
            // A recovery's attempt began its span before it chose the
            // address; from here on the span names the node it reached.
            if let Some(span) = &self.connect_span {
                span.record_peer(&peer);
            }
            self.telemetry.set_peer(peer);
        }
    }

    /// The index of the address the socket is (or was last) connected to.
    #[must_use]
    pub fn address(&self) -> usize {
        self.address
    }

    /// Sets the application's handler for [`RecoveryEvent`]s.
    pub fn set_recovery_handler(&mut self, handler: RecoveryHandler) {
        self.recovery_handler = Some(handler);
    }

    /// The reports for the recovery handler with the handler itself, lent
    /// out so the adapter can run it without its lock (the handler may use
    /// the connection); give it back with
    /// [`return_recovery_handler`](Self::return_recovery_handler). `None`
    /// when there is nothing to report, or no handler: then the reports
    /// are dropped, so a long outage with nobody listening keeps no
    /// memory.
    pub fn lend_recovery_handler(&mut self) -> Option<(Vec<RecoveryEvent>, RecoveryHandler)> {
        let events = self.take_recovery_events();
        if events.is_empty() {
            return None;
        }
        Some((events, self.recovery_handler.take()?))
    }

    /// Gives back a lent recovery handler, unless a new one was set since.
    pub fn return_recovery_handler(&mut self, handler: RecoveryHandler) {
        self.recovery_handler.get_or_insert(handler);
    }

    /// Why the connection ended for good, once it has.
    #[must_use]
    pub fn closed(&self) -> Option<&ConnectionError> {
        self.ledger.connection_error()
    }

    /// The negotiated limits and the server's properties, once open.
    #[must_use]
    pub fn opened(&self) -> Option<&(Tuning, FieldTable)> {
        self.opened.as_ref()
    }

    /// What the server said about itself (product, version,
    /// capabilities); empty until open.
    #[must_use]
    pub fn server_properties(&self) -> FieldTable {
        self.opened
            .as_ref()
            .map(|(_, properties)| properties.clone())
            .unwrap_or_default()
    }

    /// The broker's reason while it blocks publishing.
    #[must_use]
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// True while blocked changes wait for the application.
    #[must_use]
    pub fn has_blocked_changes(&self) -> bool {
        !self.blocked_changes.is_empty()
    }

    /// Blocked (`Some(reason)`) and unblocked (`None`) changes not yet
    /// handed to the application, oldest first.
    pub fn take_blocked_changes(&mut self) -> VecDeque<Option<String>> {
        std::mem::take(&mut self.blocked_changes)
    }

    /// What the adapter keeps for `channel`, or why the channel is
    /// unusable (its close, the connection's end, or an id reopened since).
    pub fn channel(&mut self, channel: ChannelHandle) -> Result<&mut A::Channel, Error> {
        self.ledger.channel(channel).map(|record| &mut record.extra)
    }

    /// True if a consumer whose attachment passes `ready` holds
    /// deliveries, or a channel whose attachment passes `returns_ready`
    /// holds returned messages: work for callbacks.
    pub fn has_lendable_work(
        &mut self,
        ready: impl Fn(&A::Consumer) -> bool,
        returns_ready: impl Fn(&A::Channel) -> bool,
    ) -> bool {
        self.ledger
            .consumers()
            .any(|(_, consumer)| consumer.has_deliveries() && ready(&consumer.extra))
            || self
                .ledger
                .channel_records()
                .any(|(_, channel)| !channel.returns.is_empty() && returns_ready(&channel.extra))
    }

    /// For each consumer holding deliveries whose attachment gives up a
    /// callback (`take`), the consumer, the callback and its deliveries:
    /// to be called without the lock, and the callback put back with
    /// [`restore_consumer`](Self::restore_consumer).
    pub fn lend_consumers<T>(
        &mut self,
        mut take: impl FnMut(&mut A::Consumer) -> Option<T>,
    ) -> Vec<(ConsumerHandle, T, VecDeque<Delivery>)> {
        let ready: Vec<(ConsumerKey, ChannelHandle, T)> = self
            .ledger
            .consumers()
            .filter(|(_, consumer)| consumer.has_deliveries())
            .filter_map(|(key, consumer)| {
                let lent = take(&mut consumer.extra)?;
                Some((key.clone(), consumer.channel, lent))
            })
            .collect();
        ready
            .into_iter()
            .map(|(key, channel, lent)| {
                let items = self.ledger.take_deliveries(&key);
                (ConsumerHandle::new(channel, key.1), lent, items)
            })
            .collect()
    }

    /// The same for channels holding returned messages.
    pub fn lend_returns<T>(
        &mut self,
        mut take: impl FnMut(&mut A::Channel) -> Option<T>,
    ) -> Vec<(ChannelHandle, T, VecDeque<Returned>)> {
        let mut lent = Vec::new();
        for (_, channel) in self.ledger.channel_records() {
            if channel.returns.is_empty() {
                continue;
            }
            if let Some(taken) = take(&mut channel.extra) {
                lent.push((channel.handle, taken, std::mem::take(&mut channel.returns)));
            }
        }
        lent
    }

    /// Lets `restore` put back what was lent from `consumer`, if it is
    /// still there (it may have been cancelled meanwhile).
    pub fn restore_consumer(
        &mut self,
        consumer: &ConsumerHandle,
        restore: impl FnOnce(&mut A::Consumer),
    ) {
        match self.ledger.consumer(&consumer.key) {
            Some(record) if record.channel == consumer.channel => restore(&mut record.extra),
            _ => {}
        }
    }

    /// Lets `restore` put back what was lent from `channel`'s attachment,
    /// if that opening is still there.
    pub fn restore_channel(
        &mut self,
        channel: ChannelHandle,
        restore: impl FnOnce(&mut A::Channel),
    ) {
        match self.ledger.channel_record(channel.id()) {
            Some(record) if record.handle == channel => restore(&mut record.extra),
            _ => {}
        }
    }

    /// The next message the broker returned on `channel` (`Some(Some)`),
    /// or `Some(None)` once no more can come (the channel closed, or the
    /// connection ended); `None` while none waits, after `wait` registered
    /// how to be woken in the channel's record.
    pub fn poll_returned(
        &mut self,
        channel: ChannelHandle,
        wait: impl FnOnce(&mut A::Channel),
    ) -> Option<Option<Returned>> {
        let connection_closed = self.ledger.connection_error().is_some();
        let record = self
            .ledger
            .channel_record(channel.id())
            .filter(|record| record.handle == channel);
        let Some(record) = record else {
            return Some(None);
        };
        if let Some(returned) = record.returns.pop_front() {
            return Some(Some(returned));
        }
        if record.closed.is_some() || connection_closed {
            return Some(None);
        }
        wait(&mut record.extra);
        None
    }

    /// `Some` once `channel`'s close is done: the server's close-ok came
    /// (`Ok`), or the connection ended first (its error).
    pub fn poll_channel_closed(&mut self, channel: ChannelHandle) -> Option<Result<(), Error>> {
        match self.ledger.channel(channel) {
            Err(Error::ChannelClosed(_)) => Some(Ok(())),
            Err(error) => Some(Err(error)),
            Ok(_) => None,
        }
    }

    /// True while the socket should be read: the core has room, the
    /// consumers' queues too, and there is a socket.
    #[must_use]
    pub fn wants_input(&self) -> bool {
        self.core.wants_input()
            && self.ledger.buffered_deliveries() < self.config.max_buffered_events
            && !self.is_between_sockets()
    }

    /// How long one write may take before the connection counts as dead:
    /// twice the negotiated heartbeat, and at least 30 s.
    #[must_use]
    pub fn write_timeout(&self) -> Duration {
        let heartbeat = match self.opened {
            Some((tuning, _)) => tuning.heartbeat,
            None => self.config.heartbeat,
        };
        (Duration::from_secs(u64::from(heartbeat)) * 2).max(MIN_WRITE_TIMEOUT)
    }

    /// Opens a channel; wait for it with [`poll_open`](Self::poll_open).
    pub fn open_channel(&mut self) -> Result<ChannelHandle, Error> {
        if let Some(error) = self.closed() {
            return Err(Error::ConnectionClosed(error.clone()));
        }
        let channel = self.core.open_channel()?;
        self.ledger.open_channel(channel, A::Channel::default());
        self.opens.expect(channel.id());
        Ok(channel)
    }

    /// The open of `channel` is done (`Some`), or `waker` is kept. A
    /// [`Failure::TimedOut`] means the timeout set with
    /// [`set_open_timeout`](Self::set_open_timeout) passed (the core
    /// closes the channel).
    pub fn poll_open(
        &mut self,
        channel: ChannelHandle,
        waker: impl FnOnce() -> A::Waker,
    ) -> Option<Result<(), Failure>> {
        match self.opens.poll(&channel.id(), waker)? {
            Ok(_) => Some(Ok(())),
            Err(failure) => Some(Err(failure)),
        }
    }

    /// Gives up waiting for `channel` to open `timeout` after `now`: the
    /// core fails the open with [`Failure::TimedOut`] then, and closes the
    /// channel.
    pub fn set_open_timeout(&mut self, channel: ChannelHandle, timeout: Duration, now: Instant) {
        let open = self
            .core
            .channel(channel)
            .ok()
            .and_then(|mut handle| handle.open_request());
        if let Some(open) = open {
            self.set_timeout(open, timeout, now);
        }
    }

    /// The opener stopped waiting (its future was dropped): the core
    /// closes a channel still opening; one whose open-ok is in already is
    /// closed here.
    pub fn abandon_open(&mut self, channel: ChannelHandle) {
        let open = self
            .core
            .channel(channel)
            .ok()
            .and_then(|mut handle| handle.open_request());
        if let Some(open) = open {
            if self.core.abandon_request(open) {
                // The core reports nothing more of the open; the close's
                // ChannelClosed still comes and frees the id.
                self.opens.forget(&channel.id());
                return;
            }
        }
        if self
            .opens
            .abandon(channel.id())
            .is_some_and(|outcome| outcome.is_ok())
        {
            self.close_unwanted_channel(channel);
        }
    }

    /// Gives up waiting for `request`'s reply `timeout` after `now`: the
    /// core fails it with [`Failure::TimedOut`] then, and gives back what a
    /// later reply carries. The one timeout of every request, so a caller
    /// waits for the outcome alone. A timeout too long to represent never
    /// ends.
    pub fn set_timeout(&mut self, request: RequestId, timeout: Duration, now: Instant) {
        if let Some(deadline) = now.checked_add(timeout) {
            self.core.set_request_deadline(request, deadline);
        }
    }

    /// Sends `method` on `channel`; with a reply to come, registers its
    /// waiter and returns the request.
    pub fn request(
        &mut self,
        channel: ChannelHandle,
        method: Method,
    ) -> Result<Option<RequestId>, Error> {
        self.ledger.channel(channel)?;
        let request = self.core.channel(channel)?.request(method)?;
        if let Some(request) = request {
            self.replies.expect(request);
        }
        Ok(request)
    }

    /// Replaces the connection's secret (`update-secret`); wait for the
    /// reply with [`poll_reply`](Self::poll_reply).
    pub fn update_secret(&mut self, new_secret: Vec<u8>, reason: &str) -> Result<RequestId, Error> {
        let request = self.core.update_secret(new_secret, reason)?;
        self.replies.expect(request);
        Ok(request)
    }

    /// Sends a `basic.consume` (with a tag the core makes up, if it names
    /// none) whose consumer gets `extra` once the server confirms it (at
    /// once with `nowait`). Returns the consumer, and the request its
    /// consume-ok answers.
    pub fn consume(
        &mut self,
        channel: ChannelHandle,
        consume: amqp_proto::spec::BasicConsume,
        extra: A::Consumer,
    ) -> Result<(ConsumerHandle, Option<RequestId>), Error> {
        let no_ack = consume.no_ack;
        let nowait = consume.nowait;
        self.ledger.channel(channel)?;
        let (tag, request) = self.core.channel(channel)?.consume(consume)?;
        if let Some(request) = request {
            self.replies.expect(request);
        }
        let pending = PendingConsume {
            channel,
            no_ack,
            extra,
        };
        let consumer = ConsumerHandle::new(channel, tag);
        match request {
            Some(request) => {
                self.pending_consumes.insert(request, pending);
            }
            None if nowait => self.register_consumer(consumer.key.clone(), pending),
            None => {}
        }
        Ok((consumer, request))
    }

    /// Starts the record deliveries for `key` are sorted into.
    fn register_consumer(&mut self, key: ConsumerKey, pending: PendingConsume<A::Consumer>) {
        self.ledger
            .register_consumer(key, pending.channel, pending.no_ack, pending.extra);
    }

    /// The reply to `request` (`Some`), or `waker` is kept.
    pub fn poll_reply(
        &mut self,
        request: RequestId,
        waker: impl FnOnce() -> A::Waker,
    ) -> Option<Outcome> {
        self.replies.poll(&request, waker)
    }

    /// The caller stopped waiting for `request` on `channel` (timed out,
    /// or dropped its future): what its reply carries (a message, a
    /// consumer) is given back to the broker, whether it is already in or
    /// comes later.
    pub fn abandon_reply(&mut self, channel: ChannelHandle, request: RequestId) {
        let id = channel.id();
        if self.core.abandon_request(request) {
            // Not answered yet: the core gives back whatever comes and
            // reports nothing more of it.
            self.replies.forget(&request);
            self.pending_consumes.remove(&request);
            return;
        }
        // Answered already (its outcome is here or among the core's
        // events): a consume keeps its pending record, so its consume-ok
        // still starts the consumer, which is then cancelled and its
        // deliveries given back.
        match self.replies.abandon(request) {
            Some(Ok(Reply::Get(message))) => self.clean_up(vec![Cleanup::Requeue {
                channel: id,
                delivery_tag: message.delivery_tag,
            }]),
            Some(Ok(Reply::Method(Method::BasicConsumeOk(ok)))) => {
                self.abandon_consumer(&ConsumerHandle::new(channel, ok.consumer_tag));
            }
            _ => {}
        }
    }

    /// How the publish `sequence` of `channel` was settled: `None` while
    /// its confirm is still out (then `waker` is woken when it comes), else
    /// `Ok` for an ack or the nack or failure that settled it. A reused
    /// channel id numbers its publishes afresh, so only this opening's are
    /// asked about.
    pub fn poll_confirm(
        &mut self,
        channel: ChannelHandle,
        sequence: u64,
        waker: impl FnOnce() -> A::Waker,
    ) -> Option<Result<(), Error>> {
        let id = channel.id();
        if self.core.is_unconfirmed(channel, sequence) {
            self.confirm_waiters.insert((id, sequence), waker());
            return None;
        }
        self.confirm_waiters.remove(&(id, sequence));
        Some(self.ledger.take_confirm_outcome(channel, sequence))
    }

    /// The caller of [`poll_confirm`](Self::poll_confirm) stopped waiting.
    pub fn forget_confirm_waiter(&mut self, channel: ChannelHandle, sequence: u64) {
        self.confirm_waiters.remove(&(channel.id(), sequence));
    }

    /// Whether a publisher on `id` may go on: the core's answer, except
    /// that once the confirm window was full it stays so until half of it
    /// drained, so a waiting publisher is woken once per half window
    /// rather than once per ack.
    pub fn publish_readiness(&mut self, channel: ChannelHandle) -> Readiness {
        let id = channel.id();
        let readiness = self.core.publish_readiness(channel);
        let index = self.window_full.iter().position(|full| *full == id);
        match (readiness, index) {
            (Readiness::ConfirmWindowFull, None) => {
                self.window_full.push(id);
                readiness
            }
            (Readiness::Ready, Some(index)) => {
                if self.core.unconfirmed(id) > self.low_watermark() {
                    Readiness::ConfirmWindowFull
                } else {
                    self.window_full.swap_remove(index);
                    readiness
                }
            }
            _ => readiness,
        }
    }

    /// True once since the last call if a full confirm window drained to
    /// half, or a channel or the connection closed: wake publishers.
    pub fn take_window_opened(&mut self) -> bool {
        std::mem::take(&mut self.window_opened)
    }

    fn low_watermark(&self) -> usize {
        self.config.max_unconfirmed / 2
    }

    /// Sends what the bookkeeping asks for (giving back what nobody takes);
    /// replies to it are discarded. A failure means the channel is gone,
    /// which makes the cleanup moot.
    fn clean_up(&mut self, cleanup: Vec<Cleanup>) {
        for action in cleanup {
            let (channel, method): (u16, Method) = match action {
                Cleanup::Requeue {
                    channel,
                    delivery_tag,
                } => {
                    // The core knows a stream's delivery, which is acked
                    // rather than rejected (RabbitMQ refuses that).
                    if let Ok(mut handle) = self.core.channel(channel) {
                        let _ = handle.give_back(delivery_tag);
                    }
                    continue;
                }
                Cleanup::Cancel {
                    channel,
                    consumer_tag,
                } => {
                    let cancel = BasicCancel {
                        consumer_tag,
                        nowait: false,
                    };
                    (channel, cancel.into())
                }
            };
            if let Ok(mut handle) = self.core.channel(channel) {
                if let Ok(Some(request)) = handle.request(method) {
                    let _ = self.replies.abandon(request);
                }
            }
        }
    }

    /// A consumer handle went away: give back what it did not take, cancel
    /// it with the server, and give back what arrives meanwhile.
    pub fn abandon_consumer(&mut self, consumer: &ConsumerHandle) {
        let cleanup = self
            .ledger
            .abandon_consumer(&consumer.key, consumer.channel);
        self.clean_up(cleanup);
    }

    /// The same, for a handle that also holds deliveries it took from the
    /// session but never handed out (`untaken`): they go back too, unless
    /// the consumer needs no acknowledgements.
    pub fn abandon_consumer_holding(
        &mut self,
        consumer: &ConsumerHandle,
        no_ack: bool,
        untaken: impl IntoIterator<Item = Delivery>,
    ) {
        let mut cleanup: Vec<Cleanup> = if no_ack {
            Vec::new()
        } else {
            untaken
                .into_iter()
                .map(|delivery| Cleanup::Requeue {
                    channel: consumer.channel.id(),
                    delivery_tag: delivery.delivery_tag,
                })
                .collect()
        };
        cleanup.extend(
            self.ledger
                .abandon_consumer(&consumer.key, consumer.channel),
        );
        self.clean_up(cleanup);
    }

    /// Moves the deliveries a consumer holds to the end of `into`, and
    /// says what its reader sees next; see [`Polled`]. `None` while it
    /// waits, after `wait` registered how to be woken in its record.
    pub fn poll_consumer(
        &mut self,
        consumer: &ConsumerHandle,
        into: &mut VecDeque<Delivery>,
        wait: impl FnOnce(&mut A::Consumer),
    ) -> Option<Polled> {
        let key = &consumer.key;
        let gone = || Error::Usage(UsageError::ChannelNotOpen(key.0));
        let current = self
            .ledger
            .consumer(key)
            .is_some_and(|record| record.channel == consumer.channel);
        if !current {
            return Some(Polled::Ended(gone()));
        }
        if let Some(error) = self.ledger.take_refusal(key) {
            return Some(Polled::Refused(Error::MessageRefused(error)));
        }
        let before = into.len();
        self.ledger.take_deliveries_into(key, into);
        if into.len() > before {
            return Some(Polled::Deliveries);
        }
        let consumer = self.ledger.consumer(key)?;
        if let Some(end) = &consumer.end {
            return Some(Polled::Ended(end.error(&key.1)));
        }
        wait(&mut consumer.extra);
        None
    }

    /// The next delivery of a consumer, one at a time; see
    /// [`poll_consumer`](Self::poll_consumer). A refused message comes as
    /// [`Error::MessageRefused`], and the consumer goes on.
    pub fn next_delivery(&mut self, consumer: &ConsumerHandle) -> Option<Result<Delivery, Error>> {
        let key = &consumer.key;
        let current = self
            .ledger
            .consumer(key)
            .is_some_and(|record| record.channel == consumer.channel);
        if !current {
            return Some(Err(Error::Usage(UsageError::ChannelNotOpen(key.0))));
        }
        if let Some(error) = self.ledger.take_refusal(key) {
            return Some(Err(Error::MessageRefused(error)));
        }
        if let Some(delivery) = self.ledger.take_delivery(key) {
            return Some(Ok(delivery));
        }
        let end = self.ledger.consumer(key)?.end.as_ref()?;
        Some(Err(end.error(&key.1)))
    }

    /// True once every publish of `channel` is confirmed: then the batch's
    /// verdict: the close that failed publishes, else
    /// [`Error::Nacked`] with how many the broker refused since the last
    /// wait, else `Ok`.
    pub fn poll_confirms(&mut self, channel: ChannelHandle) -> Option<Result<(), Error>> {
        if self.core.unconfirmed(channel) > 0 {
            return None;
        }
        let record = self
            .ledger
            .channel_record(channel.id())
            .filter(|record| record.handle == channel);
        Some(match record {
            Some(record) => record.take_confirm_result(),
            None => Err(Error::Usage(UsageError::ChannelNotOpen(channel.id()))),
        })
    }

    /// The application closes the connection: no recovery from now on.
    pub fn shut_down(&mut self) {
        self.shutdown = true;
        if let Some(supervisor) = self.supervisor.as_mut() {
            let between = supervisor.is_between_sockets();
            let last = supervisor.last_error().cloned();
            supervisor.shut_down();
            if let (true, Some(error)) = (between, last) {
                self.connection_closed(&error);
            }
        }
    }

    /// The application closes the connection with `code` and `text`: no
    /// recovery from now on. `Ok(true)` when a close handshake is under
    /// way (wait for [`close_outcome`](Self::close_outcome)), `Ok(false)`
    /// when there was no socket to close (between a failure and the next
    /// attempt of a recovery, or the core had just ended): the connection
    /// is over at once.
    pub fn close(&mut self, code: ReplyCode, text: &str, now: Instant) -> Result<bool, Error> {
        self.begin_close(|core| core.close(code, text, now))
    }

    /// The same, once every publish awaiting confirmation is settled or at
    /// `deadline` (see [`Connection::close_when_confirmed`](Core::close_when_confirmed)):
    /// new publishes and channels are refused meanwhile.
    pub fn close_when_confirmed(
        &mut self,
        code: ReplyCode,
        text: &str,
        deadline: Instant,
        now: Instant,
    ) -> Result<bool, Error> {
        self.begin_close(|core| core.close_when_confirmed(code, text, deadline, now))
    }

    fn begin_close(
        &mut self,
        start: impl FnOnce(&mut Core) -> Result<(), UsageError>,
    ) -> Result<bool, Error> {
        if let Some(error) = self.closed() {
            return Err(Error::ConnectionClosed(error.clone()));
        }
        let between_sockets = self.is_between_sockets();
        self.shut_down();
        if between_sockets {
            return Ok(false);
        }
        match start(&mut self.core) {
            Ok(()) => Ok(true),
            Err(_) if self.core.is_closed() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// What the application's [`close`](Self::close) reports once the
    /// connection ended (`None` before): `Ok` for its own close completed
    /// (or for nothing left to close, without a `handshake`), else the
    /// error that ended the connection first.
    #[must_use]
    pub fn close_outcome(&self, handshake: bool) -> Option<Result<(), Error>> {
        let ended = self.closed()?;
        Some(match ended {
            _ if !handshake => Ok(()),
            ConnectionError::Closed(reason) if reason.initiator == Initiator::Client => Ok(()),
            other => Err(Error::ConnectionClosed(other.clone())),
        })
    }

    /// True once the application closed the connection.
    #[must_use]
    pub fn is_shut_down(&self) -> bool {
        self.shutdown
    }

    /// Sorts the core's events to their waiters. `live_confirmations` is
    /// how many per-publish confirmation handles exist: while none does,
    /// no refused confirm needs keeping. `now` is the adapter's clock: a
    /// failure's recovery is timed from it.
    pub fn dispatch(&mut self, live_confirmations: usize, now: Instant) {
        while let Some(event) = self.core.poll_event() {
            self.handle_event(event, live_confirmations > 0, now);
        }
        if live_confirmations == 0 {
            self.ledger.forget_refusals(None);
        }
        self.report_stats(now);
    }

    /// Hands the observer (if any) the counters, at most every
    /// [`STATS_INTERVAL`](telemetry::STATS_INTERVAL) and once more when the
    /// connection has ended.
    fn report_stats(&mut self, now: Instant) {
        let Some(observer) = self.telemetry.observer() else {
            return;
        };
        let ended = self.closed().is_some();
        let due = self.stats_reported.map_or(true, |last| {
            now.saturating_duration_since(last) >= telemetry::STATS_INTERVAL
        });
        if !self.final_stats_reported && (due || ended) {
            observer.on_stats(&self.stats());
            self.stats_reported = Some(now);
            self.final_stats_reported = ended;
        }
    }

    fn handle_event(&mut self, event: Event, keep_refusals: bool, now: Instant) {
        match event {
            Event::Opened {
                tuning,
                server_properties,
            } => {
                telemetry::events::opened(&self.telemetry.peer(), &tuning);
                self.telemetry.connection_changed(ConnectionEvent::Opened);
                // Ends the attempt's span: the connection is open.
                self.connect_span = None;
                self.opened = Some((tuning, server_properties));
                if let Some(waker) = self.open_waiter.take() {
                    waker.wake();
                }
            }
            Event::SaslChallenge { challenge } => {
                let response = self
                    .sasl_responder
                    .as_ref()
                    .map(|respond| respond(challenge.as_bytes()))
                    .unwrap_or_default();
                let _ = self.core.respond_to_challenge(response);
            }
            Event::ChannelOpened { channel, .. }
                if self.opens.answer(&channel, Ok(Reply::Opened)).is_some() =>
            {
                self.close_unwanted_channel(channel);
            }
            Event::Reply {
                channel,
                request,
                method,
            } => self.replied(channel, request, method),
            Event::GetOk {
                channel,
                request,
                message,
            } => {
                let delivery_tag = message.delivery_tag;
                if self
                    .replies
                    .answer(&request, Ok(Reply::Get(message)))
                    .is_some()
                {
                    self.clean_up(vec![Cleanup::Requeue {
                        channel,
                        delivery_tag,
                    }]);
                }
            }
            Event::RequestFailed {
                channel,
                request,
                failure,
            } => {
                self.pending_consumes.remove(&request);
                if self.replies.is_expected(&request) {
                    let _ = self.replies.answer(&request, Err(failure));
                } else if self.opens.is_expected(&channel) {
                    let _ = self.opens.answer(&channel, Err(failure));
                }
            }
            Event::Delivery(delivery) => match self.ledger.delivered(delivery) {
                Sorted::Queued(extra) => A::consumer_changed(extra),
                Sorted::Dropped => {}
                Sorted::Returned(cleanup) => self.clean_up(vec![cleanup]),
            },
            Event::Returned(returned) => {
                if let Some(record) = self.ledger.returned(*returned) {
                    A::returns_changed(&mut record.extra);
                }
            }
            Event::Confirm {
                channel,
                sequence,
                outcome,
            } => {
                self.telemetry.confirmed(channel, sequence, &outcome);
                self.ledger
                    .confirmed(channel, sequence, outcome, keep_refusals);
                if !self.confirm_waiters.is_empty() {
                    if let Some(waker) = self.confirm_waiters.remove(&(channel, sequence)) {
                        waker.wake();
                    }
                }
                if self.window_full.contains(&channel)
                    && self.core.unconfirmed(channel) <= self.low_watermark()
                {
                    self.window_opened = true;
                }
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                telemetry::events::consumer_cancelled(
                    &self.telemetry.peer(),
                    channel,
                    &consumer_tag.to_string_lossy(),
                );
                let end = ConsumerEnd::CancelledByServer;
                if let Some(extra) = self.ledger.consumer_ended(channel, &consumer_tag, end) {
                    A::consumer_changed(extra);
                }
            }
            Event::Blocked { reason } => {
                let reason = reason.to_string_lossy().into_owned();
                telemetry::events::blocked(&self.telemetry.peer(), &reason);
                self.telemetry
                    .connection_changed(ConnectionEvent::Blocked(&reason));
                self.blocked = Some(reason.clone());
                self.blocked_changed(Some(reason));
            }
            Event::Unblocked => {
                telemetry::events::unblocked(&self.telemetry.peer());
                self.telemetry
                    .connection_changed(ConnectionEvent::Unblocked);
                self.blocked = None;
                self.blocked_changed(None);
            }
            Event::ChannelClosed { channel, reason } => {
                telemetry::events::channel_closed(&self.telemetry.peer(), channel, &reason);
                self.window_opened = true;
                self.window_full.retain(|id| *id != channel);
                self.ledger
                    .channel_closed(channel, &reason, A::consumer_changed);
                if let Some(record) = self.ledger.channel_record(channel) {
                    A::returns_changed(&mut record.extra);
                }
                if self.opens.is_expected(&channel) {
                    let _ = self.opens.answer(&channel, Err(Failure::Channel(reason)));
                }
            }
            Event::ChannelRecovering { channel, reason } => {
                telemetry::events::channel_closed(&self.telemetry.peer(), channel, &reason);
                // Its publishers wait for it (the core says Recovering);
                // its consumers stay, and their deliveries come again.
                self.window_opened = true;
                self.window_full.retain(|id| *id != channel);
                if let Some(supervisor) = self.supervisor.as_mut() {
                    supervisor.channel_recovering(channel, reason);
                }
            }
            Event::ChannelRecovered {
                channel,
                reason,
                failures,
            } => {
                self.window_opened = true;
                if let Some(supervisor) = self.supervisor.as_mut() {
                    supervisor.channel_recovered(channel, reason, failures);
                }
            }
            Event::Closed(error) => self.core_closed(&error, now),
            Event::Recovered {
                renamed_queues,
                failures,
            } => {
                telemetry::events::recovered(&self.telemetry.peer());
                self.telemetry
                    .connection_changed(ConnectionEvent::Recovered);
                if let Some(span) = self.recover_span.take() {
                    span.record_attempts(self.attempts);
                }
                self.attempts = 0;
                if let Some(supervisor) = self.supervisor.as_mut() {
                    supervisor.recovered(renamed_queues, failures);
                }
            }
            Event::MessageRefused(refused) => {
                // The core rejected it already; the consumer's reader
                // hears of it, so nothing disappears unseen. A refused
                // return has no reader to tell.
                if let amqp_proto::RefusedOrigin::Delivery { consumer_tag, .. } = &refused.origin {
                    let key = (refused.channel, consumer_tag.clone());
                    if let Some(extra) = self.ledger.refused(&key, refused.error.clone()) {
                        A::consumer_changed(extra);
                    }
                }
            }
            // Flow shows in the core's publish readiness.
            _ => {}
        }
    }

    fn replied(&mut self, channel: u16, request: RequestId, method: Method) {
        let started = match &method {
            Method::BasicConsumeOk(ok) => self.consumer_started(request, ok.consumer_tag.clone()),
            Method::BasicCancelOk(ok) => {
                let end = ConsumerEnd::Cancelled;
                if let Some(extra) = self.ledger.consumer_ended(channel, &ok.consumer_tag, end) {
                    A::consumer_changed(extra);
                }
                None
            }
            _ => None,
        };
        let unwanted = self
            .replies
            .answer(&request, Ok(Reply::Method(method)))
            .is_some();
        if let (true, Some(consumer)) = (unwanted, started) {
            self.abandon_consumer(&consumer);
        }
    }

    fn consumer_started(&mut self, request: RequestId, tag: ShortString) -> Option<ConsumerHandle> {
        let pending = self.pending_consumes.remove(&request)?;
        let consumer = ConsumerHandle::new(pending.channel, tag);
        self.register_consumer(consumer.key.clone(), pending);
        Some(consumer)
    }

    fn close_unwanted_channel(&mut self, channel: impl amqp_proto::ChannelKey) {
        if let Ok(handle) = self.core.channel(channel) {
            let _ = handle.close(ReplyCode::REPLY_SUCCESS, "abandoned");
        }
    }

    fn blocked_changed(&mut self, change: Option<String>) {
        if self.blocked_changes.len() >= KEPT_BLOCKED_CHANGES {
            self.blocked_changes.pop_front();
        }
        self.blocked_changes.push_back(change);
    }

    /// The core ended: recover, or record the end and wake everyone.
    fn core_closed(&mut self, error: &ConnectionError, now: Instant) {
        let wanted = !self.shutdown && self.opened.is_some() && self.core.topology().is_some();
        let decision = self.supervisor.as_mut().map(|supervisor| {
            supervisor.on_closed(error, wanted, now, crate::recovery::jitter_seed())
        });
        telemetry::events::closed(&self.telemetry.peer(), error);
        self.telemetry
            .connection_changed(ConnectionEvent::Closed(error));
        if let Some(span) = self.connect_span.take() {
            span.failed(error);
        }
        match decision {
            Some(Decision::ReconnectAt(_)) if self.recover_span.is_none() => {
                self.recover_span = Some(LifecycleSpan::recover(&self.telemetry.peer(), error));
            }
            Some(Decision::GiveUp) if wanted => self.recovery_given_up(error),
            _ => {}
        }
        match decision {
            Some(Decision::ReconnectAt(_)) => {
                self.window_opened = true;
                // What the failed core still had to send (a close-ok to a
                // server's close) goes out before its socket is shut.
                self.final_output
                    .extend(std::iter::from_fn(|| self.core.poll_transmit(now)));
                // Until a new socket is open, calls see a connection that
                // is not open yet rather than the failed one.
                self.replace_core(now);
            }
            Some(Decision::GiveUp) | None => self.connection_closed(error),
        }
    }

    /// Records the end of the connection for good and wakes everyone
    /// waiting on it. The core reports its own end; an adapter calls this
    /// only for an end the core could not see (its IO task stopped).
    pub fn connection_closed(&mut self, error: &ConnectionError) {
        if self.closed().is_some() {
            return;
        }
        self.window_opened = true;
        if let Some(waker) = self.open_waiter.take() {
            waker.wake();
        }
        self.ledger.connection_closed(error, A::consumer_changed);
        for (_, record) in self.ledger.channel_records() {
            A::returns_changed(&mut record.extra);
        }
        // Every request and confirm was failed by the core before its
        // Closed event; what is left has no waiter.
        self.replies.wake_all();
        self.opens.clear();
        for (_, waker) in self.confirm_waiters.drain() {
            waker.wake();
        }
    }

    /// Keeps `waker` for the handshake's end.
    pub fn wait_open(&mut self, waker: A::Waker) {
        self.open_waiter = Some(waker);
    }

    // Recovery: the adapter opens sockets; the supervisor decides.

    /// True while no socket is usable (between a failure and the next
    /// socket of a recovery).
    #[must_use]
    pub fn is_between_sockets(&self) -> bool {
        self.supervisor
            .as_ref()
            .is_some_and(Supervisor::is_between_sockets)
    }

    /// True while the adapter opens a socket for a recovery.
    #[must_use]
    pub fn is_connecting(&self) -> bool {
        self.supervisor
            .as_ref()
            .is_some_and(Supervisor::is_connecting)
    }

    /// True from a failure until the topology is declared again.
    #[must_use]
    pub fn is_recovering(&self) -> bool {
        self.supervisor
            .as_ref()
            .is_some_and(Supervisor::is_recovering)
    }

    /// When the next reconnection attempt is due, while one is awaited.
    #[must_use]
    pub fn reconnect_due(&self) -> Option<Instant> {
        self.supervisor.as_ref().and_then(Supervisor::poll_timeout)
    }

    /// The core's next deadline, unless there is no socket to serve it.
    #[must_use]
    pub fn core_deadline(&self) -> Option<Instant> {
        if self.is_between_sockets() {
            None
        } else {
            self.core.poll_timeout()
        }
    }

    /// Fires the core's timers, unless there is no socket to serve them.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_between_sockets() {
            self.core.handle_timeout(now);
        }
    }

    /// The adapter is about to open a socket for a recovery: true if an
    /// attempt is due by `now`. Returns the options' config to use.
    pub fn start_attempt(&mut self, now: Instant) -> bool {
        let started = !self.shutdown
            && self
                .supervisor
                .as_mut()
                .is_some_and(|supervisor| supervisor.start_attempt(now));
        if started {
            self.attempts = self.attempts.saturating_add(1);
            self.connect_span = Some(LifecycleSpan::connect(
                &self.telemetry.peer(),
                self.attempts,
                true,
            ));
        }
        started
    }

    /// Recovery ended without a connection: report it, end its span.
    fn recovery_given_up(&mut self, error: &ConnectionError) {
        telemetry::events::recovery_given_up(&self.telemetry.peer(), error);
        if let Some(span) = self.recover_span.take() {
            span.record_attempts(self.attempts);
            span.failed(error);
        }
        self.attempts = 0;
    }

    /// The recovery's socket is open: the core declares the topology
    /// again on it.
    pub fn reconnected(&mut self, now: Instant) {
        if self.shutdown {
            return;
        }
        if let Some(supervisor) = self.supervisor.as_mut() {
            supervisor.connected();
        }
        self.replace_core(now);
    }

    /// Puts a recovery's core in the place of the current one, which keeps
    /// its topology and counters for it.
    fn replace_core(&mut self, now: Instant) {
        self.earlier_stats = self.core.stats().with_earlier(&self.earlier_stats);
        let topology = self.core.topology().cloned().unwrap_or_default();
        self.core = Core::recover(self.config.clone(), topology, now);
    }

    /// What went over the connection, summed over the cores a recovery
    /// replaced (the gauges are the current core's).
    #[must_use]
    pub fn stats(&self) -> amqp_proto::Stats {
        self.core.stats().with_earlier(&self.earlier_stats)
    }

    /// The recovery's socket could not be opened.
    pub fn reconnect_failed(&mut self, error: &ConnectionError, now: Instant) {
        let decision = self.supervisor.as_mut().map(|supervisor| {
            supervisor.connect_failed(error.clone(), now, crate::recovery::jitter_seed())
        });
        if let Some(span) = self.connect_span.take() {
            span.failed(error);
        }
        if !matches!(decision, Some(Decision::ReconnectAt(_))) {
            self.recovery_given_up(error);
            self.connection_closed(error);
        }
    }

    /// The last bytes of a core a recovery replaced: write them to the old
    /// socket before shutting it.
    pub fn take_final_output(&mut self) -> Vec<bytes::Bytes> {
        std::mem::take(&mut self.final_output)
    }

    /// Reports for the application's recovery handler.
    pub fn take_recovery_events(&mut self) -> Vec<RecoveryEvent> {
        self.supervisor
            .as_mut()
            .map_or_else(Vec::new, |supervisor| {
                std::iter::from_fn(|| supervisor.poll_event()).collect()
            })
    }
}

#[cfg(test)]
mod tests;
