//! The simulated application: what it knows from the events it was given
//! (its channels, queue names, consumers, unacknowledged deliveries), so
//! that steps can name them by index.

use std::collections::BTreeMap;

use amqp_proto::recovery::Topology;
use amqp_proto::spec::Method;
use amqp_proto::{Event, RequestId};

/// The fixed queue names; server-named ones are added as they are learnt.
const NAMED_QUEUES: [&str; 4] = ["q0", "q1", "q2", "q3"];

/// Exchanges by index: 0 is the default one.
const EXCHANGES: [&str; 8] = [
    "",
    "amq.direct",
    "amq.fanout",
    "amq.topic",
    "x0",
    "x1",
    "x2",
    "x3",
];

/// Routing and binding keys by index.
const KEYS: [&str; 8] = ["q0", "q1", "a.b", "a.c", "b.x", "#", "a.*", "*.x"];

/// The exchange a publish names: any, the default one included.
pub(crate) fn exchange(pick: u8) -> &'static str {
    pick_from(&EXCHANGES, pick).copied().unwrap_or_default()
}

/// An exchange a queue can be bound to: any but the default one (403).
pub(crate) fn bindable_exchange(pick: u8) -> &'static str {
    EXCHANGES
        .get(1..)
        .and_then(|bindable| pick_from(bindable, pick))
        .copied()
        .unwrap_or("amq.direct")
}

/// One of the exchanges the application declares and deletes, `x0`..`x3`
/// (declaring `amq.*` is refused).
pub(crate) fn own_exchange(pick: u8) -> &'static str {
    EXCHANGES
        .get(4..)
        .and_then(|own| pick_from(own, pick))
        .copied()
        .unwrap_or("x0")
}

/// A routing or binding key.
pub(crate) fn key(pick: u8) -> &'static str {
    pick_from(&KEYS, pick).copied().unwrap_or_default()
}

/// An exchange type.
pub(crate) fn kind(pick: u8) -> &'static str {
    pick_from(&["direct", "fanout", "topic"], pick)
        .copied()
        .unwrap_or("direct")
}

#[derive(Debug)]
pub(crate) struct App {
    pub(crate) channels: Vec<u16>,
    pub(crate) queues: Vec<String>,
    /// (channel, tag, no_ack).
    pub(crate) consumers: Vec<(u16, String, bool)>,
    /// (channel, delivery tag) awaiting an ack.
    pub(crate) deliveries: Vec<(u16, u64)>,
    /// no_ack of consumes and gets awaiting their replies, by request id.
    pub(crate) pending_no_ack: BTreeMap<u64, bool>,
    /// The requests the application still waits on, by sequence (oldest
    /// first), with their channel: what it may abandon or put a deadline on.
    pub(crate) outstanding: BTreeMap<u64, (RequestId, u16)>,
    /// The deliveries awaiting an ack when the connection closed: after a
    /// recovery the application may still ack them (the core drops those).
    stale: Vec<(u16, u64)>,
}

impl App {
    pub(crate) fn new() -> Self {
        Self {
            channels: Vec::new(),
            queues: NAMED_QUEUES.iter().map(|name| (*name).to_owned()).collect(),
            consumers: Vec::new(),
            deliveries: Vec::new(),
            pending_no_ack: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            stale: Vec::new(),
        }
    }

    /// A connection made by `Connection::recover` from `topology`: the
    /// application keeps the handles of its recorded channels and knows
    /// its consumers, and still holds the old connection's deliveries
    /// (their acks must not reach the new broker).
    pub(crate) fn recovering(&mut self, topology: &Topology) {
        self.channels = topology.channels().iter().map(|c| c.id).collect();
        self.consumers = topology
            .channels()
            .iter()
            .flat_map(|channel| {
                channel.consumers.iter().map(|consume| {
                    let tag = consume.consumer_tag.to_string_lossy().into_owned();
                    (channel.id, tag, consume.no_ack)
                })
            })
            .collect();
        self.deliveries = std::mem::take(&mut self.stale);
        self.deliveries.retain(|(id, _)| self.channels.contains(id));
        self.pending_no_ack.clear();
        self.outstanding.clear();
    }

    /// The application made `request` on `channel` and waits for it.
    pub(crate) fn waits_on(&mut self, request: RequestId, channel: u16) {
        self.outstanding
            .insert(request.sequence(), (request, channel));
    }

    /// The outstanding request at index `pick`, modulo how many there are.
    pub(crate) fn outstanding(&self, pick: u8) -> Option<RequestId> {
        let count = self.outstanding.len();
        if count == 0 {
            return None;
        }
        self.outstanding
            .values()
            .nth(usize::from(pick) % count)
            .map(|(request, _)| *request)
    }

    /// The application stops waiting for `request`: whatever it was
    /// would have brought (a consumer, a message) it will never learn of.
    pub(crate) fn gives_up(&mut self, request: RequestId) {
        self.outstanding.remove(&request.sequence());
        self.pending_no_ack.remove(&request.get());
    }

    /// The channel at index `pick`, modulo how many there are.
    pub(crate) fn channel(&self, pick: u8) -> Option<u16> {
        pick_from(&self.channels, pick).copied()
    }

    /// The queue name at index `pick`.
    pub(crate) fn queue(&self, pick: u8) -> String {
        pick_from(&self.queues, pick).cloned().unwrap_or_default()
    }

    /// Learns from one event.
    pub(crate) fn observe(&mut self, event: &Event) {
        match event {
            Event::Reply { request, .. }
            | Event::GetOk { request, .. }
            | Event::ChannelOpened { request, .. }
            | Event::RequestFailed { request, .. } => {
                self.outstanding.remove(&request.sequence());
            }
            _ => {}
        }
        match event {
            Event::ChannelClosed { channel, .. } => self.forget_channel(*channel),
            Event::Reply {
                channel,
                request,
                method,
            } => match method {
                Method::QueueDeclareOk(ok) => {
                    let name = ok.queue.to_string_lossy().into_owned();
                    if !self.queues.contains(&name) {
                        self.queues.push(name);
                    }
                }
                Method::BasicConsumeOk(ok) => {
                    let no_ack = self.pending_no_ack.remove(&request.get()).unwrap_or(false);
                    let tag = ok.consumer_tag.to_string_lossy().into_owned();
                    self.consumers.push((*channel, tag, no_ack));
                }
                Method::BasicCancelOk(ok) => {
                    self.forget_consumer(*channel, &ok.consumer_tag.to_string_lossy());
                }
                _ => {}
            },
            Event::ConsumerCancelled {
                channel,
                consumer_tag,
            } => self.forget_consumer(*channel, &consumer_tag.to_string_lossy()),
            Event::Delivery(delivery) => {
                let tag = delivery.consumer_tag.to_string_lossy();
                let no_ack = self
                    .consumers
                    .iter()
                    .find(|(channel, known, _)| *channel == delivery.channel && *known == tag)
                    .map_or(true, |(_, _, no_ack)| *no_ack);
                if !no_ack {
                    self.deliveries
                        .push((delivery.channel, delivery.delivery_tag));
                }
            }
            Event::GetOk {
                channel,
                request,
                message,
            } if !self.pending_no_ack.remove(&request.get()).unwrap_or(true) => {
                self.deliveries.push((*channel, message.delivery_tag));
            }
            Event::RequestFailed { request, .. } => {
                self.pending_no_ack.remove(&request.get());
            }
            Event::Closed(_) => {
                self.outstanding.clear();
                self.channels.clear();
                self.consumers.clear();
                self.stale = std::mem::take(&mut self.deliveries);
            }
            Event::Recovered { renamed_queues, .. } => {
                // The old names stay: those queues are still on the broker.
                for (_, new) in renamed_queues {
                    let new = new.to_string_lossy();
                    if !self.queues.iter().any(|known| *known == new) {
                        self.queues.push(new.into_owned());
                    }
                }
            }
            _ => {}
        }
    }

    fn forget_channel(&mut self, channel: u16) {
        self.outstanding.retain(|_, (_, id)| *id != channel);
        self.channels.retain(|id| *id != channel);
        self.consumers.retain(|(id, ..)| *id != channel);
        self.deliveries.retain(|(id, _)| *id != channel);
    }

    fn forget_consumer(&mut self, channel: u16, tag: &str) {
        self.consumers
            .retain(|(id, known, _)| !(*id == channel && known == tag));
    }

    /// Forgets deliveries settled by an ack/nack/reject of `tag`.
    pub(crate) fn settled(&mut self, channel: u16, tag: u64, multiple: bool) {
        self.deliveries.retain(|(id, known)| {
            !(*id == channel && (*known == tag || (multiple && *known <= tag)))
        });
    }
}

/// The element at `pick` modulo the length.
pub(crate) fn pick_from<T>(items: &[T], pick: u8) -> Option<&T> {
    items.get(usize::from(pick) % items.len().max(1))
}
