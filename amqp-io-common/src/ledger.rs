//! The adapters' bookkeeping, written once and IO-free: which opening of a
//! channel id a handle belongs to and why it closed, the `basic.nack`s and
//! failures a batch confirm wait reports, returned messages, and each
//! consumer's queue of deliveries, its end, and what to give back to the
//! broker when nobody will read it any more.
//!
//! Each adapter keeps one [`Ledger`] behind its connection lock, feeds it
//! the core's events, and attaches what its own way of waiting needs: the
//! blocking adapter a callback, the tokio adapter a waker (the `C` and `K`
//! parameters). Whatever must be sent as a consequence (rejecting a
//! delivery nobody will take, cancelling an abandoned consumer) comes back
//! as [`Cleanup`] for the adapter to pass to the core.
//!
//! Not public API (hidden from the docs, no semver promise): only this
//! workspace's adapters use it, until it becomes private to this crate
//! with the shared `session` module (issue #14).

use std::collections::VecDeque;

use amqp_proto::codec::ShortString;
use amqp_proto::{
    ChannelHandle, CloseReason, ConfirmOutcome, ConnectionError, Delivery, Failure, Returned,
};

use crate::map::Map;
use crate::Error;

/// A consumer's identity on a connection: its channel and tag.
pub(crate) type ConsumerKey = (u16, ShortString);

/// Refusals kept per consumer before the oldest are dropped.
const MAX_KEPT_REFUSALS: usize = 1_024;

/// Returned messages kept per channel before the oldest are dropped.
const MAX_KEPT_RETURNS: usize = 1_024;

/// One opening of a channel id.
#[derive(Debug)]
pub(crate) struct ChannelRecord<C> {
    /// The opening: tells it from earlier and later ones of the same id.
    pub(crate) handle: ChannelHandle,
    /// Why it closed, once it has.
    pub(crate) closed: Option<CloseReason>,
    nacked_since_wait: u64,
    failed_since_wait: Option<Failure>,
    /// Publishes settled other than by `basic.ack`, by sequence number,
    /// kept for a per-publish confirmation to read.
    refused: Map<u64, ConfirmOutcome>,
    /// Returned messages not yet handed to the application (the last 1,024).
    pub(crate) returns: VecDeque<Returned>,
    /// What the adapter keeps per channel.
    pub(crate) extra: C,
}

impl<C> ChannelRecord<C> {
    /// What a batch confirm wait reports once nothing is unconfirmed: the
    /// close that failed publishes, else how many the broker refused since
    /// the last wait, else success. Resets the tally.
    pub(crate) fn take_confirm_result(&mut self) -> Result<(), Error> {
        let nacked = std::mem::take(&mut self.nacked_since_wait);
        match self.failed_since_wait.take() {
            Some(failure) => Err(failure.into()),
            None if nacked > 0 => Err(Error::Nacked(nacked)),
            None => Ok(()),
        }
    }
}

/// Why a consumer receives nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConsumerEnd {
    /// The application cancelled it.
    Cancelled,
    /// The server cancelled it (its queue was deleted, or it failed over).
    CancelledByServer,
    /// Its channel closed.
    Channel(CloseReason),
    /// The connection ended.
    Connection(ConnectionError),
}

impl ConsumerEnd {
    /// The error a consumer reports for this end, the same in both
    /// adapters: the application's own cancel is told apart from the
    /// server's cancel-notify.
    #[must_use]
    pub(crate) fn error(&self, tag: &ShortString) -> Error {
        match self {
            Self::Cancelled => Error::ConsumerCancelledByApplication(tag.to_string()),
            Self::CancelledByServer => Error::ConsumerCancelled(tag.to_string()),
            Self::Channel(reason) => Error::ChannelClosed(reason.clone()),
            Self::Connection(error) => Error::ConnectionClosed(error.clone()),
        }
    }
}

/// One consumer.
#[derive(Debug)]
pub(crate) struct ConsumerRecord<K> {
    /// The opening of its channel it belongs to.
    pub(crate) channel: ChannelHandle,
    no_ack: bool,
    queue: VecDeque<Delivery>,
    /// Messages for it the core refused (a per-message limit), not yet
    /// reported: the last 1,024.
    refused: VecDeque<amqp_proto::DecodeError>,
    /// Why it receives nothing more, once that is so.
    pub(crate) end: Option<ConsumerEnd>,
    /// Nobody will read it: deliveries go back to the broker.
    abandoned: bool,
    /// What the adapter keeps per consumer.
    pub(crate) extra: K,
}

impl<K> ConsumerRecord<K> {
    /// True when deliveries wait to be taken.
    #[must_use]
    pub(crate) fn has_deliveries(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// Something the adapter must send because of the bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cleanup {
    /// Give a delivery back (`basic.reject` with requeue).
    Requeue {
        /// Its channel.
        channel: u16,
        /// Its delivery tag.
        delivery_tag: u64,
    },
    /// Cancel a consumer nobody reads (`basic.cancel`).
    Cancel {
        /// Its channel.
        channel: u16,
        /// Its tag.
        consumer_tag: ShortString,
    },
}

/// Where a delivery went.
#[derive(Debug)]
pub(crate) enum Sorted<'a, K> {
    /// Into its consumer's queue; wake whoever waits on it.
    Queued(&'a mut K),
    /// Nowhere, and nothing to do: its consumer is abandoned and
    /// acknowledges automatically.
    Dropped,
    /// Back to the broker.
    Returned(Cleanup),
}

/// The bookkeeping of one connection.
#[derive(Debug)]
pub(crate) struct Ledger<C, K> {
    channels: Map<u16, ChannelRecord<C>>,
    consumers: Map<ConsumerKey, ConsumerRecord<K>>,
    buffered_deliveries: usize,
    closed: Option<ConnectionError>,
    /// Entries in the channels' `refused` maps, so forgetting them all
    /// costs nothing when there are none.
    refused_kept: usize,
}

impl<C, K> Default for Ledger<C, K> {
    fn default() -> Self {
        Self {
            channels: Map::default(),
            consumers: Map::default(),
            buffered_deliveries: 0,
            closed: None,
            refused_kept: 0,
        }
    }
}

impl<C, K> Ledger<C, K> {
    /// Starts the record of a channel the core just opened (its id may be
    /// one used before: what belonged to that opening goes).
    pub(crate) fn open_channel(&mut self, handle: ChannelHandle, extra: C) {
        let id = handle.id();
        self.consumers.retain(|(channel, _), _| *channel != id);
        let record = ChannelRecord {
            handle,
            closed: None,
            nacked_since_wait: 0,
            failed_since_wait: None,
            refused: Map::default(),
            returns: VecDeque::new(),
            extra,
        };
        if let Some(earlier) = self.channels.insert(id, record) {
            self.refused_kept -= earlier.refused.len();
        }
    }

    /// The record of a usable channel, or why it is not usable: the
    /// connection's end, the channel's close, or an id that was reopened
    /// since.
    pub(crate) fn channel(
        &mut self,
        handle: ChannelHandle,
    ) -> Result<&mut ChannelRecord<C>, Error> {
        if let Some(error) = &self.closed {
            return Err(Error::ConnectionClosed(error.clone()));
        }
        let id = handle.id();
        match self.channels.get_mut(&id) {
            Some(record) if record.handle == handle => match &record.closed {
                Some(reason) => Err(Error::ChannelClosed(reason.clone())),
                None => Ok(record),
            },
            _ => Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(id))),
        }
    }

    /// The current record of a channel id, closed or not.
    pub(crate) fn channel_record(&mut self, id: u16) -> Option<&mut ChannelRecord<C>> {
        self.channels.get_mut(&id)
    }

    /// Every channel record.
    pub(crate) fn channel_records(
        &mut self,
    ) -> impl Iterator<Item = (&u16, &mut ChannelRecord<C>)> {
        self.channels.iter_mut()
    }

    /// Counts a settled publish for the next batch wait and, with
    /// `keep_refusal`, keeps a nack or failure for
    /// [`take_confirm_outcome`](Self::take_confirm_outcome) (an ack needs
    /// no keeping: a settled publish with nothing kept was acked).
    pub(crate) fn confirmed(
        &mut self,
        channel: u16,
        sequence: u64,
        outcome: ConfirmOutcome,
        keep_refusal: bool,
    ) {
        let Some(record) = self.channels.get_mut(&channel) else {
            return;
        };
        match &outcome {
            ConfirmOutcome::Ack => return,
            ConfirmOutcome::Nack => record.nacked_since_wait += 1,
            ConfirmOutcome::Failed(failure) => {
                record.failed_since_wait = Some(failure.clone());
            }
        }
        if keep_refusal && record.refused.insert(sequence, outcome).is_none() {
            self.refused_kept += 1;
        }
    }

    /// How the publish `sequence` of the channel's opening `channel` was
    /// settled, once the core no longer counts it unconfirmed: a kept nack
    /// or failure (forgotten as it is read), else the ack.
    pub(crate) fn take_confirm_outcome(
        &mut self,
        channel: ChannelHandle,
        sequence: u64,
    ) -> Result<(), Error> {
        let record = self
            .channels
            .get_mut(&channel.id())
            .filter(|record| record.handle == channel);
        let Some(record) = record else {
            // The channel closed and its id was reused: the publish was
            // settled with the old channel, whose record is gone.
            return Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(
                channel.id(),
            )));
        };
        let refused = record.refused.remove(&sequence);
        if refused.is_some() {
            self.refused_kept -= 1;
        }
        match refused {
            None | Some(ConfirmOutcome::Ack) => Ok(()),
            Some(ConfirmOutcome::Nack) => Err(Error::Nacked(1)),
            Some(ConfirmOutcome::Failed(failure)) => Err(failure.into()),
        }
    }

    /// Forgets the kept refusals of `channel`, or of every channel.
    #[inline]
    pub(crate) fn forget_refusals(&mut self, channel: Option<u16>) {
        // Asked after every batch of events: the common answer, nothing
        // kept, stays inline.
        if self.refused_kept != 0 {
            self.forget_kept_refusals(channel);
        }
    }

    #[inline(never)]
    fn forget_kept_refusals(&mut self, channel: Option<u16>) {
        for (id, record) in &mut self.channels {
            if !matches!(channel, Some(channel) if channel != *id) {
                self.refused_kept -= record.refused.len();
                record.refused.clear();
            }
        }
    }

    /// Keeps a returned message for its channel; returns the channel's
    /// record so the adapter can wake whoever waits for returns.
    pub(crate) fn returned(&mut self, returned: Returned) -> Option<&mut ChannelRecord<C>> {
        let record = self.channels.get_mut(&returned.channel)?;
        if record.returns.len() >= MAX_KEPT_RETURNS {
            record.returns.pop_front();
        }
        record.returns.push_back(returned);
        Some(record)
    }

    /// Records a channel's close and ends its consumers; `wake` is called
    /// for each consumer ended.
    pub(crate) fn channel_closed(
        &mut self,
        id: u16,
        reason: &CloseReason,
        mut wake: impl FnMut(&mut K),
    ) {
        if let Some(record) = self.channels.get_mut(&id) {
            record.closed = Some(reason.clone());
        }
        for ((channel, _), consumer) in &mut self.consumers {
            if *channel == id && consumer.end.is_none() {
                consumer.end = Some(ConsumerEnd::Channel(reason.clone()));
                wake(&mut consumer.extra);
            }
        }
    }

    /// Records the connection's end and ends every consumer; `wake` is
    /// called for each.
    pub(crate) fn connection_closed(
        &mut self,
        error: &ConnectionError,
        mut wake: impl FnMut(&mut K),
    ) {
        for consumer in self.consumers.values_mut() {
            if consumer.end.is_none() {
                consumer.end = Some(ConsumerEnd::Connection(error.clone()));
            }
            wake(&mut consumer.extra);
        }
        self.closed = Some(error.clone());
    }

    /// Why the connection ended, once it has.
    #[must_use]
    pub(crate) fn connection_error(&self) -> Option<&ConnectionError> {
        self.closed.as_ref()
    }

    /// Starts the queue that deliveries for `key` are sorted into.
    pub(crate) fn register_consumer(
        &mut self,
        key: ConsumerKey,
        channel: ChannelHandle,
        no_ack: bool,
        extra: K,
    ) {
        let record = ConsumerRecord {
            channel,
            no_ack,
            queue: VecDeque::new(),
            refused: VecDeque::new(),
            end: None,
            abandoned: false,
            extra,
        };
        self.consumers.insert(key, record);
    }

    /// A message for the consumer `key` was refused by the core (it broke
    /// a per-message limit and was rejected); returns the consumer's extra
    /// for waking. Nothing is kept for an abandoned consumer.
    pub(crate) fn refused(
        &mut self,
        key: &ConsumerKey,
        error: amqp_proto::DecodeError,
    ) -> Option<&mut K> {
        let consumer = self.consumers.get_mut(key)?;
        if consumer.abandoned {
            return None;
        }
        if consumer.refused.len() >= MAX_KEPT_REFUSALS {
            consumer.refused.pop_front();
        }
        consumer.refused.push_back(error);
        Some(&mut consumer.extra)
    }

    /// The oldest refusal not yet reported for consumer `key`.
    pub(crate) fn take_refusal(&mut self, key: &ConsumerKey) -> Option<amqp_proto::DecodeError> {
        self.consumers.get_mut(key)?.refused.pop_front()
    }

    /// A consumer's record.
    pub(crate) fn consumer(&mut self, key: &ConsumerKey) -> Option<&mut ConsumerRecord<K>> {
        self.consumers.get_mut(key)
    }

    /// Every consumer's record.
    pub(crate) fn consumers(
        &mut self,
    ) -> impl Iterator<Item = (&ConsumerKey, &mut ConsumerRecord<K>)> {
        self.consumers.iter_mut()
    }

    /// Records that a consumer receives nothing more; returns its extra
    /// for waking. An abandoned consumer's record goes.
    pub(crate) fn consumer_ended(
        &mut self,
        channel: u16,
        tag: &ShortString,
        end: ConsumerEnd,
    ) -> Option<&mut K> {
        let key = (channel, tag.clone());
        let consumer = self.consumers.get(&key)?;
        if consumer.abandoned {
            self.buffered_deliveries -= consumer.queue.len();
            self.consumers.remove(&key);
            return None;
        }
        let consumer = self.consumers.get_mut(&key)?;
        if consumer.end.is_none() {
            consumer.end = Some(end);
        }
        Some(&mut consumer.extra)
    }

    /// Sorts a delivery into its consumer's queue.
    pub(crate) fn delivered(&mut self, delivery: Delivery) -> Sorted<'_, K> {
        let key = (delivery.channel, delivery.consumer_tag.clone());
        match self.consumers.get_mut(&key) {
            Some(consumer) if !consumer.abandoned => {
                consumer.queue.push_back(delivery);
                self.buffered_deliveries += 1;
                Sorted::Queued(&mut consumer.extra)
            }
            Some(consumer) if consumer.no_ack => Sorted::Dropped,
            _ => Sorted::Returned(Cleanup::Requeue {
                channel: delivery.channel,
                delivery_tag: delivery.delivery_tag,
            }),
        }
    }

    /// Takes a consumer's next delivery.
    pub(crate) fn take_delivery(&mut self, key: &ConsumerKey) -> Option<Delivery> {
        let delivery = self.consumers.get_mut(key)?.queue.pop_front()?;
        self.buffered_deliveries -= 1;
        Some(delivery)
    }

    /// Takes every delivery a consumer holds.
    pub(crate) fn take_deliveries(&mut self, key: &ConsumerKey) -> VecDeque<Delivery> {
        let taken = self
            .consumers
            .get_mut(key)
            .map(|consumer| std::mem::take(&mut consumer.queue))
            .unwrap_or_default();
        self.buffered_deliveries -= taken.len();
        taken
    }

    /// Moves every delivery a consumer holds to the end of `taken`. When
    /// `taken` is empty the two queues trade places, so a consumer that
    /// takes its deliveries batch after batch reuses two buffers instead
    /// of growing a new one for each batch.
    pub(crate) fn take_deliveries_into(
        &mut self,
        key: &ConsumerKey,
        taken: &mut VecDeque<Delivery>,
    ) {
        let Some(consumer) = self.consumers.get_mut(key) else {
            return;
        };
        self.buffered_deliveries -= consumer.queue.len();
        if taken.is_empty() {
            std::mem::swap(&mut consumer.queue, taken);
        } else {
            taken.append(&mut consumer.queue);
        }
    }

    /// Deliveries sorted and not yet taken, across consumers.
    #[must_use]
    pub(crate) fn buffered_deliveries(&self) -> usize {
        self.buffered_deliveries
    }

    /// Nobody will read this consumer (of opening `channel`) any more: what it
    /// holds and what arrives for it later goes back to the broker (unless
    /// it consumes with `no_ack`), and it is cancelled unless it already
    /// ended. Returns what to send.
    pub(crate) fn abandon_consumer(
        &mut self,
        key: &ConsumerKey,
        channel: ChannelHandle,
    ) -> Vec<Cleanup> {
        let Some(consumer) = self.consumers.get_mut(key) else {
            return Vec::new();
        };
        if consumer.channel != channel || consumer.abandoned {
            return Vec::new();
        }
        consumer.abandoned = true;
        let unread = std::mem::take(&mut consumer.queue);
        let (ended, no_ack) = (consumer.end.is_some(), consumer.no_ack);
        self.buffered_deliveries -= unread.len();
        let mut cleanup: Vec<Cleanup> = if no_ack {
            Vec::new()
        } else {
            unread
                .into_iter()
                .map(|delivery| Cleanup::Requeue {
                    channel: key.0,
                    delivery_tag: delivery.delivery_tag,
                })
                .collect()
        };
        if ended {
            self.consumers.remove(key);
        } else {
            cleanup.push(Cleanup::Cancel {
                channel: key.0,
                consumer_tag: key.1.clone(),
            });
        }
        cleanup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp_proto::codec::Content;
    use amqp_proto::codec::ContentHeader;

    fn delivery(channel: u16, tag: &str, delivery_tag: u64) -> Delivery {
        Delivery {
            channel,
            consumer_tag: tag.into(),
            delivery_tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
            content: Content {
                header: Box::new(ContentHeader::basic(0, Default::default())),
                body: bytes::Bytes::new(),
            },
        }
    }

    #[test]
    fn refusals_are_kept_for_their_confirmation_until_forgotten() {
        let mut ledger: Ledger<(), u32> = Ledger::default();
        let opening = ChannelHandle::new(1, 1);
        ledger.open_channel(opening, ());
        let failure = Failure::Connection(ConnectionError::TransportClosed("cut".into()));
        ledger.confirmed(1, 1, ConfirmOutcome::Ack, true);
        ledger.confirmed(1, 2, ConfirmOutcome::Nack, true);
        ledger.confirmed(1, 3, ConfirmOutcome::Failed(failure), true);
        ledger.confirmed(1, 4, ConfirmOutcome::Nack, false);
        assert!(ledger.take_confirm_outcome(opening, 1).is_ok());
        assert!(matches!(
            ledger.take_confirm_outcome(opening, 2),
            Err(Error::Nacked(1))
        ));
        // Read once: a second read finds nothing kept.
        assert!(ledger.take_confirm_outcome(opening, 2).is_ok());
        assert!(matches!(
            ledger.take_confirm_outcome(opening, 3),
            Err(Error::ConnectionClosed(ConnectionError::TransportClosed(_)))
        ));
        assert!(ledger.take_confirm_outcome(opening, 4).is_ok());
        // The batch wait still counts every refusal.
        let record = ledger.channel_record(1).unwrap();
        assert!(record.take_confirm_result().is_err());
        ledger.confirmed(1, 5, ConfirmOutcome::Nack, true);
        ledger.forget_refusals(Some(2));
        assert_eq!(ledger.refused_kept, 1);
        ledger.forget_refusals(None);
        assert_eq!(ledger.refused_kept, 0);
        assert!(ledger.take_confirm_outcome(opening, 5).is_ok());
        // A reopened id drops the old opening's refusals from the count
        // and answers for the old opening that it is gone.
        ledger.confirmed(1, 6, ConfirmOutcome::Nack, true);
        let reopened = ChannelHandle::new(1, 2);
        ledger.open_channel(reopened, ());
        assert_eq!(ledger.refused_kept, 0);
        assert!(matches!(
            ledger.take_confirm_outcome(opening, 6),
            Err(Error::Usage(amqp_proto::UsageError::ChannelNotOpen(1)))
        ));
        assert!(ledger.take_confirm_outcome(reopened, 6).is_ok());
    }

    #[test]
    fn taking_into_a_queue_keeps_order_and_counts() {
        let mut ledger: Ledger<(), u32> = Ledger::default();
        let opening = ChannelHandle::new(1, 1);
        ledger.open_channel(opening, ());
        let key: ConsumerKey = (1, "c".into());
        ledger.register_consumer(key.clone(), opening, false, 0);
        let tags = |queue: &VecDeque<Delivery>| -> Vec<u64> {
            queue.iter().map(|delivery| delivery.delivery_tag).collect()
        };
        let mut taken = VecDeque::new();
        for tag in 1..=2 {
            let _ = ledger.delivered(delivery(1, "c", tag));
        }
        ledger.take_deliveries_into(&key, &mut taken);
        assert_eq!(tags(&taken), [1, 2]);
        assert_eq!(ledger.buffered_deliveries(), 0);
        // Into a queue still holding some: appended after them.
        let _ = ledger.delivered(delivery(1, "c", 3));
        ledger.take_deliveries_into(&key, &mut taken);
        assert_eq!(tags(&taken), [1, 2, 3]);
        // Emptied, it trades places and the consumer's queue starts empty.
        taken.clear();
        let _ = ledger.delivered(delivery(1, "c", 4));
        ledger.take_deliveries_into(&key, &mut taken);
        ledger.take_deliveries_into(&key, &mut taken);
        assert_eq!(tags(&taken), [4]);
        assert_eq!(ledger.buffered_deliveries(), 0);
        // An unknown consumer leaves it alone.
        ledger.take_deliveries_into(&(2, "x".into()), &mut taken);
        assert_eq!(tags(&taken), [4]);
    }

    #[test]
    fn deliveries_queue_per_consumer_and_abandoning_gives_them_back() {
        let mut ledger: Ledger<(), u32> = Ledger::default();
        let opening = ChannelHandle::new(1, 1);
        ledger.open_channel(opening, ());
        let key: ConsumerKey = (1, "c".into());
        ledger.register_consumer(key.clone(), opening, false, 0);
        for tag in 1..=3 {
            match ledger.delivered(delivery(1, "c", tag)) {
                Sorted::Queued(wakes) => *wakes += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ledger.buffered_deliveries(), 3);
        assert_eq!(ledger.take_delivery(&key).map(|d| d.delivery_tag), Some(1));
        let cleanup = ledger.abandon_consumer(&key, opening);
        assert_eq!(
            cleanup,
            vec![
                Cleanup::Requeue {
                    channel: 1,
                    delivery_tag: 2
                },
                Cleanup::Requeue {
                    channel: 1,
                    delivery_tag: 3
                },
                Cleanup::Cancel {
                    channel: 1,
                    consumer_tag: "c".into()
                },
            ]
        );
        assert_eq!(ledger.buffered_deliveries(), 0);
        // Late deliveries go back too, and the cancel-ok removes it.
        assert!(matches!(
            ledger.delivered(delivery(1, "c", 4)),
            Sorted::Returned(Cleanup::Requeue {
                delivery_tag: 4,
                ..
            })
        ));
        assert!(ledger
            .consumer_ended(1, &"c".into(), ConsumerEnd::Cancelled)
            .is_none());
        assert!(ledger.consumer(&key).is_none());
    }

    #[test]
    fn the_applications_cancel_and_the_servers_end_a_consumer_with_different_errors() {
        let tag: ShortString = "ctag-1.1".into();
        let own = ConsumerEnd::Cancelled.error(&tag);
        assert!(
            matches!(&own, Error::ConsumerCancelledByApplication(t) if t == "ctag-1.1"),
            "{own:?}"
        );
        assert!(!own.to_string().contains("server"), "{own}");
        let server = ConsumerEnd::CancelledByServer.error(&tag);
        assert!(
            matches!(&server, Error::ConsumerCancelled(t) if t == "ctag-1.1"),
            "{server:?}"
        );
        assert!(server.to_string().contains("by the server"), "{server}");
    }

    #[test]
    fn batch_confirm_results_report_failures_then_nacks_then_success() {
        let mut ledger: Ledger<(), ()> = Ledger::default();
        let opening = ChannelHandle::new(1, 1);
        ledger.open_channel(opening, ());
        ledger.confirmed(1, 1, ConfirmOutcome::Nack, false);
        ledger.confirmed(1, 2, ConfirmOutcome::Ack, false);
        ledger.confirmed(1, 3, ConfirmOutcome::Nack, false);
        let record = ledger.channel(opening).unwrap();
        assert!(matches!(
            record.take_confirm_result(),
            Err(Error::Nacked(2))
        ));
        assert!(record.take_confirm_result().is_ok());
    }

    #[test]
    fn a_reopened_id_is_not_the_old_channel() {
        let mut ledger: Ledger<(), ()> = Ledger::default();
        let first = ChannelHandle::new(1, 1);
        ledger.open_channel(first, ());
        let reason = CloseReason {
            code: amqp_proto::spec::constants::ReplyCode::NOT_FOUND,
            text: "gone".into(),
            class_id: 0,
            method_id: 0,
            initiator: amqp_proto::Initiator::Server,
        };
        ledger.channel_closed(1, &reason, |()| {});
        assert!(matches!(ledger.channel(first), Err(Error::ChannelClosed(r)) if r == reason));
        let second = ChannelHandle::new(1, 2);
        ledger.open_channel(second, ());
        assert!(ledger.channel(second).is_ok());
        assert!(matches!(ledger.channel(first), Err(Error::Usage(_))));
    }
}
