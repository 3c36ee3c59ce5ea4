//! Automatic recovery as data: the core records what the application
//! declared on a connection ([`Topology`]), and a new connection made with
//! [`Connection::recover`](crate::Connection::recover) declares it again
//! before handing the channels back. When to reconnect and when to give up
//! is the [`Supervisor`]'s pure policy, waiting between attempts as
//! [`Backoff`] says; adapters only open the new socket.
//!
//! Publishes unconfirmed when the old connection failed are reported failed
//! (their [`Event::Confirm`] says so) and never sent again. Recovered
//! channels keep their ids; their delivery tags and
//! publish sequence numbers continue where the old connection's stopped, so
//! an acknowledgement of a delivery from before the failure is dropped
//! instead of acknowledging a new message.

mod backoff;
mod replay;
mod streams;
mod supervisor;
mod topology;

pub use backoff::Backoff;
pub use replay::RecoveryFailure;
pub(crate) use replay::{Next, Replay, Step};
pub use supervisor::{Decision, RecoveryEvent, Supervisor};
pub use topology::{Binding, RecordedChannel, RecordedQueue, Topology};

use crate::codec::ShortString;
use crate::event::{Event, RequestId};
use crate::spec::Method;

/// Keeps the [`Topology`] current while the connection runs.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) topology: Topology,
    /// Requests whose effect is recorded when their reply comes, in the
    /// order they were sent.
    pending: Vec<Pending>,
    /// Per channel, the queue its last `queue.declare` named: what an
    /// empty queue name in a later bind, unbind, delete or consume on that
    /// channel means to RabbitMQ. The record keeps the real name, so a
    /// replay on another channel binds the right queue.
    last_declared: Vec<(u16, ShortString)>,
    /// Where each stream consumer would resume.
    pub(crate) streams: streams::StreamPositions,
}

/// A request the record waits on.
#[derive(Debug)]
struct Pending {
    /// The reply that settles it: its own, or, for a `nowait` request sent
    /// while a `queue.declare` on its channel was unanswered, that
    /// declaration's (only then is the queue an empty name means known).
    settled_by: RequestId,
    channel: u16,
    method: Method,
}

impl Recorder {
    pub(crate) fn new(topology: Topology) -> Self {
        Self {
            topology,
            ..Self::default()
        }
    }

    /// The application sent `method` on `channel`.
    pub(crate) fn sent(&mut self, channel: u16, method: &Method, request: Option<RequestId>) {
        if let (Method::QueueDeclare(declare), None) = (method, request) {
            // A nowait declaration names its queue (the core refuses an
            // unnamed one), so the name is known at once.
            self.declared(channel, declare.queue.clone());
        }
        // A passive declaration records nothing, but it too names the
        // queue an empty name means afterwards.
        if !Topology::records(method) && !matches!(method, Method::QueueDeclare(_)) {
            return;
        }
        // Only a nowait request naming the queue "" can have to wait for
        // a declaration's reply; look for one only then.
        let unanswered_declaration = || {
            self.pending
                .iter()
                .rev()
                .find(|pending| {
                    pending.channel == channel && matches!(pending.method, Method::QueueDeclare(_))
                })
                .map(|pending| pending.settled_by)
        };
        let waits_for = match request {
            None if names_last_declared(method) => unanswered_declaration(),
            _ => None,
        };
        match (request, method) {
            (None, _) if waits_for.is_some() => {
                if let Some(settled_by) = waits_for {
                    self.pending.push(Pending {
                        settled_by,
                        channel,
                        method: method.clone(),
                    });
                }
            }
            // Cancelling is recorded at once: no delivery for the consumer
            // is wanted after a recovery, even if the cancel-ok was lost.
            (_, Method::BasicCancel(_)) | (None, _) => {
                let method = self.resolved(channel, method.clone());
                self.topology.confirmed(channel, &method, None);
            }
            (Some(request), _) => self.pending.push(Pending {
                settled_by: request,
                channel,
                method: method.clone(),
            }),
        }
    }

    /// `method` with an empty queue name replaced by the one it stands for.
    fn resolved(&self, channel: u16, mut method: Method) -> Method {
        let queue = match &mut method {
            Method::QueueBind(bind) => &mut bind.queue,
            Method::QueueUnbind(unbind) => &mut unbind.queue,
            Method::QueueDelete(delete) => &mut delete.queue,
            Method::BasicConsume(consume) => &mut consume.queue,
            _ => return method,
        };
        if queue.is_empty() {
            if let Some((_, name)) = self.last_declared.iter().find(|(id, _)| *id == channel) {
                queue.clone_from(name);
            }
        }
        method
    }

    fn declared(&mut self, channel: u16, queue: ShortString) {
        self.last_declared.retain(|(id, _)| *id != channel);
        self.last_declared.push((channel, queue));
    }

    /// A stream consume (one with `x-stream-offset`) confirmed by `reply`
    /// starts tracking where its consumer is; a cancel stops it.
    fn track_streams(&mut self, channel: u16, sent: &Method, reply: &Method) {
        match (sent, reply) {
            (Method::BasicConsume(consume), Method::BasicConsumeOk(ok))
                if consume.arguments.get(crate::queue::STREAM_OFFSET).is_some() =>
            {
                self.streams.started(channel, &ok.consumer_tag);
            }
            (Method::BasicCancel(cancel), _) => self.streams.stopped(channel, &cancel.consumer_tag),
            _ => {}
        }
    }

    /// `channel`'s consumers stop with the channel or the connection: its
    /// stream consumes are to resume where they got to.
    pub(crate) fn rewind_streams(&mut self, channel: u16) {
        if !self.streams.is_empty() {
            self.streams.rewind(channel, &mut self.topology);
        }
    }

    /// Records what an event settles.
    pub(crate) fn observe(&mut self, event: &Event) {
        match event {
            Event::Reply {
                channel,
                request,
                method,
            } => {
                if let Method::QueueDeclareOk(ok) = method {
                    self.declared(*channel, ok.queue.clone());
                }
                let mut index = 0;
                while let Some(pending) = self.pending.get(index) {
                    if pending.settled_by != *request {
                        index += 1;
                        continue;
                    }
                    let pending = self.pending.remove(index);
                    let method_sent = self.resolved(pending.channel, pending.method);
                    self.track_streams(pending.channel, &method_sent, method);
                    // Only the request's own reply confirms it; what waited
                    // for a declaration was sent without a reply.
                    let reply = method_sent.expects_reply().then_some(method);
                    self.topology
                        .confirmed(pending.channel, &method_sent, reply);
                }
            }
            Event::RequestFailed { request, .. } => {
                self.pending
                    .retain(|pending| pending.settled_by != *request);
            }
            // Recorded once open: a channel whose opening failed is not
            // wanted again.
            Event::ChannelOpened { channel, .. } => self.topology.channel_opened(*channel),
            Event::ChannelClosed { channel, .. } => {
                self.last_declared.retain(|(id, _)| id != channel);
                self.topology.channel_closed(*channel);
                self.streams.channel_closed(*channel);
            }
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                self.topology.consumer_gone(*channel, consumer_tag);
                self.streams.stopped(*channel, consumer_tag);
            }
            Event::Delivery(delivery) if !self.streams.is_empty() => {
                self.streams.delivered(delivery);
            }
            _ => {}
        }
    }
}

/// True for a method whose empty queue name means the channel's last
/// declared queue.
fn names_last_declared(method: &Method) -> bool {
    match method {
        Method::QueueBind(bind) => bind.queue.is_empty(),
        Method::QueueUnbind(unbind) => unbind.queue.is_empty(),
        Method::QueueDelete(delete) => delete.queue.is_empty(),
        Method::BasicConsume(consume) => consume.queue.is_empty(),
        _ => false,
    }
}
