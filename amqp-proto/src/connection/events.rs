//! The events waiting for the adapter, and what they hold in memory.
//!
//! Counting events alone does not bound memory: one delivery may carry a
//! body of megabytes, and a field table decodes to many times its wire
//! size (a one-byte void entry becomes a name and a value of some fifty
//! bytes). The queue therefore also keeps the bytes its events hold, so
//! [`Connection::wants_input`](super::Connection::wants_input) can stop
//! reading on either bound.

use std::collections::VecDeque;
use std::mem::size_of;

use crate::codec::{Content, FieldTable, FieldValue, ShortString};
use crate::event::Event;

#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    /// Each event with its weight, weighed once on the way in: a message's
    /// weight reads its boxed header, which need not be read again.
    events: VecDeque<(Event, usize)>,
    /// What the queued events hold, as [`weight`] counts it.
    bytes: usize,
}

impl EventQueue {
    /// Queues an event that holds no message.
    pub(crate) fn push_back(&mut self, event: Event) {
        self.push_weighing(event, 0);
    }

    /// Queues an event holding a message that takes `content` bytes (see
    /// [`content_weight`]), weighed by the caller while the content was
    /// still in its hands: reading it again here would cost a copy of
    /// the event.
    pub(crate) fn push_weighing(&mut self, event: Event, content: usize) {
        let weight = size_of::<Event>() + content;
        self.bytes += weight;
        self.events.push_back((event, weight));
    }

    pub(crate) fn pop_front(&mut self) -> Option<Event> {
        let (event, weight) = self.events.pop_front()?;
        self.bytes -= weight;
        Some(event)
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The bytes the queued events hold.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes out the events from index `first` on, each with its weight,
    /// to be put back with [`push_weighed`](Self::push_weighed).
    pub(crate) fn split_off(&mut self, first: usize) -> Vec<(Event, usize)> {
        let start = first.min(self.events.len());
        let mut taken = Vec::with_capacity(self.events.len() - start);
        for (event, weight) in self.events.drain(start..) {
            self.bytes -= weight;
            taken.push((event, weight));
        }
        taken
    }

    /// Puts back an event [`split_off`](Self::split_off) took out, with
    /// the weight it had.
    pub(crate) fn push_weighed(&mut self, event: Event, weight: usize) {
        self.bytes += weight;
        self.events.push_back((event, weight));
    }

    /// The events from index `first` on, to change in place (an event
    /// holding no message for another holding none: weights stay).
    pub(crate) fn since_mut(&mut self, first: usize) -> impl Iterator<Item = &mut Event> {
        let start = first.min(self.events.len());
        self.events.range_mut(start..).map(|(event, _)| event)
    }

    /// The events from index `first` on.
    pub(crate) fn since(&self, first: usize) -> impl Iterator<Item = &Event> {
        self.events
            .range(first.min(self.events.len())..)
            .map(|(event, _)| event)
    }
}

/// Roughly what a message holds in memory beside its event: its header,
/// body and decoded headers table.
pub(crate) fn content_weight(content: &Content) -> usize {
    let headers = content
        .header
        .properties
        .headers
        .as_ref()
        .map_or(0, table_weight);
    size_of::<crate::codec::ContentHeader>() + content.body.len() + headers
}

/// Each entry costs its name and value slots, plus what nested tables and
/// arrays and long values hold.
fn table_weight(table: &FieldTable) -> usize {
    table
        .iter()
        .map(|(_, value)| size_of::<(ShortString, FieldValue)>() + value_weight(value))
        .sum()
}

fn value_weight(value: &FieldValue) -> usize {
    match value {
        FieldValue::Table(table) => table_weight(table),
        FieldValue::Array(array) => array
            .as_slice()
            .iter()
            .map(|value| size_of::<FieldValue>() + value_weight(value))
            .sum(),
        FieldValue::LongString(string) => string.as_bytes().len(),
        FieldValue::ByteArray(bytes) => bytes.len(),
        _ => 0,
    }
}
