//! What the broker did, recorded for the oracle: the reply it gave each
//! request, every delivery and every publisher confirm it sent, the
//! malformed bytes it injected, and any misbehaviour of the client.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use amqp_proto::spec::Method;
use bytes::Bytes;

use crate::step::Malformed;

/// One request frame the client sent, in the order the broker read them.
/// The n-th entry answers the n-th request id the client handed out.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// Channel it came on.
    pub channel: u16,
    /// Its method name.
    pub name: &'static str,
    /// The reply the broker sent (or queued to send), with the body of a
    /// `get-ok`; `None` when it was not answered (the channel or
    /// connection was closing).
    pub reply: Option<(Method, Option<Bytes>)>,
    /// For a `get-ok`: the stream offset just past its method frame. Once
    /// the client has read that far the get is answered, its deadline no
    /// longer applies, though the content is still to come.
    pub get_ok_end: Option<u64>,
}

/// Malformed bytes the broker wrote into the server-to-client stream.
#[derive(Debug, Clone, Copy)]
pub struct Injection {
    /// Offset of the first injected byte in the stream.
    pub start: u64,
    /// Offset just past the byte that makes the input wrong: once the
    /// client has read this far, it owes the reaction.
    pub end: u64,
    /// What was injected.
    pub malformed: Malformed,
    /// The channel it concerns, if any.
    pub channel: Option<u16>,
}

/// Everything the oracle reads from the broker.
#[derive(Debug, Default)]
pub struct Log {
    /// Requests in the order received.
    pub requests: Vec<RequestLog>,
    /// (channel, incarnation, delivery tag) of every `basic.deliver`, with
    /// the consumer tag, the body and the index in `requests` of the
    /// consume that made the consumer.
    pub deliveries: BTreeMap<(u16, u32, u64), (String, Bytes, usize)>,
    /// (channel, incarnation, publish sequence) settled by the broker:
    /// true for ack, false for nack.
    pub confirms: BTreeMap<(u16, u32, u64), bool>,
    /// (channel, incarnation) of every `basic.return`, in order, with its
    /// reply code and body.
    pub returns: BTreeMap<(u16, u32), VecDeque<(u16, Bytes)>>,
    /// (channel, incarnation, consumer tag) the broker cancelled itself.
    pub cancels: BTreeSet<(u16, u32, String)>,
    /// (channel, incarnation, delivery tag, requeue) of every
    /// `basic.reject` read on an open channel, in order: the application's
    /// and those the core sends on its own.
    pub rejects: Vec<(u16, u32, u64, bool)>,
    /// Every method the client sent on a channel other than 0, in order:
    /// what a recovery declared again is judged from it.
    pub received: Vec<(u16, Method)>,
    /// (channel, incarnation, delivery tag) of every `basic.ack` and
    /// `basic.nack` read on an open channel, in order: the application's
    /// (the core sends none of its own).
    pub settlements: Vec<(u16, u32, u64)>,
    /// (channel, incarnation, delivery tag) of each ack, nack or reject
    /// naming a tag the channel does not hold (RabbitMQ closes the channel,
    /// 406): the application only settles what it was given, and a
    /// recovered connection drops settlements of the old one's tags.
    pub unknown_tags: Vec<(u16, u32, u64)>,
    /// Injections in stream order.
    pub injections: Vec<Injection>,
    /// Reply codes of the client's `connection.close`s, in order.
    pub client_closes: Vec<u16>,
    /// The first protocol rule the client broke since the oracle last
    /// looked, as the broker saw it.
    pub client_fault: Option<String>,
}

impl Log {
    /// Records a fault of the client (the first until the oracle looks;
    /// the later ones usually follow from it).
    pub(crate) fn fault(&mut self, what: String) {
        if self.client_fault.is_none() {
            self.client_fault = Some(what);
        }
    }
}
