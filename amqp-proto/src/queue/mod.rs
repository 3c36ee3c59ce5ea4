//! RabbitMQ's queue types (classic, quorum, stream) as typed values: the
//! `arguments` of a `queue.declare` ([`QueueArguments`]), where a stream
//! consumer starts ([`StreamOffset`]), and what RabbitMQ writes into the
//! headers of what it delivers from them ([`delivery_count`],
//! [`stream_offset`]).
//!
//! Everything here is a RabbitMQ extension carried in AMQP field tables, so
//! each value has the field type RabbitMQ checks for: names and modes as
//! long strings (`S`), numbers as signed 64-bit integers (`l`, which every
//! RabbitMQ version accepts for its integer arguments), flags as booleans
//! (`t`), a stream timestamp as an AMQP timestamp (`T`, seconds).
//!
//! ```
//! use std::time::Duration;
//! use amqp_proto::queue::{DeadLetterStrategy, Overflow, QueueArguments, StreamOffset};
//!
//! // A quorum queue that dead-letters a message after its fifth delivery.
//! let declare = QueueArguments::quorum()
//!     .delivery_limit(5)
//!     .dead_letter_exchange("jobs.dlx")
//!     .dead_letter_strategy(DeadLetterStrategy::AtLeastOnce)
//!     .overflow(Overflow::RejectPublish)
//!     .message_ttl(Duration::from_secs(3600))
//!     .declare("jobs");
//! assert!(declare.durable, "quorum queues are durable");
//!
//! // A stream keeping a week, and a consumer reading it from the start.
//! let stream = QueueArguments::stream().max_age("7D".parse()?).declare("events");
//! let consume = StreamOffset::First.consume("events");
//! # let _ = (stream, consume);
//! # Ok::<(), amqp_proto::queue::ParseIntervalError>(())
//! ```
//!
//! Quorum queues and streams are replicated and outlive their declaring
//! connection, so RabbitMQ refuses to declare one that is not durable, or
//! is exclusive or auto-delete (406 PRECONDITION_FAILED, which closes the
//! channel). The core refuses such a declaration before sending it
//! ([`UsageError::QueueProperty`]), and
//! likewise what RabbitMQ refuses on a stream it knows of
//! ([`UsageError::Stream`]); see
//! [`StreamRefusal`](crate::StreamRefusal).

mod arguments;
mod stream;

pub use arguments::{
    DeadLetterStrategy, Interval, IntervalUnit, Overflow, ParseIntervalError, QueueArguments,
};
pub use stream::{delivery_count, stream_offset, StreamOffset};

use crate::codec::{FieldTable, ShortString};
use crate::error::UsageError;
use crate::spec::QueueDeclare;

/// The `queue.declare` argument naming the queue type.
pub const QUEUE_TYPE: &str = "x-queue-type";
/// The header RabbitMQ adds to a quorum queue's message from its second
/// delivery on: how many times it was delivered before.
pub const DELIVERY_COUNT: &str = "x-delivery-count";
/// The `basic.consume` argument saying where a stream consumer starts, and
/// the header RabbitMQ adds to each message delivered from a stream: its
/// offset.
pub const STREAM_OFFSET: &str = "x-stream-offset";

/// A RabbitMQ queue type, as `x-queue-type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueType {
    /// `classic`: the original queue type, on one node.
    Classic,
    /// `quorum`: replicated with Raft over a majority of nodes; durable,
    /// never exclusive or auto-delete.
    Quorum,
    /// `stream`: a replicated append-only log read from an offset;
    /// durable, never exclusive or auto-delete.
    Stream,
}

impl QueueType {
    /// The name `x-queue-type` carries.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
            Self::Stream => "stream",
        }
    }

    /// The type `arguments` (a `queue.declare`'s) ask for: `None` when they
    /// name none (the broker's default type) or one this crate does not
    /// know.
    ///
    /// ```
    /// use amqp_proto::queue::{QueueArguments, QueueType};
    ///
    /// let arguments = QueueArguments::stream().into_table();
    /// assert_eq!(QueueType::of(&arguments), Some(QueueType::Stream));
    /// ```
    #[must_use]
    pub fn of(arguments: &FieldTable) -> Option<Self> {
        let name = arguments.get(QUEUE_TYPE)?.as_long_string()?;
        [Self::Classic, Self::Quorum, Self::Stream]
            .into_iter()
            .find(|kind| kind.as_str().as_bytes() == name.as_bytes())
    }

    /// True for the replicated types RabbitMQ declares only durable, not
    /// exclusive and not auto-delete.
    #[must_use]
    pub fn is_replicated(self) -> bool {
        matches!(self, Self::Quorum | Self::Stream)
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A property of a `queue.declare` that a quorum queue or stream cannot
/// have; see [`UsageError::QueueProperty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueProperty {
    /// `durable` is false (RabbitMQ: "invalid property 'non-durable'").
    NonDurable,
    /// `exclusive` is set (RabbitMQ: "invalid property 'exclusive-owner'").
    Exclusive,
    /// `auto_delete` is set (RabbitMQ: "invalid property 'auto-delete'").
    AutoDelete,
}

impl std::fmt::Display for QueueProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NonDurable => "non-durable",
            Self::Exclusive => "exclusive",
            Self::AutoDelete => "auto-delete",
        })
    }
}

/// Refuses what RabbitMQ would answer with 406 PRECONDITION_FAILED: a
/// quorum queue or stream declared non-durable, exclusive or auto-delete.
/// A passive declaration only checks that the queue exists, so it passes.
pub(crate) fn check_declare(declare: &QueueDeclare) -> Result<(), UsageError> {
    if declare.passive {
        return Ok(());
    }
    let Some(queue_type) = QueueType::of(&declare.arguments).filter(|kind| kind.is_replicated())
    else {
        return Ok(());
    };
    // RabbitMQ checks in this order; the first failing one is reported.
    let property = if !declare.durable {
        QueueProperty::NonDurable
    } else if declare.exclusive {
        QueueProperty::Exclusive
    } else if declare.auto_delete {
        QueueProperty::AutoDelete
    } else {
        return Ok(());
    };
    Err(UsageError::QueueProperty {
        queue: declare.queue.to_string_lossy().into_owned(),
        queue_type,
        property,
    })
}

/// The most stream names one connection remembers. They are the
/// application's own declarations, so this is far beyond any real use;
/// it only keeps a runaway loop of declarations from growing memory.
pub(crate) const MAX_KNOWN_STREAMS: usize = 4_096;

/// The streams this connection declared (`x-queue-type` = `stream`,
/// confirmed by the server) and has not deleted: consumes and gets on them
/// are checked against what RabbitMQ refuses on streams.
#[derive(Debug, Default, Clone)]
pub(crate) struct KnownStreams(std::collections::VecDeque<ShortString>);

impl KnownStreams {
    pub(crate) fn insert(&mut self, queue: ShortString) {
        if self.contains(&queue) {
            return;
        }
        if self.0.len() >= MAX_KNOWN_STREAMS {
            self.0.pop_front();
        }
        self.0.push_back(queue);
    }

    pub(crate) fn remove(&mut self, queue: &ShortString) {
        self.0.retain(|known| known != queue);
    }

    pub(crate) fn contains(&self, queue: &ShortString) -> bool {
        !queue.is_empty() && self.0.contains(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(
        kind: QueueArguments,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
    ) -> QueueDeclare {
        QueueDeclare {
            durable,
            exclusive,
            auto_delete,
            ..kind.declare("q")
        }
    }

    #[test]
    fn replicated_queues_must_be_durable_shared_and_kept() {
        for (kind, queue_type) in [
            (QueueArguments::quorum(), QueueType::Quorum),
            (QueueArguments::stream(), QueueType::Stream),
        ] {
            assert_eq!(
                check_declare(&declare(kind.clone(), true, false, false)),
                Ok(())
            );
            for (durable, exclusive, auto_delete, property) in [
                (false, false, false, QueueProperty::NonDurable),
                (true, true, false, QueueProperty::Exclusive),
                (true, false, true, QueueProperty::AutoDelete),
                (false, true, true, QueueProperty::NonDurable),
            ] {
                assert_eq!(
                    check_declare(&declare(kind.clone(), durable, exclusive, auto_delete)),
                    Err(UsageError::QueueProperty {
                        queue: "q".into(),
                        queue_type,
                        property,
                    })
                );
            }
            let passive = QueueDeclare {
                passive: true,
                ..declare(kind, false, true, true)
            };
            assert_eq!(check_declare(&passive), Ok(()), "passive only looks");
        }
        for classic in [QueueArguments::classic(), QueueArguments::new()] {
            assert_eq!(check_declare(&declare(classic, false, true, true)), Ok(()));
        }
    }

    #[test]
    fn the_queue_type_is_read_from_a_long_string_only() {
        let mut arguments = FieldTable::new();
        assert_eq!(QueueType::of(&arguments), None);
        arguments.insert(QUEUE_TYPE, "quorum");
        assert_eq!(QueueType::of(&arguments), Some(QueueType::Quorum));
        arguments.insert(QUEUE_TYPE, "lazy");
        assert_eq!(QueueType::of(&arguments), None, "not a type RabbitMQ has");
        arguments.insert(QUEUE_TYPE, 1_i64);
        assert_eq!(QueueType::of(&arguments), None, "RabbitMQ wants a string");
    }

    #[test]
    fn known_streams_are_a_bounded_set() {
        let mut streams = KnownStreams::default();
        streams.insert("a".into());
        streams.insert("a".into());
        assert_eq!(streams.0.len(), 1);
        assert!(!streams.contains(&ShortString::EMPTY));
        streams.remove(&"a".into());
        assert!(!streams.contains(&"a".into()));
        for n in 0..=MAX_KNOWN_STREAMS {
            streams.insert(n.to_string().as_str().into());
        }
        assert_eq!(streams.0.len(), MAX_KNOWN_STREAMS);
        assert!(!streams.contains(&"0".into()), "the oldest went");
        assert!(streams.contains(&MAX_KNOWN_STREAMS.to_string().as_str().into()));
    }
}
