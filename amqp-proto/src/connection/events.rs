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
    events: VecDeque<Event>,
    /// What the queued events hold, as [`weight`] counts it.
    bytes: usize,
}

impl EventQueue {
    pub(crate) fn push_back(&mut self, event: Event) {
        self.bytes += weight(&event);
        self.events.push_back(event);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        self.bytes -= weight(&event);
        Some(event)
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// The bytes the queued events hold.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes out the events from index `first` on.
    pub(crate) fn split_off(&mut self, first: usize) -> Vec<Event> {
        let taken: Vec<Event> = self.events.drain(first.min(self.events.len())..).collect();
        self.bytes -= taken.iter().map(weight).sum::<usize>();
        taken
    }

    /// The events from index `first` on.
    pub(crate) fn since(&self, first: usize) -> impl Iterator<Item = &Event> {
        self.events.range(first.min(self.events.len())..)
    }
}

/// Roughly what an event holds in memory: the event itself, and for a
/// message its body and decoded headers table. Computed the same way when
/// an event enters and leaves the queue, so the total is exact to itself.
fn weight(event: &Event) -> usize {
    let content = match event {
        Event::Delivery(delivery) => Some(&delivery.content),
        Event::GetOk { message, .. } => Some(&message.content),
        Event::Returned(returned) => Some(&returned.content),
        _ => None,
    };
    size_of::<Event>() + content.map_or(0, content_weight)
}

fn content_weight(content: &Content) -> usize {
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
