//! The deliveries the application still has to settle on one channel, so
//! that a `multiple` settlement is counted exactly and a tag the broker
//! does not know is refused before it costs the channel; and what the
//! connection's [`Stats`] read of a channel.

use std::collections::VecDeque;

use super::{Channel, ContentMethod, State};
use crate::connection::stats::{self, Stats};
use crate::connection::Sink;
use crate::error::UsageError;
use crate::spec::{BasicAck, BasicNack, BasicReject, Method};

/// The most tags one channel remembers: the largest prefetch `basic.qos`
/// can ask for (a 16-bit count), so a single consumer within any prefetch
/// is tracked exactly, at 8 bytes a tag (512 KiB at most per channel, a
/// fraction of what the messages themselves took on the wire). Only a
/// consumer without prefetch, a channel with many consumers, or a stream
/// of `basic.get`s left unsettled goes past it.
pub(crate) const MAX_TRACKED: usize = 1 << 16;

/// Delivery tags awaiting `basic.ack`/`nack`/`reject`, in the application's
/// numbering (recovery offset included).
///
/// The broker numbers deliveries and get-oks of a channel from one counter
/// that only grows, so new tags go at the back and the deque stays sorted;
/// settlements come mostly from the front. Past [`MAX_TRACKED`] the
/// oldest tag is forgotten rather than the new one refused: the broker has
/// delivered it, and a settlement of it must still go out. Forgotten tags
/// are all older than every remembered one, so a settlement naming the
/// newest forgotten tag or a later one with `multiple` still settles all of
/// them exactly.
#[derive(Debug, Default)]
pub(crate) struct Unsettled {
    /// Remembered tags, ascending.
    tags: VecDeque<u64>,
    /// Tags forgotten past the bound and not known to be settled since.
    forgotten: u64,
    /// The newest tag ever forgotten (0 before any).
    forgotten_up_to: u64,
}

impl Unsettled {
    /// A delivery tagged `tag` awaits its settlement.
    pub(crate) fn delivered(&mut self, tag: u64) {
        match self.tags.back() {
            None if tag > self.forgotten_up_to => self.tags.push_back(tag),
            Some(&last) if tag > last => self.tags.push_back(tag),
            // A broker repeating or going back on its numbering is broken;
            // keep the set exact anyway, at a search's cost.
            _ if tag <= self.forgotten_up_to => self.forgotten = self.forgotten.saturating_add(1),
            _ => {
                if let Err(index) = self.tags.binary_search(&tag) {
                    self.tags.insert(index, tag);
                }
            }
        }
        if self.tags.len() > MAX_TRACKED {
            if let Some(oldest) = self.tags.pop_front() {
                self.forgotten = self.forgotten.saturating_add(1);
                self.forgotten_up_to = oldest;
            }
        }
    }

    /// Deliveries awaiting settlement.
    pub(crate) fn len(&self) -> u64 {
        (self.tags.len() as u64).saturating_add(self.forgotten)
    }

    /// True if the broker would accept a settlement naming `tag`: RabbitMQ
    /// looks the tag itself up, with `multiple` too (and closes the channel
    /// with 406 if it is not outstanding); only tag 0 with `multiple`,
    /// "everything", needs nothing outstanding.
    pub(crate) fn knows(&self, tag: u64, multiple: bool) -> bool {
        if tag == 0 {
            return multiple;
        }
        self.in_forgotten(tag) || self.tags.binary_search(&tag).is_ok()
    }

    /// True if any tag up to `tag` awaits settlement (tag 0: any at all),
    /// as a `multiple` settlement naming `tag` would settle it.
    pub(crate) fn any_up_to(&self, tag: u64) -> bool {
        if tag == 0 {
            return self.len() > 0;
        }
        // Forgotten tags are older than every remembered one.
        self.forgotten > 0 || self.tags.front().is_some_and(|&oldest| oldest <= tag)
    }

    /// Settles `tag` (with `multiple`, every tag up to it; tag 0 with
    /// `multiple`, all); returns how many deliveries that settled.
    pub(crate) fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag == 0 && multiple {
            let all = self.len();
            self.tags.clear();
            self.forgotten = 0;
            return all;
        }
        if self.in_forgotten(tag) {
            if multiple && tag >= self.forgotten_up_to {
                return std::mem::take(&mut self.forgotten);
            }
            // Which forgotten tags lie below this one is not known: count
            // the one named.
            self.forgotten = self.forgotten.saturating_sub(1);
            return 1;
        }
        if !multiple {
            return match self.tags.binary_search(&tag) {
                Ok(index) => self.tags.remove(index).map_or(0, |_| 1),
                Err(_) => 0,
            };
        }
        let below = self.tags.partition_point(|&known| known <= tag);
        self.tags.drain(..below);
        (below as u64).saturating_add(std::mem::take(&mut self.forgotten))
    }

    /// Forgets everything: the channel closed, and the broker requeues
    /// what was unsettled on it.
    pub(crate) fn clear(&mut self) {
        self.tags.clear();
        self.forgotten = 0;
    }

    /// True if `tag` may be a forgotten one, which cannot be told apart.
    fn in_forgotten(&self, tag: u64) -> bool {
        self.forgotten > 0 && tag <= self.forgotten_up_to
    }
}

/// Which settlement a method is.
#[derive(Clone, Copy)]
enum Kind {
    Ack,
    Nack,
    Reject,
}

/// A settlement the application sends: its delivery tag on the wire,
/// `multiple`, `requeue`, and which it is.
fn settlement(method: &Method) -> Option<(u64, bool, bool, Kind)> {
    match *method {
        Method::BasicAck(BasicAck {
            delivery_tag,
            multiple,
        }) => Some((delivery_tag, multiple, false, Kind::Ack)),
        Method::BasicNack(BasicNack {
            delivery_tag,
            multiple,
            requeue,
        }) => Some((delivery_tag, multiple, requeue, Kind::Nack)),
        Method::BasicReject(BasicReject {
            delivery_tag,
            requeue,
        }) => Some((delivery_tag, false, requeue, Kind::Reject)),
        _ => None,
    }
}

impl Channel {
    /// Refuses a settlement of `tag` (the application's numbering) that
    /// the broker would answer by closing the channel.
    pub(crate) fn check_settlement(&self, tag: u64, multiple: bool) -> Result<(), UsageError> {
        if self.unsettled.knows(tag, multiple) {
            Ok(())
        } else {
            Err(UsageError::UnknownDeliveryTag(tag))
        }
    }

    /// `method`, with the server's tags, was sent: if it settles
    /// deliveries, forget them and count them.
    pub(crate) fn settled(&mut self, method: &Method, stats: &mut Stats) {
        let Some((wire, multiple, requeue, kind)) = settlement(method) else {
            return;
        };
        let tag = match wire {
            0 => 0,
            wire => wire.saturating_add(self.delivery_tag_offset),
        };
        let count = self.unsettled.settle(tag, multiple);
        self.stream_unsettled.settle(tag, multiple);
        let counter = match kind {
            Kind::Ack => &mut stats.acked,
            Kind::Nack => &mut stats.nacked,
            Kind::Reject => &mut stats.rejected,
        };
        *counter = counter.saturating_add(count);
        if requeue {
            stats.requeued = stats.requeued.saturating_add(count);
        }
    }

    /// Counts the message whose content just completed. True if it awaits
    /// a settlement from this side (it was not taken with `no_ack`), false
    /// for a returned message and for one the broker counts as
    /// acknowledged already.
    pub(super) fn count_arrival(&self, sink: &mut Sink<'_>) -> bool {
        let (counter, no_ack) = match &self.content_method {
            Some(ContentMethod::Deliver(deliver)) => (
                &mut sink.stats.deliveries,
                self.no_ack_consumers.contains(&deliver.consumer_tag),
            ),
            Some(ContentMethod::GetOk(_, answered)) => (&mut sink.stats.gets_ok, answered.no_ack),
            Some(ContentMethod::Return(_)) => {
                stats::add(&mut sink.stats.returned, 1);
                return false;
            }
            None => return false,
        };
        stats::add(counter, 1);
        if no_ack {
            stats::add(&mut sink.stats.acked, 1);
        }
        !no_ack
    }

    /// The application's tag for a message handed over with the server's
    /// `wire` tag, remembered if it `awaits` a settlement.
    pub(super) fn handed_over(&mut self, wire: u64, awaits: bool) -> u64 {
        let tag = self.delivery_tag(wire);
        if awaits {
            self.unsettled.delivered(tag);
        }
        tag
    }

    /// Open, and not closing.
    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Consumers registered on the channel.
    pub(crate) fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Deliveries awaiting settlement.
    pub(crate) fn unsettled(&self) -> u64 {
        self.unsettled.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(tags: impl IntoIterator<Item = u64>) -> Unsettled {
        let mut unsettled = Unsettled::default();
        for tag in tags {
            unsettled.delivered(tag);
        }
        unsettled
    }

    #[test]
    fn multiple_settles_every_tag_up_to_the_one_named() {
        let mut unsettled = delivered([1, 2, 4, 5, 7]);
        assert_eq!(unsettled.len(), 5);
        assert!(!unsettled.knows(3, true), "RabbitMQ looks the tag up");
        assert!(!unsettled.knows(0, false));
        assert!(unsettled.knows(0, true));
        assert_eq!(unsettled.settle(4, false), 1);
        assert_eq!(unsettled.settle(4, false), 0);
        assert!(!unsettled.knows(4, false));
        assert_eq!(unsettled.settle(5, true), 3);
        assert_eq!(unsettled.len(), 1);
        assert_eq!(unsettled.settle(0, true), 1);
        assert_eq!(unsettled.len(), 0);
        assert_eq!(unsettled.settle(0, true), 0);
    }

    #[test]
    fn tags_out_of_order_or_repeated_are_kept_as_a_set() {
        let mut unsettled = delivered([5, 3, 5, 9, 3]);
        assert_eq!(unsettled.len(), 3);
        assert!(unsettled.knows(3, false) && unsettled.knows(5, false));
        assert_eq!(unsettled.settle(5, true), 2);
        assert_eq!(unsettled.settle(9, false), 1);
    }

    #[test]
    fn past_the_bound_the_oldest_are_forgotten_but_still_counted() {
        let extra = 10u64;
        let total = MAX_TRACKED as u64 + extra;
        let mut unsettled = delivered(1..=total);
        assert_eq!(unsettled.len(), total);
        assert_eq!(unsettled.tags.len(), MAX_TRACKED);
        // A forgotten tag cannot be checked, so it is let through.
        assert!(unsettled.knows(3, false));
        assert_eq!(unsettled.settle(3, false), 1);
        assert_eq!(unsettled.settle(extra, true), extra - 1, "all forgotten");
        assert!(!unsettled.knows(3, false), "none forgotten any more");
        assert_eq!(unsettled.settle(total, true), MAX_TRACKED as u64);
        assert_eq!(unsettled.len(), 0);
    }

    #[test]
    fn clearing_forgets_the_forgotten_too() {
        let mut unsettled = delivered(1..=MAX_TRACKED as u64 + 1);
        unsettled.clear();
        assert_eq!(unsettled.len(), 0);
        assert!(!unsettled.knows(1, false));
        unsettled.delivered(MAX_TRACKED as u64 + 2);
        assert_eq!(unsettled.settle(MAX_TRACKED as u64 + 2, false), 1);
    }
}
