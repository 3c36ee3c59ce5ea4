//! Publisher-confirm bookkeeping for one channel: which publishes await a
//! `basic.ack`/`basic.nack`, and settling them exactly once.

use std::collections::VecDeque;

/// Sequence numbers start at 1 with the first publish after
/// `confirm.select`, as the broker counts them (RabbitMQ's confirms guide).
#[derive(Debug)]
pub(crate) struct Confirms {
    /// Added to the broker's numbers: a channel recovered after a
    /// connection failure continues the old channel's numbering.
    offset: u64,
    next_sequence: u64,
    /// Unsettled sequence numbers, ascending.
    outstanding: VecDeque<u64>,
    /// Whether the broker acked any publish of this channel.
    acked: bool,
}

/// The server settled a publish that was never made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnknownTag;

impl Confirms {
    /// Numbering starts after `offset` (0 on a fresh channel).
    pub(crate) fn new(offset: u64) -> Self {
        Self {
            offset,
            next_sequence: offset + 1,
            outstanding: VecDeque::new(),
            acked: false,
        }
    }

    /// True once the broker acked a publish of this channel.
    pub(crate) fn has_acked(&self) -> bool {
        self.acked
    }

    /// The broker acked a publish.
    pub(crate) fn mark_acked(&mut self) {
        self.acked = true;
    }

    /// Records a publish; returns its sequence number.
    pub(crate) fn publish(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.outstanding.push_back(sequence);
        sequence
    }

    /// The last sequence number given out (the offset before any).
    pub(crate) fn last_sequence(&self) -> u64 {
        self.next_sequence - 1
    }

    /// Publishes not yet settled.
    pub(crate) fn unconfirmed(&self) -> usize {
        self.outstanding.len()
    }

    /// True while `sequence` awaits its `basic.ack`/`basic.nack`.
    pub(crate) fn is_outstanding(&self, sequence: u64) -> bool {
        // The ends answer the common questions (awaiting the oldest, or one
        // already settled) without a search: 180 instructions per publish
        // in a window of 1,000 awaited one by one.
        match (self.outstanding.front(), self.outstanding.back()) {
            (Some(&oldest), Some(&newest)) if (oldest..=newest).contains(&sequence) => {
                sequence == oldest
                    || sequence == newest
                    || self.outstanding.binary_search(&sequence).is_ok()
            }
            _ => false,
        }
    }

    /// Settles the broker's `tag`, or with `multiple` every publish up to
    /// and including it (tag 0 with `multiple` means all), calling
    /// `settled` for each in order. A tag beyond the last publish is the
    /// server's error; a tag already settled settles nothing again.
    pub(crate) fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        mut settled: impl FnMut(u64),
    ) -> Result<(), UnknownTag> {
        let tag = match tag {
            0 => 0,
            tag => tag.checked_add(self.offset).ok_or(UnknownTag)?,
        };
        if tag >= self.next_sequence {
            return Err(UnknownTag);
        }
        if multiple {
            let up_to = if tag == 0 { u64::MAX } else { tag };
            while let Some(&sequence) = self.outstanding.front() {
                if sequence > up_to {
                    break;
                }
                self.outstanding.pop_front();
                settled(sequence);
            }
        } else if let Ok(index) = self.outstanding.binary_search(&tag) {
            self.outstanding.remove(index);
            settled(tag);
        }
        Ok(())
    }

    /// Settles every outstanding publish (the channel closed).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = u64> + '_ {
        self.outstanding.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(confirms: &mut Confirms, tag: u64, multiple: bool) -> Result<Vec<u64>, UnknownTag> {
        let mut settled = Vec::new();
        confirms.settle(tag, multiple, |sequence| settled.push(sequence))?;
        Ok(settled)
    }

    #[test]
    fn multiple_settles_everything_up_to_the_tag_once() {
        let mut confirms = Confirms::new(0);
        for expected in 1..=5 {
            assert_eq!(confirms.publish(), expected);
        }
        assert_eq!(settle(&mut confirms, 2, false), Ok(vec![2]));
        assert!(confirms.is_outstanding(1) && !confirms.is_outstanding(2));
        assert!(!confirms.is_outstanding(6));
        assert_eq!(settle(&mut confirms, 4, true), Ok(vec![1, 3, 4]));
        assert_eq!(settle(&mut confirms, 4, true), Ok(vec![]));
        assert_eq!(settle(&mut confirms, 3, false), Ok(vec![]));
        assert_eq!(confirms.unconfirmed(), 1);
        assert_eq!(settle(&mut confirms, 6, false), Err(UnknownTag));
        assert_eq!(settle(&mut confirms, 0, true), Ok(vec![5]));
        assert_eq!(confirms.drain().count(), 0);
    }

    #[test]
    fn a_recovered_channel_continues_the_numbering() {
        let mut confirms = Confirms::new(41);
        assert_eq!(confirms.last_sequence(), 41);
        assert_eq!(confirms.publish(), 42);
        assert_eq!(confirms.publish(), 43);
        // The broker counts from 1 on the new channel.
        assert_eq!(settle(&mut confirms, 1, false), Ok(vec![42]));
        assert_eq!(settle(&mut confirms, 3, false), Err(UnknownTag));
        assert_eq!(settle(&mut confirms, 2, true), Ok(vec![43]));
    }

    #[test]
    fn outstanding_is_answered_the_same_at_the_ends_and_between() {
        let mut confirms = Confirms::new(0);
        for _ in 1..=10 {
            confirms.publish();
        }
        for tag in [1, 3, 5, 10] {
            assert_eq!(settle(&mut confirms, tag, false), Ok(vec![tag]));
        }
        for sequence in 0..=12 {
            let expected = [2, 4, 6, 7, 8, 9].contains(&sequence);
            assert_eq!(confirms.is_outstanding(sequence), expected, "{sequence}");
        }
    }
}
