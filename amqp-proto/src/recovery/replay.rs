//! Declaring a recorded topology again on a new connection, one request at
//! a time: the application's channels (same ids, same modes and qos), then
//! exchanges, queues and bindings on a channel of its own, then consumers
//! with their tags.
//!
//! One request in flight keeps failure handling exact: a refused step is
//! the one in flight, and a channel the server closed is reopened before
//! the next. Topologies are small, so the round trips cost milliseconds.
//!
//! The same replay reopens a single channel the server closed for a
//! consumer timeout, on a connection that stays open
//! ([`Replay::channel`]): its mode and qos, then its consumers.

use std::collections::VecDeque;

use crate::codec::ShortString;
use crate::error::CloseReason;
use crate::event::{Event, Failure, RequestId};
use crate::spec::Method;

use super::topology::{Binding, RecordedChannel, Topology};

/// One thing to send.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Reopen a channel (an application's, or the one for declarations).
    Open(u16),
    /// A request whose reply is awaited; for a server-named queue's
    /// declaration, `replaces` is the name the queue had before.
    Request {
        channel: u16,
        method: Method,
        replaces: Option<ShortString>,
    },
    /// Close the declarations channel.
    Close(u16),
}

/// A step the server refused.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryFailure {
    /// The channel it was sent on.
    pub channel: u16,
    /// What was sent (`queue.declare`, `basic.consume`, ...).
    pub method: &'static str,
    /// Why it failed.
    pub failure: Failure,
}

/// What is awaited.
#[derive(Debug)]
enum Awaiting {
    Nothing,
    Reply { request: RequestId, step: Box<Step> },
    ChannelClosed(u16),
}

/// What a replay declares again.
#[derive(Debug)]
enum Scope {
    /// A whole topology, on a new connection.
    Connection,
    /// One channel the server closed, on the same connection.
    Channel { id: u16, reason: CloseReason },
}

#[derive(Debug)]
pub(crate) struct Replay {
    scope: Scope,
    steps: VecDeque<Step>,
    awaiting: Awaiting,
    /// The channel for exchanges, queues and bindings.
    declarations: u16,
    /// The declarations channel is open (or opening) for the declarations:
    /// only then are its id's events the replay's. With every id taken by
    /// the application, an application channel reopens on that id later.
    declaring: bool,
    /// The declarations are done (their channel closed), or there are none.
    declared: bool,
    /// Application channels the server closed during the replay: their
    /// remaining steps are skipped, and the application saw the close.
    lost: Vec<u16>,
    renamed: Vec<(ShortString, ShortString)>,
    failures: Vec<RecoveryFailure>,
}

/// What the connection must do next for the replay.
#[derive(Debug)]
pub(crate) enum Next {
    Send(Step),
    /// Waiting for a reply.
    Wait,
    /// All done: emit this event.
    Done(Event),
}

impl Replay {
    pub(crate) fn new(topology: &Topology, channel_max: u16) -> Self {
        let mut steps = VecDeque::new();
        // The lowest id no application channel uses. When the application
        // uses every id the server allows, the declarations go first, on
        // a channel closed again before the application's reopen: opening
        // an id already open is a connection error (504), and the recovery
        // would fail the same way at every attempt.
        let free = (1..=channel_max.max(1))
            .find(|id| topology.channels().iter().all(|channel| channel.id != *id));
        let declarations = free.unwrap_or(channel_max.max(1));
        if free.is_some() {
            for channel in topology.channels() {
                channel_steps(channel, &mut steps);
            }
        }
        if !topology.declares_nothing() {
            let request = |method: Method| Step::Request {
                channel: declarations,
                method,
                replaces: None,
            };
            steps.push_back(Step::Open(declarations));
            steps.extend(
                topology
                    .exchanges()
                    .iter()
                    .cloned()
                    .map(|e| request(e.into())),
            );
            steps.extend(topology.queues().iter().map(|queue| Step::Request {
                channel: declarations,
                method: queue.declare.clone().into(),
                replaces: queue.is_server_named().then(|| queue.name.clone()),
            }));
            // Exchange-to-exchange bindings first: queue bindings may route
            // through them, and neither depends on the other to succeed.
            let exchange_bindings = topology.bindings().iter().filter_map(|b| match b {
                Binding::Exchange(bind) => Some(request(bind.clone().into())),
                Binding::Queue(_) => None,
            });
            steps.extend(exchange_bindings.collect::<Vec<_>>());
            let queue_bindings = topology.bindings().iter().filter_map(|b| match b {
                Binding::Queue(bind) => Some(request(bind.clone().into())),
                Binding::Exchange(_) => None,
            });
            steps.extend(queue_bindings.collect::<Vec<_>>());
            steps.push_back(Step::Close(declarations));
        }
        if free.is_none() {
            for channel in topology.channels() {
                channel_steps(channel, &mut steps);
            }
        }
        for channel in topology.channels() {
            consumer_steps(channel, &mut steps);
        }
        Self {
            scope: Scope::Connection,
            steps,
            awaiting: Awaiting::Nothing,
            declarations,
            declaring: false,
            declared: topology.declares_nothing(),
            lost: Vec::new(),
            renamed: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Reopens `channel`, which the server closed with `reason`, on the
    /// connection it was open on: its mode, qos and consumers.
    pub(crate) fn channel(channel: &RecordedChannel, reason: CloseReason) -> Self {
        let mut steps = VecDeque::new();
        channel_steps(channel, &mut steps);
        consumer_steps(channel, &mut steps);
        Self {
            scope: Scope::Channel {
                id: channel.id,
                reason,
            },
            steps,
            awaiting: Awaiting::Nothing,
            // No channel of declarations: 0 names no channel that closes.
            declarations: 0,
            declaring: false,
            declared: true,
            lost: Vec::new(),
            renamed: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// The channel a single-channel replay reopens.
    pub(crate) fn reopening(&self) -> Option<u16> {
        match self.scope {
            Scope::Channel { id, .. } => Some(id),
            Scope::Connection => None,
        }
    }

    /// True if `channel` is one this replay declares on.
    fn concerns(&self, channel: u16) -> bool {
        self.reopening().map_or(true, |id| id == channel)
    }

    /// The next step to send, skipping those of lost channels.
    pub(crate) fn next(&mut self) -> Next {
        if !matches!(self.awaiting, Awaiting::Nothing) {
            return Next::Wait;
        }
        while let Some(mut step) = self.steps.pop_front() {
            let channel = match &step {
                Step::Open(id) | Step::Close(id) => *id,
                Step::Request { channel, .. } => *channel,
            };
            if self.lost.contains(&channel) {
                continue;
            }
            if let Step::Request { method, .. } = &mut step {
                self.apply_renames(method);
            }
            return Next::Send(step);
        }
        let failures = std::mem::take(&mut self.failures);
        Next::Done(match &self.scope {
            Scope::Connection => Event::Recovered {
                renamed_queues: std::mem::take(&mut self.renamed),
                failures,
            },
            Scope::Channel { id, reason } => Event::ChannelRecovered {
                channel: *id,
                reason: reason.clone(),
                failures,
            },
        })
    }

    /// `step` was sent as `request` (`None` for a close, which is settled by
    /// the channel's close event).
    pub(crate) fn sent(&mut self, step: Step, request: Option<RequestId>) {
        if matches!(step, Step::Open(id) if id == self.declarations && !self.declared) {
            self.declaring = true;
        }
        self.awaiting = match (request, &step) {
            (_, Step::Close(id)) => Awaiting::ChannelClosed(*id),
            (Some(request), _) => Awaiting::Reply {
                request,
                step: Box::new(step),
            },
            (None, _) => Awaiting::Nothing,
        };
    }

    /// Offers an event; returns it back if it is the application's.
    pub(crate) fn intercept(&mut self, event: Event) -> Option<Event> {
        let awaited = match &self.awaiting {
            Awaiting::Reply { request, .. } => Some(*request),
            _ => None,
        };
        match event {
            Event::ChannelOpened { request, .. } if Some(request) == awaited => {
                self.awaiting = Awaiting::Nothing;
                None
            }
            Event::Reply {
                request, method, ..
            } if Some(request) == awaited => {
                if let (Awaiting::Reply { step, .. }, Method::QueueDeclareOk(ok)) =
                    (&self.awaiting, &method)
                {
                    if let Step::Request {
                        replaces: Some(old),
                        ..
                    } = step.as_ref()
                    {
                        self.renamed.push((old.clone(), ok.queue.clone()));
                    }
                }
                self.awaiting = Awaiting::Nothing;
                None
            }
            Event::RequestFailed {
                channel,
                request,
                failure,
            } if Some(request) == awaited => {
                let Awaiting::Reply { step, .. } =
                    std::mem::replace(&mut self.awaiting, Awaiting::Nothing)
                else {
                    return None;
                };
                let method = match step.as_ref() {
                    Step::Request { method, .. } => method.name(),
                    Step::Open(_) | Step::Close(_) => "channel.open",
                };
                self.record_failure(channel, method, failure.clone());
                if self.declares_on(channel) {
                    if matches!(failure, Failure::Channel(_)) {
                        // The server closed it: open it again for the rest.
                        self.steps.push_front(Step::Open(channel));
                    }
                } else {
                    self.lost.push(channel);
                }
                None
            }
            Event::ChannelClosed { channel, .. } if self.declares_on(channel) => {
                if matches!(self.awaiting, Awaiting::ChannelClosed(id) if id == channel) {
                    self.awaiting = Awaiting::Nothing;
                    self.declaring = false;
                    self.declared = true;
                }
                None
            }
            Event::ChannelClosed { channel, reason } => {
                // An application channel closed by the server mid-replay:
                // the application hears of it, and its steps are skipped.
                if self.concerns(channel) {
                    self.lost.push(channel);
                }
                Some(Event::ChannelClosed { channel, reason })
            }
            other => Some(other),
        }
    }

    /// True if `channel` is the declarations channel, open for them.
    fn declares_on(&self, channel: u16) -> bool {
        self.declaring && channel == self.declarations
    }

    /// Reports a refused (or unsendable) step.
    pub(crate) fn record_failure(&mut self, channel: u16, method: &'static str, failure: Failure) {
        self.failures.push(RecoveryFailure {
            channel,
            method,
            failure,
        });
    }

    /// A server-named queue's old name, in bindings and consumers sent
    /// later, becomes the new one.
    fn apply_renames(&self, method: &mut Method) {
        let rename = |queue: &mut ShortString| {
            if let Some((_, new)) = self.renamed.iter().find(|(old, _)| old == queue) {
                *queue = new.clone();
            }
        };
        match method {
            Method::QueueBind(bind) => rename(&mut bind.queue),
            Method::BasicConsume(consume) => rename(&mut consume.queue),
            _ => {}
        }
    }
}

/// Reopening `channel`: its open, then its confirm or transaction mode and
/// qos (consumers come last, once every queue is declared again).
fn channel_steps(channel: &RecordedChannel, steps: &mut VecDeque<Step>) {
    steps.push_back(Step::Open(channel.id));
    let id = channel.id;
    let request = |method: Method| Step::Request {
        channel: id,
        method,
        replaces: None,
    };
    if channel.confirms {
        steps.push_back(request(crate::spec::ConfirmSelect::default().into()));
    }
    if channel.transactional {
        steps.push_back(request(crate::spec::TxSelect::default().into()));
    }
    steps.extend(channel.qos.iter().cloned().map(|qos| request(qos.into())));
}

/// Consuming again on `channel`, with the same tags.
fn consumer_steps(channel: &RecordedChannel, steps: &mut VecDeque<Step>) {
    steps.extend(channel.consumers.iter().map(|consume| Step::Request {
        channel: channel.id,
        method: consume.clone().into(),
        replaces: None,
    }));
}
