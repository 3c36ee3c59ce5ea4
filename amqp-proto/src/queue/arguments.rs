//! The typed `arguments` of a `queue.declare`.

use std::time::Duration;

use super::{QueueType, QUEUE_TYPE};
use crate::codec::{FieldTable, FieldValue, ShortString};
use crate::spec::QueueDeclare;

/// Builds the `arguments` table of a `queue.declare`, each entry with the
/// name and field type RabbitMQ checks for it, so a typo or a wrong type
/// cannot earn a 406 PRECONDITION_FAILED ("invalid arg") at run time.
///
/// Start from the queue type ([`quorum`](Self::quorum),
/// [`stream`](Self::stream), [`classic`](Self::classic), or
/// [`new`](Self::new) for the broker's default type), add what the queue
/// needs, and take the table ([`into_table`](Self::into_table)) or a whole
/// durable declaration ([`declare`](Self::declare)). Which arguments a
/// queue type honours is the broker's business: RabbitMQ refuses, for
/// example, `x-delivery-limit` on a classic queue and `x-max-age` on a
/// quorum queue.
///
/// | method | argument | field type |
/// |---|---|---|
/// | [`quorum`](Self::quorum), [`stream`](Self::stream), [`classic`](Self::classic) | `x-queue-type` | long string |
/// | [`delivery_limit`](Self::delivery_limit) | `x-delivery-limit` | long-long int |
/// | [`dead_letter_exchange`](Self::dead_letter_exchange) | `x-dead-letter-exchange` | long string |
/// | [`dead_letter_routing_key`](Self::dead_letter_routing_key) | `x-dead-letter-routing-key` | long string |
/// | [`dead_letter_strategy`](Self::dead_letter_strategy) | `x-dead-letter-strategy` | long string |
/// | [`max_length`](Self::max_length) | `x-max-length` | long-long int |
/// | [`max_length_bytes`](Self::max_length_bytes) | `x-max-length-bytes` | long-long int |
/// | [`overflow`](Self::overflow) | `x-overflow` | long string |
/// | [`message_ttl`](Self::message_ttl) | `x-message-ttl` | long-long int, ms |
/// | [`expires`](Self::expires) | `x-expires` | long-long int, ms |
/// | [`single_active_consumer`](Self::single_active_consumer) | `x-single-active-consumer` | boolean |
/// | [`quorum_initial_group_size`](Self::quorum_initial_group_size) | `x-quorum-initial-group-size` | long-long int |
/// | [`max_age`](Self::max_age) | `x-max-age` | long string (`7D`) |
/// | [`stream_max_segment_size_bytes`](Self::stream_max_segment_size_bytes) | `x-stream-max-segment-size-bytes` | long-long int |
///
/// ```
/// use amqp_proto::codec::FieldValue;
/// use amqp_proto::queue::QueueArguments;
///
/// let arguments = QueueArguments::quorum()
///     .delivery_limit(3)
///     .single_active_consumer(true)
///     .into_table();
/// assert_eq!(arguments.get("x-queue-type"), Some(&FieldValue::from("quorum")));
/// assert_eq!(arguments.get("x-delivery-limit"), Some(&FieldValue::LongLongInt(3)));
/// assert_eq!(arguments.get("x-single-active-consumer"), Some(&FieldValue::Boolean(true)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use = "the arguments are only built; use them in a queue.declare"]
pub struct QueueArguments {
    table: FieldTable,
}

impl QueueArguments {
    /// No arguments: the broker's default queue type (classic, unless the
    /// virtual host says otherwise).
    pub fn new() -> Self {
        Self::default()
    }

    /// `x-queue-type` = `kind`.
    pub fn of_type(kind: QueueType) -> Self {
        Self::new().argument(QUEUE_TYPE, kind.as_str())
    }

    /// A quorum queue (`x-queue-type` = `quorum`): replicated over a
    /// majority of the cluster's nodes, and counting each message's
    /// deliveries ([`delivery_count`](crate::Delivery::delivery_count)).
    pub fn quorum() -> Self {
        Self::of_type(QueueType::Quorum)
    }

    /// A stream (`x-queue-type` = `stream`): an append-only log that
    /// consumers read from an offset ([`StreamOffset`](super::StreamOffset))
    /// without removing what they read.
    pub fn stream() -> Self {
        Self::of_type(QueueType::Stream)
    }

    /// A classic queue (`x-queue-type` = `classic`), whatever the virtual
    /// host's default type.
    pub fn classic() -> Self {
        Self::of_type(QueueType::Classic)
    }

    /// The type `x-queue-type` names, if any.
    #[must_use]
    pub fn queue_type(&self) -> Option<QueueType> {
        QueueType::of(&self.table)
    }

    /// `x-delivery-limit` (quorum queues): after this many redeliveries a
    /// message is dead-lettered, or dropped without a dead-letter exchange.
    pub fn delivery_limit(self, redeliveries: u32) -> Self {
        self.argument("x-delivery-limit", i64::from(redeliveries))
    }

    /// `x-dead-letter-exchange`: where rejected, expired and over-limit
    /// messages are republished (`""` is the default exchange).
    pub fn dead_letter_exchange(self, exchange: &str) -> Self {
        self.argument("x-dead-letter-exchange", exchange)
    }

    /// `x-dead-letter-routing-key`: the routing key dead-lettered messages
    /// get instead of their own. RabbitMQ refuses it without
    /// [`dead_letter_exchange`](Self::dead_letter_exchange).
    pub fn dead_letter_routing_key(self, routing_key: &str) -> Self {
        self.argument("x-dead-letter-routing-key", routing_key)
    }

    /// `x-dead-letter-strategy` (quorum queues).
    pub fn dead_letter_strategy(self, strategy: DeadLetterStrategy) -> Self {
        self.argument("x-dead-letter-strategy", strategy.as_str())
    }

    /// `x-max-length`: the most messages the queue holds; what happens
    /// beyond it is [`overflow`](Self::overflow)'s.
    pub fn max_length(self, messages: u64) -> Self {
        self.argument("x-max-length", long(messages))
    }

    /// `x-max-length-bytes`: the most body bytes the queue (or, for a
    /// stream, the log's retention) holds.
    pub fn max_length_bytes(self, bytes: u64) -> Self {
        self.argument("x-max-length-bytes", long(bytes))
    }

    /// `x-overflow`: what a full queue does with a new message.
    pub fn overflow(self, overflow: Overflow) -> Self {
        self.argument("x-overflow", overflow.as_str())
    }

    /// `x-message-ttl`, in whole milliseconds: how long a message may wait
    /// in the queue.
    pub fn message_ttl(self, ttl: Duration) -> Self {
        self.argument("x-message-ttl", millis(ttl))
    }

    /// `x-expires`, in whole milliseconds: how long the queue may go
    /// unused before the broker deletes it (RabbitMQ refuses 0).
    pub fn expires(self, after: Duration) -> Self {
        self.argument("x-expires", millis(after))
    }

    /// `x-single-active-consumer`: deliver to one consumer at a time, the
    /// others standing by.
    pub fn single_active_consumer(self, single: bool) -> Self {
        self.argument("x-single-active-consumer", single)
    }

    /// `x-quorum-initial-group-size` (quorum queues): on how many nodes
    /// the queue starts (RabbitMQ refuses 0).
    pub fn quorum_initial_group_size(self, nodes: u32) -> Self {
        self.argument("x-quorum-initial-group-size", i64::from(nodes))
    }

    /// `x-max-age` (streams): segments older than this are discarded.
    pub fn max_age(self, age: Interval) -> Self {
        self.argument("x-max-age", age.to_string())
    }

    /// `x-stream-max-segment-size-bytes` (streams): the size of the log's
    /// segment files, the unit retention discards.
    pub fn stream_max_segment_size_bytes(self, bytes: u64) -> Self {
        self.argument("x-stream-max-segment-size-bytes", long(bytes))
    }

    /// Any other argument (`x-max-priority`, `x-queue-leader-locator`,
    /// a plugin's), replacing an entry of the same name.
    pub fn argument(mut self, name: impl Into<ShortString>, value: impl Into<FieldValue>) -> Self {
        self.table.insert(name, value);
        self
    }

    /// The table built so far.
    #[must_use]
    pub fn as_table(&self) -> &FieldTable {
        &self.table
    }

    /// The table, for [`QueueDeclare::arguments`].
    #[must_use]
    pub fn into_table(self) -> FieldTable {
        self.table
    }

    /// A `queue.declare` of `queue` with these arguments, durable (as
    /// quorum queues and streams must be, and as a queue worth arguments
    /// usually is); change the other fields with struct update syntax.
    #[must_use]
    pub fn declare(self, queue: &str) -> QueueDeclare {
        QueueDeclare {
            queue: queue.into(),
            durable: true,
            arguments: self.table,
            ..QueueDeclare::default()
        }
    }
}

impl From<QueueArguments> for FieldTable {
    fn from(arguments: QueueArguments) -> Self {
        arguments.table
    }
}

/// A count or size as RabbitMQ's integer arguments take it: a signed 64-bit
/// integer, which any value a broker can act on fits.
fn long(value: u64) -> FieldValue {
    FieldValue::LongLongInt(i64::try_from(value).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> FieldValue {
    long(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// What a full queue does with a new message (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Overflow {
    /// `drop-head`: the oldest message is dropped (or dead-lettered); the
    /// default.
    DropHead,
    /// `reject-publish`: the new message is refused; a publisher in confirm
    /// mode gets a `basic.nack`.
    RejectPublish,
    /// `reject-publish-dlx`: refused and dead-lettered (classic queues).
    RejectPublishDlx,
}

impl Overflow {
    /// The name RabbitMQ uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DropHead => "drop-head",
            Self::RejectPublish => "reject-publish",
            Self::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// How a quorum queue dead-letters (`x-dead-letter-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterStrategy {
    /// `at-most-once`: republished without confirmation, and lost if the
    /// target cannot take it; the default.
    AtMostOnce,
    /// `at-least-once`: kept in the source queue until the dead-letter
    /// target confirms it. RabbitMQ needs `x-overflow` =
    /// [`reject-publish`](Overflow::RejectPublish) for it, and falls back
    /// to at-most-once without.
    AtLeastOnce,
}

impl DeadLetterStrategy {
    /// The name RabbitMQ uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtMostOnce => "at-most-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// A span of time as RabbitMQ writes one for streams: a positive whole
/// number and one unit letter (`7D`, `12h`, `30m`), for a stream's
/// [`max_age`](QueueArguments::max_age) and a consumer's
/// [`StreamOffset::Interval`](super::StreamOffset::Interval).
///
/// ```
/// use amqp_proto::queue::{Interval, IntervalUnit};
///
/// let week: Interval = "7D".parse()?;
/// assert_eq!(week, Interval::new(7, IntervalUnit::Days).unwrap());
/// assert_eq!(week.to_string(), "7D");
/// assert_eq!(week.approximate_duration().as_secs(), 7 * 24 * 3600);
/// assert!("0h".parse::<Interval>().is_err() && "1w".parse::<Interval>().is_err());
/// # Ok::<(), amqp_proto::queue::ParseIntervalError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    amount: u32,
    unit: IntervalUnit,
}

impl Interval {
    /// `amount` `unit`s; `None` for 0, which RabbitMQ refuses.
    #[must_use]
    pub fn new(amount: u32, unit: IntervalUnit) -> Option<Self> {
        (amount > 0).then_some(Self { amount, unit })
    }

    /// How many units.
    #[must_use]
    pub fn amount(self) -> u32 {
        self.amount
    }

    /// Which unit.
    #[must_use]
    pub fn unit(self) -> IntervalUnit {
        self.unit
    }

    /// The span as RabbitMQ reckons it (a month is 30 days, a year 365).
    #[must_use]
    pub fn approximate_duration(self) -> Duration {
        Duration::from_secs(u64::from(self.amount) * self.unit.seconds())
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.letter())
    }
}

impl std::str::FromStr for Interval {
    type Err = ParseIntervalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseIntervalError(text.to_owned());
        let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (amount, unit) = text.split_at(digits);
        let unit = match unit {
            "Y" => IntervalUnit::Years,
            "M" => IntervalUnit::Months,
            "D" => IntervalUnit::Days,
            "h" => IntervalUnit::Hours,
            "m" => IntervalUnit::Minutes,
            "s" => IntervalUnit::Seconds,
            _ => return Err(invalid()),
        };
        let amount = amount.parse().map_err(|_| invalid())?;
        Self::new(amount, unit).ok_or_else(invalid)
    }
}

/// The unit of an [`Interval`], with the letter RabbitMQ uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntervalUnit {
    /// `Y`: 365 days.
    Years,
    /// `M`: 30 days.
    Months,
    /// `D`: days.
    Days,
    /// `h`: hours.
    Hours,
    /// `m`: minutes.
    Minutes,
    /// `s`: seconds.
    Seconds,
}

impl IntervalUnit {
    /// The letter RabbitMQ writes it with.
    #[must_use]
    pub fn letter(self) -> char {
        match self {
            Self::Years => 'Y',
            Self::Months => 'M',
            Self::Days => 'D',
            Self::Hours => 'h',
            Self::Minutes => 'm',
            Self::Seconds => 's',
        }
    }

    fn seconds(self) -> u64 {
        const DAY: u64 = 24 * 3600;
        match self {
            Self::Years => 365 * DAY,
            Self::Months => 30 * DAY,
            Self::Days => DAY,
            Self::Hours => 3600,
            Self::Minutes => 60,
            Self::Seconds => 1,
        }
    }
}

/// The text is not an interval RabbitMQ accepts: a positive whole number
/// followed by one of `Y`, `M`, `D`, `h`, `m`, `s`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an interval such as 7D, 12h or 30m (a positive number and one of Y, M, D, h, m, s)")]
pub struct ParseIntervalError(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn value(arguments: &QueueArguments, name: &str) -> Option<FieldValue> {
        arguments.as_table().get(name).cloned()
    }

    fn string(text: &str) -> Option<FieldValue> {
        Some(FieldValue::from(text))
    }

    #[test]
    fn each_argument_has_the_type_rabbitmq_checks() {
        let arguments = QueueArguments::quorum()
            .delivery_limit(5)
            .dead_letter_exchange("dlx")
            .dead_letter_routing_key("dead")
            .dead_letter_strategy(DeadLetterStrategy::AtLeastOnce)
            .max_length(10_000)
            .max_length_bytes(1 << 40)
            .overflow(Overflow::RejectPublish)
            .message_ttl(Duration::from_millis(60_500))
            .expires(Duration::from_secs(1800))
            .single_active_consumer(true)
            .quorum_initial_group_size(3);
        let long = |n: i64| Some(FieldValue::LongLongInt(n));
        assert_eq!(value(&arguments, "x-queue-type"), string("quorum"));
        assert_eq!(value(&arguments, "x-delivery-limit"), long(5));
        assert_eq!(value(&arguments, "x-dead-letter-exchange"), string("dlx"));
        assert_eq!(
            value(&arguments, "x-dead-letter-routing-key"),
            string("dead")
        );
        assert_eq!(
            value(&arguments, "x-dead-letter-strategy"),
            string("at-least-once")
        );
        assert_eq!(value(&arguments, "x-max-length"), long(10_000));
        assert_eq!(value(&arguments, "x-max-length-bytes"), long(1 << 40));
        assert_eq!(value(&arguments, "x-overflow"), string("reject-publish"));
        assert_eq!(value(&arguments, "x-message-ttl"), long(60_500));
        assert_eq!(value(&arguments, "x-expires"), long(1_800_000));
        assert_eq!(
            value(&arguments, "x-single-active-consumer"),
            Some(FieldValue::Boolean(true))
        );
        assert_eq!(value(&arguments, "x-quorum-initial-group-size"), long(3));
        assert_eq!(arguments.queue_type(), Some(QueueType::Quorum));

        let stream = QueueArguments::stream()
            .max_age(Interval::new(7, IntervalUnit::Days).unwrap_or_else(|| unreachable!()))
            .stream_max_segment_size_bytes(50_000_000)
            .max_length_bytes(u64::MAX);
        assert_eq!(value(&stream, "x-queue-type"), string("stream"));
        assert_eq!(value(&stream, "x-max-age"), string("7D"));
        assert_eq!(
            value(&stream, "x-stream-max-segment-size-bytes"),
            long(50_000_000)
        );
        assert_eq!(
            value(&stream, "x-max-length-bytes"),
            long(i64::MAX),
            "saturates"
        );
        assert_eq!(
            value(&QueueArguments::classic(), "x-queue-type"),
            string("classic")
        );
        assert!(QueueArguments::new().as_table().is_empty());
    }

    #[test]
    fn the_other_names_and_a_repeated_argument() {
        assert_eq!(Overflow::DropHead.as_str(), "drop-head");
        assert_eq!(Overflow::RejectPublishDlx.as_str(), "reject-publish-dlx");
        assert_eq!(DeadLetterStrategy::AtMostOnce.as_str(), "at-most-once");
        let arguments = QueueArguments::quorum()
            .delivery_limit(1)
            .delivery_limit(2)
            .argument("x-max-priority", 10_i64);
        assert_eq!(arguments.as_table().len(), 3, "the limit was replaced");
        assert_eq!(
            value(&arguments, "x-delivery-limit"),
            Some(FieldValue::LongLongInt(2))
        );
        let declare = arguments.clone().declare("jobs");
        assert!(declare.durable && !declare.exclusive && !declare.auto_delete);
        assert_eq!(declare.queue, "jobs");
        assert_eq!(declare.arguments, FieldTable::from(arguments));
    }

    #[test]
    fn intervals_parse_as_rabbitmq_parses_them() {
        for (text, amount, unit) in [
            ("1Y", 1, IntervalUnit::Years),
            ("2M", 2, IntervalUnit::Months),
            ("7D", 7, IntervalUnit::Days),
            ("12h", 12, IntervalUnit::Hours),
            ("30m", 30, IntervalUnit::Minutes),
            ("90s", 90, IntervalUnit::Seconds),
        ] {
            let interval: Interval = text.parse().unwrap_or_else(|error| panic!("{error}"));
            assert_eq!((interval.amount(), interval.unit()), (amount, unit));
            assert_eq!(interval.to_string(), text);
        }
        for bad in [
            "",
            "h",
            "0D",
            "7",
            "7d",
            "1H",
            "-1h",
            "1.5h",
            "1 h",
            "7DD",
            "99999999999s",
        ] {
            assert!(
                bad.parse::<Interval>().is_err(),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(
            "30m"
                .parse::<Interval>()
                .map(Interval::approximate_duration),
            Ok(Duration::from_secs(1800))
        );
        assert_eq!(Interval::new(0, IntervalUnit::Seconds), None);
    }
}
