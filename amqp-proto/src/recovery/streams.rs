//! Where each stream consumer of a recorded connection would resume: the
//! offset of its oldest delivery not yet settled, or the one after its
//! last delivery when all are settled. A recovery (or a channel reopen)
//! consumes from there instead of the offset the consumer first asked for,
//! so it neither reads the stream again from `first` nor skips what was
//! delivered but not yet processed: at-least-once across the gap, with no
//! message of the stream settled twice.

use std::collections::VecDeque;

use crate::codec::{FieldValue, ShortString};
use crate::queue::STREAM_OFFSET;

use super::topology::Topology;

/// At most this many unsettled deliveries are remembered per stream
/// consumer (RabbitMQ's largest prefetch); past it the oldest stays the
/// resume point, which only means more is read again.
const MAX_REMEMBERED: usize = 1 << 16;

/// One stream consumer's deliveries and where it would resume.
#[derive(Debug)]
struct Position {
    channel: u16,
    consumer_tag: ShortString,
    /// Unsettled deliveries, (delivery tag, stream offset), by tag.
    unsettled: VecDeque<(u64, u64)>,
    /// The offset after the last delivery.
    next: Option<u64>,
}

impl Position {
    fn resume_at(&self) -> Option<u64> {
        self.unsettled
            .front()
            .map(|(_, offset)| *offset)
            .or(self.next)
    }
}

/// The stream consumers of a connection.
#[derive(Debug, Default)]
pub(crate) struct StreamPositions {
    positions: Vec<Position>,
}

impl StreamPositions {
    /// A consumer with `x-stream-offset` started on `channel` as `tag`.
    pub(crate) fn started(&mut self, channel: u16, tag: &ShortString) {
        self.stopped(channel, tag);
        self.positions.push(Position {
            channel,
            consumer_tag: tag.clone(),
            unsettled: VecDeque::new(),
            next: None,
        });
    }

    /// The consumer is gone (cancelled by either side).
    pub(crate) fn stopped(&mut self, channel: u16, tag: &ShortString) {
        self.positions
            .retain(|position| position.channel != channel || position.consumer_tag != *tag);
    }

    /// The channel is gone for good.
    pub(crate) fn channel_closed(&mut self, channel: u16) {
        self.positions
            .retain(|position| position.channel != channel);
    }

    /// True if nothing is tracked (the common case: no stream consumer).
    pub(crate) fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// A delivery: tracked if it is a stream consumer's and carries its
    /// offset.
    pub(crate) fn delivered(&mut self, delivery: &crate::Delivery) {
        let Some(position) = self.positions.iter_mut().find(|position| {
            position.channel == delivery.channel && position.consumer_tag == delivery.consumer_tag
        }) else {
            return;
        };
        let Some(offset) = delivery.stream_offset() else {
            return;
        };
        position.next = Some(offset.saturating_add(1));
        if position.unsettled.len() < MAX_REMEMBERED {
            position
                .unsettled
                .push_back((delivery.delivery_tag, offset));
        }
    }

    /// The application settled `tag` on `channel` (with `multiple`, every
    /// delivery up to it; tag 0 with `multiple`, all of them).
    pub(crate) fn settled(&mut self, channel: u16, tag: u64, multiple: bool) {
        for position in &mut self.positions {
            if position.channel != channel {
                continue;
            }
            if multiple {
                while position
                    .unsettled
                    .front()
                    .is_some_and(|(settled, _)| tag == 0 || *settled <= tag)
                {
                    position.unsettled.pop_front();
                }
            } else if let Ok(index) = position
                .unsettled
                .binary_search_by_key(&tag, |(settled, _)| *settled)
            {
                position.unsettled.remove(index);
            }
        }
    }

    /// `channel`'s consumers stop with it (the connection failed, or the
    /// channel is being reopened): each recorded stream consume is to
    /// resume where its consumer got to, and tracking starts again.
    pub(crate) fn rewind(&mut self, channel: u16, topology: &mut Topology) {
        for position in &mut self.positions {
            if position.channel != channel {
                continue;
            }
            let Some(resume) = position.resume_at() else {
                continue;
            };
            let Ok(resume) = i64::try_from(resume) else {
                continue;
            };
            if let Some(consume) = topology.channel_mut(channel).and_then(|record| {
                record
                    .consumers
                    .iter_mut()
                    .find(|consume| consume.consumer_tag == position.consumer_tag)
            }) {
                consume
                    .arguments
                    .insert(STREAM_OFFSET, FieldValue::LongLongInt(resume));
            }
            position.unsettled.clear();
            position.next = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BasicProperties, Content, ContentHeader, FieldTable};
    use crate::spec::{BasicConsume, Method};

    fn delivery(tag: u64, offset: u64) -> crate::Delivery {
        let mut headers = FieldTable::new();
        headers.insert(
            STREAM_OFFSET,
            FieldValue::LongLongInt(i64::try_from(offset).unwrap_or(0)),
        );
        let properties = BasicProperties::default().headers(headers);
        crate::Delivery {
            channel: 1,
            consumer_tag: "reader".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "events".into(),
            content: Content {
                header: Box::new(ContentHeader::basic(0, properties)),
                body: bytes::Bytes::new(),
            },
        }
    }

    fn recorded() -> Topology {
        let mut topology = Topology::default();
        topology.channel_opened(1);
        let mut arguments = FieldTable::new();
        arguments.insert(STREAM_OFFSET, FieldValue::LongString("first".into()));
        let consume = BasicConsume {
            queue: "events".into(),
            consumer_tag: "reader".into(),
            arguments,
            ..Default::default()
        };
        let ok = Method::BasicConsumeOk(crate::spec::BasicConsumeOk {
            consumer_tag: "reader".into(),
        });
        topology.confirmed(1, &consume.into(), Some(&ok));
        topology
    }

    fn resume_offset(topology: &Topology) -> Option<FieldValue> {
        topology.channels()[0].consumers[0]
            .arguments
            .get(STREAM_OFFSET)
            .cloned()
    }

    #[test]
    fn a_stream_consumer_resumes_at_its_oldest_unsettled_delivery() {
        let mut topology = recorded();
        let mut positions = StreamPositions::default();
        positions.started(1, &"reader".into());
        for (tag, offset) in [(1, 500), (2, 501), (3, 502), (4, 503)] {
            positions.delivered(&delivery(tag, offset));
        }
        positions.settled(1, 2, true);
        positions.settled(1, 4, false);
        positions.rewind(1, &mut topology);
        assert_eq!(resume_offset(&topology), Some(FieldValue::LongLongInt(502)));
    }

    #[test]
    fn with_everything_settled_it_resumes_after_the_last_delivery() {
        let mut topology = recorded();
        let mut positions = StreamPositions::default();
        positions.started(1, &"reader".into());
        positions.delivered(&delivery(1, 7));
        positions.delivered(&delivery(2, 8));
        positions.settled(1, 0, true);
        positions.rewind(1, &mut topology);
        assert_eq!(resume_offset(&topology), Some(FieldValue::LongLongInt(9)));
        // Nothing delivered since: the same point again.
        positions.rewind(1, &mut topology);
        assert_eq!(resume_offset(&topology), Some(FieldValue::LongLongInt(9)));
    }

    #[test]
    fn a_consumer_that_got_nothing_keeps_the_offset_it_asked_for() {
        let mut topology = recorded();
        let mut positions = StreamPositions::default();
        positions.started(1, &"reader".into());
        positions.rewind(1, &mut topology);
        assert_eq!(
            resume_offset(&topology),
            Some(FieldValue::LongString("first".into()))
        );
        positions.stopped(1, &"reader".into());
        assert!(positions.is_empty());
    }
}
