//! The state every handle and the driver share: the core, and who waits
//! for what. Handles queue commands into the core under the lock and wake
//! the driver; the driver feeds the core and sorts its events to the
//! waiters (one-shot channels for replies, wakers for confirms, consumer
//! and return streams, a `Notify` for everything polled by condition).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use amqp_io_common::ledger::{Cleanup, ConsumerEnd, ConsumerKey, Ledger, Sorted};
use amqp_io_common::map::Map;
use amqp_io_common::recovery::{RecoveryEvent, RecoveryHandler};
use amqp_io_common::{ConnectOptions, Error, SaslResponder};
use amqp_proto::codec::FieldTable;
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicCancel, BasicReject, Method};
use amqp_proto::{
    Connection as Core, ConnectionError, Event, Failure, GetMessage, RequestId, Tuning,
};
use tokio::sync::{oneshot, watch, Notify};

/// A synchronous request's answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Method(Method),
    Get(Box<GetMessage>),
}

pub(crate) type ReplySender = oneshot::Sender<Result<Reply, Failure>>;

/// What this adapter keeps per channel: who waits for its returns.
#[derive(Default)]
pub(crate) struct ChannelExtra {
    pub(crate) returns_waker: Option<Waker>,
}

/// What this adapter keeps per consumer: the waker of its stream.
pub(crate) type ConsumerExtra = Option<Waker>;

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// A `basic.consume` awaiting its `consume-ok`.
pub(crate) struct PendingConsume {
    pub(crate) generation: u64,
    pub(crate) no_ack: bool,
}

/// Automatic recovery's settings and progress.
pub(crate) struct Recovery {
    /// How to connect again (the original options).
    pub(crate) options: ConnectOptions,
    pub(crate) backoff: amqp_proto::Backoff,
    /// The application's handler; taken out while the driver runs it.
    pub(crate) handler: Option<RecoveryHandler>,
    /// Reports for the handler, run by the driver outside the lock.
    pub(crate) events: Vec<RecoveryEvent>,
    /// The connection failed and is to be recovered: why.
    pub(crate) pending: Option<ConnectionError>,
    /// A recovered connection is being set up (handshake and replay).
    pub(crate) attempting: bool,
    /// Attempts made since the connection last worked.
    pub(crate) attempts: u32,
}

/// Everything behind the connection lock.
pub(crate) struct State {
    pub(crate) core: Core,
    sasl_responder: Option<SaslResponder>,
    pub(crate) open_waiter: Option<oneshot::Sender<Result<(), Error>>>,
    pub(crate) opened: Option<(Tuning, FieldTable)>,
    pub(crate) replies: Map<RequestId, ReplySender>,
    pub(crate) channel_opens: Map<u16, oneshot::Sender<Result<(), Error>>>,
    /// Confirmations polled before their confirm arrived, by channel and
    /// sequence number.
    pub(crate) confirm_waiters: Map<(u16, u64), Waker>,
    pub(crate) pending_consumes: Map<RequestId, PendingConsume>,
    pub(crate) ledger: Ledger<ChannelExtra, ConsumerExtra>,
    max_buffered_deliveries: usize,
    pub(crate) blocked: watch::Sender<Option<String>>,
    /// This side's socket address.
    pub(crate) local_addr: Option<std::net::SocketAddr>,
    /// Set when a confirm window drained to its low watermark (or a
    /// channel closed) during dispatch; the driver then wakes publishers.
    pub(crate) window_opened: bool,
    /// Automatic recovery, when the options asked for it.
    pub(crate) recovery: Option<Recovery>,
    /// The application closed the connection or dropped every handle: no
    /// recovery any more.
    pub(crate) shutdown: bool,
}

impl State {
    pub(crate) fn new(core: Core, sasl_responder: Option<SaslResponder>) -> Self {
        let max_buffered_deliveries = core.config().max_buffered_events;
        Self {
            core,
            sasl_responder,
            open_waiter: None,
            opened: None,
            replies: Map::default(),
            channel_opens: Map::default(),
            confirm_waiters: Map::default(),
            pending_consumes: Map::default(),
            ledger: Ledger::default(),
            max_buffered_deliveries,
            blocked: watch::Sender::new(None),
            local_addr: None,
            window_opened: false,
            recovery: None,
            shutdown: false,
        }
    }

    /// Why the connection ended, once it has.
    pub(crate) fn closed(&self) -> Option<&ConnectionError> {
        self.ledger.connection_error()
    }

    /// True while the driver should read the socket: the core is not
    /// closed and the consumer streams have room. A slow consumer thus
    /// stops reading and the broker keeps the rest.
    pub(crate) fn wants_input(&self) -> bool {
        self.core.wants_input() && self.ledger.buffered_deliveries() < self.max_buffered_deliveries
    }

    /// The channel's record, or why it is unusable.
    pub(crate) fn channel(
        &mut self,
        id: u16,
        generation: u64,
    ) -> Result<&mut amqp_io_common::ledger::ChannelRecord<ChannelExtra>, Error> {
        self.ledger.channel(id, generation)
    }

    /// Sorts the core's events to their waiters. `live_confirmations` is
    /// how many [`Confirmation`](crate::Confirmation)s exist: with none, no
    /// refused confirm needs keeping.
    pub(crate) fn dispatch(&mut self, live_confirmations: usize) {
        while let Some(event) = self.core.poll_event() {
            self.handle_event(event, live_confirmations);
        }
        if live_confirmations == 0 {
            self.ledger.forget_refusals(None);
        }
    }

    /// Sends what the bookkeeping asks for (cleanup after dropped
    /// futures); replies to it are discarded.
    pub(crate) fn clean_up(&mut self, cleanup: Vec<Cleanup>) {
        for action in cleanup {
            let (channel, method): (u16, Method) = match action {
                Cleanup::Requeue {
                    channel,
                    delivery_tag,
                } => {
                    let reject = BasicReject {
                        delivery_tag,
                        requeue: true,
                    };
                    (channel, reject.into())
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
                let _ = handle.request(method);
            }
        }
    }

    fn handle_event(&mut self, event: Event, live_confirmations: usize) {
        match event {
            Event::Opened {
                tuning,
                server_properties,
            } => {
                self.opened = Some((tuning, server_properties));
                if let Some(waiter) = self.open_waiter.take() {
                    let _ = waiter.send(Ok(()));
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
            Event::ChannelOpened { channel, .. } => {
                let delivered = self
                    .channel_opens
                    .remove(&channel)
                    .is_some_and(|waiter| waiter.send(Ok(())).is_ok());
                if !delivered {
                    // The opener stopped waiting: nobody holds the channel.
                    if let Ok(handle) = self.core.channel(channel) {
                        let _ = handle.close(ReplyCode::REPLY_SUCCESS, "abandoned");
                    }
                }
            }
            Event::Reply {
                channel,
                request,
                method,
            } => {
                let started = match &method {
                    Method::BasicConsumeOk(ok) => {
                        self.consumer_started(channel, request, ok.consumer_tag.clone())
                    }
                    Method::BasicCancelOk(ok) => {
                        let ended = self.ledger.consumer_ended(
                            channel,
                            &ok.consumer_tag,
                            ConsumerEnd::Cancelled,
                        );
                        if let Some(waker) = ended {
                            wake(waker);
                        }
                        None
                    }
                    _ => None,
                };
                let delivered = self
                    .replies
                    .remove(&request)
                    .is_some_and(|waiter| waiter.send(Ok(Reply::Method(method))).is_ok());
                if let (false, Some((key, generation))) = (delivered, started) {
                    let cleanup = self.ledger.abandon_consumer(&key, generation);
                    self.clean_up(cleanup);
                }
            }
            Event::GetOk {
                channel,
                request,
                message,
            } => {
                let delivery_tag = message.delivery_tag;
                let delivered = self
                    .replies
                    .remove(&request)
                    .is_some_and(|waiter| waiter.send(Ok(Reply::Get(message))).is_ok());
                if !delivered {
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
                if let Some(waiter) = self.replies.remove(&request) {
                    let _ = waiter.send(Err(failure));
                } else if let Some(waiter) = self.channel_opens.remove(&channel) {
                    let _ = waiter.send(Err(failure.into()));
                }
            }
            Event::Delivery(delivery) => match self.ledger.delivered(delivery) {
                Sorted::Queued(waker) => wake(waker),
                Sorted::Dropped => {}
                Sorted::Returned(cleanup) => self.clean_up(vec![cleanup]),
            },
            Event::Returned(returned) => {
                if let Some(record) = self.ledger.returned(*returned) {
                    wake(&mut record.extra.returns_waker);
                }
            }
            Event::Confirm {
                channel,
                sequence,
                outcome,
            } => {
                // Kept only while a confirmation may still ask for it.
                let keep_refusal = live_confirmations > 0;
                self.ledger
                    .confirmed(channel, sequence, outcome, keep_refusal);
                if !self.confirm_waiters.is_empty() {
                    if let Some(waker) = self.confirm_waiters.remove(&(channel, sequence)) {
                        waker.wake();
                    }
                }
                let low_watermark = self.core.config().max_unconfirmed / 2;
                if self.core.unconfirmed(channel) <= low_watermark {
                    self.window_opened = true;
                }
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                let end = ConsumerEnd::CancelledByServer;
                if let Some(waker) = self.ledger.consumer_ended(channel, &consumer_tag, end) {
                    wake(waker);
                }
            }
            Event::Blocked { reason } => {
                self.blocked
                    .send_replace(Some(reason.to_string_lossy().into_owned()));
            }
            Event::Unblocked => {
                self.blocked.send_replace(None);
            }
            Event::ChannelClosed { channel, reason } => {
                self.window_opened = true;
                self.ledger.channel_closed(channel, &reason, wake);
                if let Some(record) = self.ledger.channel_record(channel) {
                    wake(&mut record.extra.returns_waker);
                }
                if let Some(waiter) = self.channel_opens.remove(&channel) {
                    let _ = waiter.send(Err(Error::ChannelClosed(reason)));
                }
            }
            Event::Closed(error) => {
                if self.should_recover(&error) {
                    if let Some(recovery) = self.recovery.as_mut() {
                        recovery.attempting = false;
                        recovery.pending = Some(error);
                    }
                } else {
                    if let Some(recovery) = self.recovery.as_mut().filter(|r| r.attempting) {
                        recovery.attempting = false;
                        let error = error.clone();
                        recovery.events.push(RecoveryEvent::GaveUp { error });
                    }
                    self.connection_closed(&error);
                }
            }
            Event::Recovered {
                renamed_queues,
                failures,
            } => {
                if let Some(recovery) = self.recovery.as_mut() {
                    recovery.attempting = false;
                    recovery.attempts = 0;
                    recovery.events.push(RecoveryEvent::Recovered {
                        renamed_queues,
                        failures,
                    });
                }
            }
            // Flow shows in the core's publish readiness.
            _ => {}
        }
    }

    /// True when a failure should be recovered from: recovery is on, the
    /// connection had opened, the application has not closed it, and a new
    /// connection may cure the cause.
    fn should_recover(&self, error: &ConnectionError) -> bool {
        // A new connection that fails in any way (a broker still starting
        // may refuse it) is one failed attempt; only the first failure must
        // be one a new connection may cure.
        let attempting = self.recovery.as_ref().is_some_and(|r| r.attempting);
        self.recovery.is_some()
            && self.opened.is_some()
            && !self.shutdown
            && (attempting || error.is_recoverable())
            && self.core.topology().is_some()
    }

    /// Records the end of the connection and wakes everyone waiting on it.
    pub(crate) fn connection_closed(&mut self, error: &ConnectionError) {
        self.window_opened = true;
        if let Some(waiter) = self.open_waiter.take() {
            let _ = waiter.send(Err(Error::ConnectionClosed(error.clone())));
        }
        for (_, waiter) in self.channel_opens.drain() {
            let _ = waiter.send(Err(Error::ConnectionClosed(error.clone())));
        }
        self.ledger.connection_closed(error, wake);
        for (_, record) in self.ledger.channel_records() {
            wake(&mut record.extra.returns_waker);
        }
        // Every request and confirm was failed by the core before its
        // Closed event; what is left has no waiter.
        self.replies.clear();
        for (_, waker) in self.confirm_waiters.drain() {
            waker.wake();
        }
    }

    fn consumer_started(
        &mut self,
        channel: u16,
        request: RequestId,
        tag: amqp_proto::codec::ShortString,
    ) -> Option<(ConsumerKey, u64)> {
        let pending = self.pending_consumes.remove(&request)?;
        let key = (channel, tag);
        self.register_consumer(key.clone(), &pending);
        Some((key, pending.generation))
    }

    /// Starts the queue that deliveries for `key` are sorted into.
    pub(crate) fn register_consumer(&mut self, key: ConsumerKey, pending: &PendingConsume) {
        self.ledger
            .register_consumer(key, pending.generation, pending.no_ack, None);
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
}

impl Shared {
    pub(crate) fn new(state: State) -> Self {
        Self {
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

    /// Locks the state; a panic elsewhere while it was held leaves it
    /// usable (no code of ours panics under it by design).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
