//! Where a stream consumer starts, and the headers RabbitMQ adds to what
//! quorum queues and streams deliver.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Interval, DELIVERY_COUNT, STREAM_OFFSET};
use crate::codec::{BasicProperties, FieldValue};
use crate::spec::BasicConsume;

/// Where a consumer of a stream starts reading: the `x-stream-offset`
/// argument of its `basic.consume`, with the field type RabbitMQ reads
/// each kind of offset from.
///
/// | offset | `x-stream-offset` |
/// |---|---|
/// | [`First`](Self::First), [`Last`](Self::Last), [`Next`](Self::Next) | long string `first`, `last`, `next` |
/// | [`Offset(n)`](Self::Offset) | long-long int `n` |
/// | [`Timestamp(s)`](Self::Timestamp) | timestamp `s` (seconds since the Unix epoch) |
/// | [`Interval(i)`](Self::Interval) | long string such as `1h` (that long before now) |
///
/// Stream consumers must acknowledge (RabbitMQ refuses `no_ack` on a
/// stream) and need a per-consumer prefetch (`basic.qos` with `global`
/// false) on their channel; acknowledging only makes room in the
/// prefetch window, it removes nothing from the stream. Each delivery
/// carries its own offset ([`Delivery::stream_offset`](crate::Delivery::stream_offset)),
/// so a consumer that stores the last one it processed resumes after it
/// with `Offset(last + 1)`.
///
/// A consume that carries `x-stream-offset` is taken to be on a stream
/// (the core then refuses what RabbitMQ refuses on one); so is any consume
/// of a stream this connection declared.
///
/// ```
/// use amqp_proto::codec::FieldValue;
/// use amqp_proto::queue::StreamOffset;
///
/// let consume = StreamOffset::Offset(500).consume("events");
/// assert_eq!(consume.queue, "events");
/// assert_eq!(consume.arguments.get("x-stream-offset"), Some(&FieldValue::LongLongInt(500)));
///
/// let an_hour_ago = StreamOffset::Interval("1h".parse()?);
/// assert_eq!(an_hour_ago.to_field_value(), FieldValue::from("1h"));
/// # Ok::<(), amqp_proto::queue::ParseIntervalError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamOffset {
    /// The first message still in the stream.
    First,
    /// The last chunk written (RabbitMQ writes messages in chunks, so this
    /// may be more than one message), then what follows.
    Last,
    /// Only what is written after the consumer starts: RabbitMQ's default
    /// when a consume names no offset.
    Next,
    /// The message at this offset (the first message of a stream is at 0),
    /// or the first one still kept if retention discarded it.
    Offset(u64),
    /// The first chunk written at or after this time, in seconds since the
    /// Unix epoch (the chunk's time: a few messages before it may come).
    Timestamp(u64),
    /// Messages written within this span before the consume.
    Interval(Interval),
}

impl StreamOffset {
    /// The offset of `time` (whole seconds, earlier times as the epoch):
    /// [`Timestamp`](Self::Timestamp).
    #[must_use]
    pub fn at(time: SystemTime) -> Self {
        Self::Timestamp(
            time.duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
        )
    }

    /// The value of `x-stream-offset`.
    #[must_use]
    pub fn to_field_value(self) -> FieldValue {
        match self {
            Self::First => "first".into(),
            Self::Last => "last".into(),
            Self::Next => "next".into(),
            Self::Offset(offset) => {
                FieldValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX))
            }
            Self::Timestamp(seconds) => FieldValue::Timestamp(seconds),
            Self::Interval(interval) => interval.to_string().into(),
        }
    }

    /// The offset an `x-stream-offset` value asks for, read as RabbitMQ
    /// reads it (`None` for a value it refuses, or a negative number).
    #[must_use]
    pub fn from_field_value(value: &FieldValue) -> Option<Self> {
        if let FieldValue::Timestamp(seconds) = value {
            return Some(Self::Timestamp(*seconds));
        }
        if let Some(number) = value.as_i64() {
            return u64::try_from(number).ok().map(Self::Offset);
        }
        let text = value.as_long_string()?.to_str().ok()?;
        Some(match text {
            "first" => Self::First,
            "last" => Self::Last,
            "next" => Self::Next,
            interval => Self::Interval(interval.parse().ok()?),
        })
    }

    /// Sets `x-stream-offset` in `consume`'s arguments (replacing one
    /// there).
    pub fn apply_to(self, consume: &mut BasicConsume) {
        consume
            .arguments
            .insert(STREAM_OFFSET, self.to_field_value());
    }

    /// A `basic.consume` of `queue` from this offset, acknowledging (as a
    /// stream consumer must); the consumer tag is left for the core to
    /// choose.
    #[must_use]
    pub fn consume(self, queue: &str) -> BasicConsume {
        let mut consume = BasicConsume {
            queue: queue.into(),
            ..BasicConsume::default()
        };
        self.apply_to(&mut consume);
        consume
    }
}

/// How many times a message from a quorum queue was delivered before this
/// delivery: RabbitMQ's `x-delivery-count` header, which it adds from the
/// second delivery on (as a long-long int; any integer type is read).
/// `None` when the header is absent (a first delivery, or a queue that
/// does not count) or not a non-negative integer.
#[must_use]
pub fn delivery_count(properties: &BasicProperties) -> Option<u64> {
    header_number(properties, DELIVERY_COUNT)
}

/// The offset in its stream of a message delivered from a stream:
/// RabbitMQ's `x-stream-offset` header (a long-long int; any integer type
/// is read). `None` when absent or not a non-negative integer.
#[must_use]
pub fn stream_offset(properties: &BasicProperties) -> Option<u64> {
    header_number(properties, STREAM_OFFSET)
}

fn header_number(properties: &BasicProperties, name: &str) -> Option<u64> {
    let value = properties.headers.as_ref()?.get(name)?.as_i64()?;
    u64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FieldTable;
    use crate::queue::IntervalUnit;

    #[test]
    fn each_offset_is_encoded_with_the_type_rabbitmq_reads() {
        let hour = Interval::new(1, IntervalUnit::Hours).unwrap_or_else(|| unreachable!());
        for (offset, value) in [
            (StreamOffset::First, FieldValue::from("first")),
            (StreamOffset::Last, FieldValue::from("last")),
            (StreamOffset::Next, FieldValue::from("next")),
            (StreamOffset::Offset(500), FieldValue::LongLongInt(500)),
            (
                StreamOffset::Timestamp(1_686_519_750),
                FieldValue::Timestamp(1_686_519_750),
            ),
            (StreamOffset::Interval(hour), FieldValue::from("1h")),
        ] {
            assert_eq!(offset.to_field_value(), value, "{offset:?}");
            assert_eq!(StreamOffset::from_field_value(&value), Some(offset));
            let consume = offset.consume("s");
            assert_eq!(consume.arguments.get(STREAM_OFFSET), Some(&value));
            assert!(!consume.no_ack, "stream consumers acknowledge");
        }
        assert_eq!(
            StreamOffset::Offset(u64::MAX).to_field_value(),
            FieldValue::LongLongInt(i64::MAX)
        );
        assert_eq!(
            StreamOffset::from_field_value(&FieldValue::LongInt(7)),
            Some(StreamOffset::Offset(7)),
            "RabbitMQ takes any integer"
        );
        assert_eq!(
            StreamOffset::from_field_value(&FieldValue::LongLongInt(-1)),
            None
        );
        assert_eq!(
            StreamOffset::from_field_value(&FieldValue::from("1x")),
            None
        );
        assert_eq!(
            StreamOffset::from_field_value(&FieldValue::Boolean(true)),
            None
        );
    }

    #[test]
    fn a_time_becomes_whole_seconds() {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(StreamOffset::at(time), StreamOffset::Timestamp(1));
        let before = UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(StreamOffset::at(before), StreamOffset::Timestamp(0));
    }

    #[test]
    fn counts_and_offsets_are_read_from_any_integer_type() {
        let with = |value: FieldValue| {
            let headers: FieldTable = [(DELIVERY_COUNT, value.clone()), (STREAM_OFFSET, value)]
                .into_iter()
                .collect();
            BasicProperties {
                headers: Some(headers),
                ..BasicProperties::default()
            }
        };
        for value in [
            FieldValue::ShortShortInt(3),
            FieldValue::ShortShortUInt(3),
            FieldValue::ShortInt(3),
            FieldValue::ShortUInt(3),
            FieldValue::LongInt(3),
            FieldValue::LongUInt(3),
            FieldValue::LongLongInt(3),
        ] {
            let properties = with(value.clone());
            assert_eq!(delivery_count(&properties), Some(3), "{value:?}");
            assert_eq!(stream_offset(&properties), Some(3), "{value:?}");
        }
        for value in [
            FieldValue::LongLongInt(-1),
            FieldValue::from("3"),
            FieldValue::Timestamp(3),
            FieldValue::Double(3.0),
        ] {
            assert_eq!(delivery_count(&with(value.clone())), None, "{value:?}");
        }
        assert_eq!(delivery_count(&BasicProperties::default()), None);
        let other_headers = BasicProperties {
            headers: Some([("x-other", 1_i64)].into_iter().collect()),
            ..BasicProperties::default()
        };
        assert_eq!(stream_offset(&other_headers), None);
    }
}
