//! A new connection to the same broker after the client's failed, as
//! automatic recovery makes one: RabbitMQ keeps the virtual host (its
//! exchanges, queues, bindings and messages) while the connection's own
//! state (channels, consumers, unacknowledged deliveries) goes with it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use amqp_proto::codec::{DecodeLimits, FrameDecoder};

use super::{Broker, Log, Phase};

/// What the broker holds for one of the client's open channels, to
/// compare with what a recovery declared again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelView {
    /// The broker is closing it (the client may not know yet).
    pub closing: bool,
    /// In confirm mode.
    pub confirm: bool,
    /// The channel's prefetch count (0: none).
    pub prefetch: u16,
    /// Its consumers' tags, each with its queue and `no_ack`.
    pub consumers: BTreeSet<(String, String, bool)>,
}

impl Broker {
    /// The client connects again at `now`: the old connection's channels
    /// go (their unacknowledged messages back to the front of their
    /// queues, redelivered, as a closed channel's), the model stays, and a
    /// new stream starts with a fresh log. The tuning it proposes is the
    /// same (one broker, one configuration), and it speaks 0-9-1.
    pub fn reconnect(&mut self, now: Instant) {
        self.drop_all_channels();
        self.phase = Phase::AwaitHeader;
        self.reject_header = false;
        self.frame_max = self.proposal.frame_max;
        self.heartbeat = 0;
        self.input.clear();
        self.decoder = FrameDecoder::new(DecodeLimits {
            max_frame_size: u32::MAX,
            max_table_depth: 1_000,
        });
        self.out.clear();
        self.taken = 0;
        self.hang_up = false;
        self.stalled = false;
        self.cut = false;
        self.client_closed = false;
        self.now = now;
        self.last_write = now;
        self.waiting_since = None;
        // Incarnations are counted per connection, as the oracle's lives.
        self.incarnations.clear();
        self.interleave_next_content = false;
        self.log = Log::default();
    }

    /// The connection is gone: every channel with it. Unacknowledged
    /// messages go back to their queues and the consumers stop, with no
    /// dispatch (nobody else consumes).
    pub(super) fn drop_all_channels(&mut self) {
        for (id, channel) in std::mem::take(&mut self.channels) {
            for (tag, consumer) in &channel.consumers {
                if let Some(queue) = self.model.queues.get_mut(&consumer.queue) {
                    queue
                        .consumers
                        .retain(|(owner, existing)| !(*owner == id && existing == tag));
                }
            }
            for (queue, mut message, _) in channel.unacked.into_values().rev() {
                if let Some(queue) = self.model.queues.get_mut(&queue) {
                    message.redelivered = true;
                    queue.messages.push_front(message);
                }
            }
        }
    }

    /// How many times channel `id` was opened on this connection.
    #[must_use]
    pub fn incarnation(&self, id: u16) -> u32 {
        self.incarnations.get(&id).copied().unwrap_or(0)
    }

    /// The client's open channels, by id.
    #[must_use]
    pub fn channel_views(&self) -> BTreeMap<u16, ChannelView> {
        self.channels
            .iter()
            .map(|(id, channel)| {
                let consumers = channel
                    .consumers
                    .iter()
                    .map(|(tag, consumer)| (tag.clone(), consumer.queue.clone(), consumer.no_ack))
                    .collect();
                let view = ChannelView {
                    closing: channel.closing,
                    confirm: channel.confirm,
                    prefetch: channel.prefetch,
                    consumers,
                };
                (*id, view)
            })
            .collect()
    }
}
