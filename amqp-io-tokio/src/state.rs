//! The state every handle and the driver share: the core, and who waits
//! for what. Handles queue commands into the core under the lock and wake
//! the driver; the driver feeds the core and sorts its events to the
//! waiters (one-shot channels for replies and confirms, wakers for consumer
//! streams, a `Notify` for everything polled by condition).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use amqp_io_common::{Error, SaslResponder};
use amqp_proto::codec::{FieldTable, ShortString};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{BasicCancel, BasicReject, Method};
use amqp_proto::{
    CloseReason, ConfirmOutcome, Connection as Core, ConnectionError, Delivery, Event, Failure,
    GetMessage, RequestId, Returned, Tuning,
};
use tokio::sync::{oneshot, watch, Notify};

/// Returned messages kept per channel for its return stream before the
/// oldest are dropped.
const MAX_KEPT_RETURNS: usize = 1_024;

/// A synchronous request's answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Method(Method),
    Get(Box<GetMessage>),
}

pub(crate) type ReplySender = oneshot::Sender<Result<Reply, Failure>>;

/// A consumer's identity on a connection: its channel and tag.
pub(crate) type ConsumerKey = (u16, ShortString);

/// Why a consumer receives nothing more.
#[derive(Debug, Clone)]
pub(crate) enum ConsumerEnd {
    /// The application cancelled it: the stream just ends.
    Cancelled,
    /// The server cancelled it (its queue was deleted).
    CancelledByServer,
    Channel(CloseReason),
    Connection(ConnectionError),
}

impl ConsumerEnd {
    /// The error a consumer stream yields before it ends, if any.
    pub(crate) fn error(&self, tag: &ShortString) -> Option<Error> {
        match self {
            Self::Cancelled => None,
            Self::CancelledByServer => Some(Error::ConsumerCancelled(tag.to_string())),
            Self::Channel(reason) => Some(Error::ChannelClosed(reason.clone())),
            Self::Connection(error) => Some(Error::ConnectionClosed(error.clone())),
        }
    }
}

pub(crate) struct ConsumerState {
    pub(crate) generation: u64,
    no_ack: bool,
    pub(crate) queue: VecDeque<Delivery>,
    pub(crate) end: Option<ConsumerEnd>,
    pub(crate) waker: Option<Waker>,
    /// Nobody reads it any more: deliveries go back to the queue.
    abandoned: bool,
}

/// A `basic.consume` awaiting its `consume-ok`.
pub(crate) struct PendingConsume {
    pub(crate) generation: u64,
    pub(crate) no_ack: bool,
}

/// What the adapter knows about one opening of a channel id.
pub(crate) struct ChannelState {
    pub(crate) generation: u64,
    pub(crate) closed: Option<CloseReason>,
    /// `basic.nack`s and failures since the last batch wait.
    pub(crate) nacked_since_wait: u64,
    pub(crate) failed_since_wait: Option<Failure>,
    pub(crate) returns: VecDeque<Returned>,
    pub(crate) returns_waker: Option<Waker>,
}

/// Everything behind the connection lock.
pub(crate) struct State {
    pub(crate) core: Core,
    sasl_responder: Option<SaslResponder>,
    pub(crate) open_waiter: Option<oneshot::Sender<Result<(), Error>>>,
    pub(crate) opened: Option<(Tuning, FieldTable)>,
    pub(crate) replies: HashMap<RequestId, ReplySender>,
    pub(crate) channel_opens: HashMap<u16, oneshot::Sender<Result<(), Error>>>,
    pub(crate) channels: HashMap<u16, ChannelState>,
    pub(crate) confirms: HashMap<(u16, u64), oneshot::Sender<ConfirmOutcome>>,
    pub(crate) pending_consumes: HashMap<RequestId, PendingConsume>,
    pub(crate) consumers: HashMap<ConsumerKey, ConsumerState>,
    pub(crate) buffered_deliveries: usize,
    max_buffered_deliveries: usize,
    next_generation: u64,
    pub(crate) blocked: watch::Sender<Option<String>>,
    pub(crate) closed: Option<ConnectionError>,
    /// This side's socket address.
    pub(crate) local_addr: Option<std::net::SocketAddr>,
}

impl State {
    pub(crate) fn new(core: Core, sasl_responder: Option<SaslResponder>) -> Self {
        let max_buffered_deliveries = core.config().max_buffered_events;
        Self {
            core,
            sasl_responder,
            open_waiter: None,
            opened: None,
            replies: HashMap::new(),
            channel_opens: HashMap::new(),
            channels: HashMap::new(),
            confirms: HashMap::new(),
            pending_consumes: HashMap::new(),
            consumers: HashMap::new(),
            buffered_deliveries: 0,
            max_buffered_deliveries,
            next_generation: 1,
            blocked: watch::Sender::new(None),
            closed: None,
            local_addr: None,
        }
    }

    /// True while the driver should read the socket: the core is not
    /// closed and the consumer streams have room. A slow consumer thus
    /// stops reading and the broker keeps the rest.
    pub(crate) fn wants_input(&self) -> bool {
        self.core.wants_input() && self.buffered_deliveries < self.max_buffered_deliveries
    }

    /// Starts the record of a channel the core just opened.
    pub(crate) fn channel_opened(&mut self, id: u16) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.consumers.retain(|(channel, _), _| *channel != id);
        self.channels.insert(
            id,
            ChannelState {
                generation,
                closed: None,
                nacked_since_wait: 0,
                failed_since_wait: None,
                returns: VecDeque::new(),
                returns_waker: None,
            },
        );
        generation
    }

    /// The channel's record, or why it is unusable.
    pub(crate) fn channel(&mut self, id: u16, generation: u64) -> Result<&mut ChannelState, Error> {
        if let Some(error) = &self.closed {
            return Err(Error::ConnectionClosed(error.clone()));
        }
        match self.channels.get_mut(&id) {
            Some(state) if state.generation == generation => match &state.closed {
                Some(reason) => Err(Error::ChannelClosed(reason.clone())),
                None => Ok(state),
            },
            _ => Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(id))),
        }
    }

    /// Sorts the core's events to their waiters.
    pub(crate) fn dispatch(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.handle_event(event);
        }
    }

    /// Sends a method nobody waits for (cleanup after a dropped future);
    /// its reply, if any, is discarded.
    fn send_unattended(&mut self, channel: u16, method: impl Into<Method>) {
        if let Ok(mut handle) = self.core.channel(channel) {
            let _ = handle.request(method);
        }
    }

    fn handle_event(&mut self, event: Event) {
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
                        self.consumer_ended(channel, &ok.consumer_tag, ConsumerEnd::Cancelled);
                        None
                    }
                    _ => None,
                };
                let delivered = self
                    .replies
                    .remove(&request)
                    .is_some_and(|waiter| waiter.send(Ok(Reply::Method(method))).is_ok());
                if let (false, Some(key)) = (delivered, started) {
                    self.abandon_consumer(&key);
                }
            }
            Event::GetOk {
                channel,
                request,
                message,
            } => {
                let tag = message.delivery_tag;
                let delivered = self
                    .replies
                    .remove(&request)
                    .is_some_and(|waiter| waiter.send(Ok(Reply::Get(message))).is_ok());
                if !delivered {
                    let reject = BasicReject {
                        delivery_tag: tag,
                        requeue: true,
                    };
                    self.send_unattended(channel, reject);
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
            Event::Delivery(delivery) => self.delivered(delivery),
            Event::Returned(returned) => {
                if let Some(state) = self.channels.get_mut(&returned.channel) {
                    if state.returns.len() >= MAX_KEPT_RETURNS {
                        state.returns.pop_front();
                    }
                    state.returns.push_back(*returned);
                    if let Some(waker) = state.returns_waker.take() {
                        waker.wake();
                    }
                }
            }
            Event::Confirm {
                channel,
                sequence,
                outcome,
            } => {
                if let Some(state) = self.channels.get_mut(&channel) {
                    match &outcome {
                        ConfirmOutcome::Ack => {}
                        ConfirmOutcome::Nack => state.nacked_since_wait += 1,
                        ConfirmOutcome::Failed(failure) => {
                            state.failed_since_wait = Some(failure.clone());
                        }
                    }
                }
                if let Some(waiter) = self.confirms.remove(&(channel, sequence)) {
                    let _ = waiter.send(outcome);
                }
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => self.consumer_ended(channel, &consumer_tag, ConsumerEnd::CancelledByServer),
            Event::Blocked { reason } => {
                self.blocked
                    .send_replace(Some(reason.to_string_lossy().into_owned()));
            }
            Event::Unblocked => {
                self.blocked.send_replace(None);
            }
            Event::ChannelClosed { channel, reason } => {
                if let Some(state) = self.channels.get_mut(&channel) {
                    state.closed = Some(reason.clone());
                    if let Some(waker) = state.returns_waker.take() {
                        waker.wake();
                    }
                }
                if let Some(waiter) = self.channel_opens.remove(&channel) {
                    let _ = waiter.send(Err(Error::ChannelClosed(reason.clone())));
                }
                let ended: Vec<_> = self
                    .consumers
                    .keys()
                    .filter(|(id, _)| *id == channel)
                    .cloned()
                    .collect();
                for (id, tag) in ended {
                    self.consumer_ended(id, &tag, ConsumerEnd::Channel(reason.clone()));
                }
            }
            Event::Closed(error) => self.connection_closed(error),
            // Flow shows in the core's publish readiness.
            _ => {}
        }
    }

    /// Records the end of the connection and wakes everyone waiting on it.
    pub(crate) fn connection_closed(&mut self, error: ConnectionError) {
        if let Some(waiter) = self.open_waiter.take() {
            let _ = waiter.send(Err(Error::ConnectionClosed(error.clone())));
        }
        for (_, waiter) in self.channel_opens.drain() {
            let _ = waiter.send(Err(Error::ConnectionClosed(error.clone())));
        }
        for consumer in self.consumers.values_mut() {
            if consumer.end.is_none() {
                consumer.end = Some(ConsumerEnd::Connection(error.clone()));
            }
            if let Some(waker) = consumer.waker.take() {
                waker.wake();
            }
        }
        for channel in self.channels.values_mut() {
            if let Some(waker) = channel.returns_waker.take() {
                waker.wake();
            }
        }
        // Every request and confirm was failed by the core before its
        // Closed event; what is left has no waiter.
        self.replies.clear();
        self.confirms.clear();
        self.closed = Some(error);
    }

    fn consumer_started(
        &mut self,
        channel: u16,
        request: RequestId,
        tag: ShortString,
    ) -> Option<ConsumerKey> {
        let pending = self.pending_consumes.remove(&request)?;
        let key = (channel, tag);
        self.register_consumer(key.clone(), &pending);
        Some(key)
    }

    /// Starts the queue that deliveries for `key` are sorted into.
    pub(crate) fn register_consumer(&mut self, key: ConsumerKey, pending: &PendingConsume) {
        self.consumers.insert(
            key,
            ConsumerState {
                generation: pending.generation,
                no_ack: pending.no_ack,
                queue: VecDeque::new(),
                end: None,
                waker: None,
                abandoned: false,
            },
        );
    }

    fn consumer_ended(&mut self, channel: u16, tag: &ShortString, end: ConsumerEnd) {
        let key = (channel, tag.clone());
        let Some(consumer) = self.consumers.get_mut(&key) else {
            return;
        };
        if consumer.abandoned {
            self.buffered_deliveries -= consumer.queue.len();
            self.consumers.remove(&key);
            return;
        }
        if consumer.end.is_none() {
            consumer.end = Some(end);
        }
        if let Some(waker) = consumer.waker.take() {
            waker.wake();
        }
    }

    fn delivered(&mut self, delivery: Delivery) {
        let key = (delivery.channel, delivery.consumer_tag.clone());
        match self.consumers.get_mut(&key) {
            Some(consumer) if !consumer.abandoned => {
                consumer.queue.push_back(delivery);
                self.buffered_deliveries += 1;
                if let Some(waker) = consumer.waker.take() {
                    waker.wake();
                }
            }
            Some(consumer) if consumer.no_ack => {}
            _ => {
                let reject = BasicReject {
                    delivery_tag: delivery.delivery_tag,
                    requeue: true,
                };
                self.send_unattended(delivery.channel, reject);
            }
        }
    }

    /// Nobody will read this consumer any more: give back what it holds,
    /// cancel it with the server, and give back what arrives meanwhile.
    pub(crate) fn abandon_consumer(&mut self, key: &ConsumerKey) {
        let Some(consumer) = self.consumers.get_mut(key) else {
            return;
        };
        let unread = std::mem::take(&mut consumer.queue);
        let (ended, no_ack) = (consumer.end.is_some(), consumer.no_ack);
        consumer.abandoned = true;
        self.buffered_deliveries -= unread.len();
        if !no_ack {
            for delivery in unread {
                let reject = BasicReject {
                    delivery_tag: delivery.delivery_tag,
                    requeue: true,
                };
                self.send_unattended(key.0, reject);
            }
        }
        if ended {
            self.consumers.remove(key);
        } else {
            let cancel = BasicCancel {
                consumer_tag: key.1.clone(),
                nowait: false,
            };
            self.send_unattended(key.0, cancel);
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
}

impl Shared {
    pub(crate) fn new(state: State) -> Self {
        Self {
            state: Mutex::new(state),
            wake_driver: Notify::new(),
            changed: Notify::new(),
        }
    }

    /// Locks the state; a panic elsewhere while it was held leaves it
    /// usable (no code of ours panics under it by design).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
