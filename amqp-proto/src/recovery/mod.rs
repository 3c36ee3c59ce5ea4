//! Automatic recovery as data: the core records what the application
//! declared on a connection ([`Topology`]), and a new connection made with
//! [`Connection::recover`](crate::Connection::recover) declares it again
//! before handing the channels back. Adapters only open the new socket,
//! waiting between attempts as [`Backoff`] says.
//!
//! Publishes unconfirmed when the old connection failed are reported failed
//! (their [`Event::Confirm`] says so) and never sent again. Recovered
//! channels keep their ids; their delivery tags and
//! publish sequence numbers continue where the old connection's stopped, so
//! an acknowledgement of a delivery from before the failure is dropped
//! instead of acknowledging a new message.

mod backoff;
mod replay;
mod topology;

pub use backoff::Backoff;
pub use replay::RecoveryFailure;
pub(crate) use replay::{Next, Replay, Step};
pub use topology::{Binding, RecordedChannel, RecordedQueue, Topology};

use crate::event::{Event, RequestId};
use crate::spec::Method;

/// Keeps the [`Topology`] current while the connection runs.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) topology: Topology,
    /// Requests whose effect is recorded when their reply comes.
    pending: Vec<(RequestId, u16, Method)>,
}

impl Recorder {
    pub(crate) fn new(topology: Topology) -> Self {
        Self {
            topology,
            pending: Vec::new(),
        }
    }

    /// The application sent `method` on `channel`.
    pub(crate) fn sent(&mut self, channel: u16, method: &Method, request: Option<RequestId>) {
        if !Topology::records(method) {
            return;
        }
        match (request, method) {
            // Cancelling is recorded at once: no delivery for the consumer
            // is wanted after a recovery, even if the cancel-ok was lost.
            (_, Method::BasicCancel(_)) | (None, _) => {
                self.topology.confirmed(channel, method, None);
            }
            (Some(request), _) => self.pending.push((request, channel, method.clone())),
        }
    }

    /// Records what an event settles.
    pub(crate) fn observe(&mut self, event: &Event) {
        match event {
            Event::Reply {
                request, method, ..
            } => {
                if let Some(index) = self.pending.iter().position(|(r, ..)| r == request) {
                    let (_, channel, sent) = self.pending.swap_remove(index);
                    self.topology.confirmed(channel, &sent, Some(method));
                }
            }
            Event::RequestFailed { request, .. } => {
                self.pending.retain(|(r, ..)| r != request);
            }
            // Recorded once open: a channel whose opening failed is not
            // wanted again.
            Event::ChannelOpened { channel, .. } => self.topology.channel_opened(*channel),
            Event::ChannelClosed { channel, .. } => self.topology.channel_closed(*channel),
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => self.topology.consumer_gone(*channel, consumer_tag),
            _ => {}
        }
    }
}
