//! The broker's channels: their state, opening and closing from either
//! side, and the order replies go out in.
//!
//! Replies go out in request order, except `basic.consume-ok` and
//! `basic.cancel-ok`: RabbitMQ sends those from the queue's process, so
//! with pipelined requests they may come after the replies to later
//! requests. The model defers them by a seeded number of later replies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use amqp_proto::codec::{ContentHeader, ShortString};
use amqp_proto::spec::{self, Method};
use bytes::{Bytes, BytesMut};

use super::model::Message;
use super::{is_request, Broker, Phase, RequestLog};

/// A consumer on a channel.
#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) queue: String,
    /// Its `basic.consume`'s index in the request log.
    pub(super) request: usize,
    pub(super) no_ack: bool,
    /// False while its consume-ok is held back: RabbitMQ's queue sends
    /// consume-ok before the first delivery.
    pub(super) active: bool,
}

/// A reply held back to model RabbitMQ's reordering.
#[derive(Debug)]
pub(super) struct Deferred {
    pub(super) method: Method,
    /// Later replies on the channel to let pass first.
    pub(super) countdown: u8,
    /// The consumer to activate when it goes out.
    pub(super) activate: Option<String>,
}

/// A publish whose content is being read.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) publish: spec::BasicPublish,
    pub(super) header: Option<ContentHeader>,
    pub(super) body: BytesMut,
    /// The channel is closing: the content is read and dropped.
    pub(super) ignore: bool,
}

/// A publisher confirm to send later.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) sequence: u64,
    pub(super) ack: bool,
    pub(super) at: Instant,
}

/// One open channel.
#[derive(Debug)]
pub(super) struct BrokerChannel {
    pub(super) incarnation: u32,
    /// The broker sent `channel.close` and waits for close-ok.
    pub(super) closing: bool,
    pub(super) confirm: bool,
    pub(super) publish_sequence: u64,
    pub(super) unsettled: BTreeSet<u64>,
    pub(super) held: Vec<Held>,
    pub(super) prefetch: u16,
    /// Messages handed out awaiting settlement, by delivery tag: the
    /// queue, the message, and the stream offset just past its content
    /// (once the client has read that far, it holds the message).
    pub(super) unacked: BTreeMap<u64, (String, Message, u64)>,
    pub(super) next_delivery_tag: u64,
    pub(super) consumers: BTreeMap<String, Consumer>,
    pub(super) deferred: Vec<Deferred>,
    pub(super) incoming: Option<Incoming>,
}

impl BrokerChannel {
    pub(super) fn new(incarnation: u32) -> Self {
        Self {
            incarnation,
            closing: false,
            confirm: false,
            publish_sequence: 0,
            unsettled: BTreeSet::new(),
            held: Vec::new(),
            prefetch: 0,
            unacked: BTreeMap::new(),
            next_delivery_tag: 0,
            consumers: BTreeMap::new(),
            deferred: Vec::new(),
            incoming: None,
        }
    }

    /// When the earliest held confirm is due.
    pub(super) fn next_release(&self) -> Option<Instant> {
        self.held.iter().map(|held| held.at).min()
    }

    /// True if the channel may take another delivery needing an ack.
    pub(super) fn has_credit(&self) -> bool {
        self.prefetch == 0 || self.unacked.len() < usize::from(self.prefetch)
    }
}

/// What a request handler decided.
pub(super) enum Answer {
    Reply(Method),
    /// consume-ok or cancel-ok, possibly held back; activates a consumer.
    Queued(Method, Option<String>),
    GetOk(spec::BasicGetOk, Box<Message>),
    /// A channel exception (soft error): `channel.close` with this code.
    ChannelError(u16, String),
    /// A connection exception (hard error).
    ConnectionError(u16, String),
}

/// A consume-ok for a consumer the broker named.
fn is_server_named(method: &Method) -> bool {
    matches!(method, Method::BasicConsumeOk(ok) if text(&ok.consumer_tag).starts_with("amq.ctag-"))
}

pub(super) fn text(s: &ShortString) -> String {
    s.to_string_lossy().into_owned()
}

impl Broker {
    /// A method on a channel other than 0.
    pub(super) fn channel_method(&mut self, id: u16, method: Method) {
        self.log.received.push((id, method.clone()));
        if let Method::ChannelOpen(_) = method {
            return self.open_channel(id);
        }
        let Some(channel) = self.channels.get_mut(&id) else {
            self.log.fault(format!(
                "client sent {} on channel {id}, which is not open",
                method.name()
            ));
            return;
        };
        if channel.closing {
            match method {
                Method::ChannelCloseOk(_) => {
                    self.channels.remove(&id);
                }
                // Both sides closed at once: answer, keep waiting.
                Method::ChannelClose(_) => self.write(id, &spec::ChannelCloseOk {}.into()),
                other => {
                    if let Method::BasicPublish(publish) = &other {
                        channel.incoming = Some(Incoming {
                            publish: publish.clone(),
                            header: None,
                            body: BytesMut::new(),
                            ignore: true,
                        });
                    }
                    self.log_unanswered(&other, id);
                }
            }
            return;
        }
        if channel.incoming.is_some() {
            self.log.fault(format!(
                "client sent {} on channel {id} inside a publish's content",
                method.name()
            ));
            return;
        }
        match method {
            Method::ChannelClose(_) => {
                self.release_deferred(id);
                self.drop_channel(id);
                self.write(id, &spec::ChannelCloseOk {}.into());
            }
            Method::ChannelCloseOk(_) => {
                self.log
                    .fault(format!("client sent close-ok on channel {id}, not closing"));
            }
            Method::ChannelFlowOk(_) | Method::BasicCancelOk(_) => {}
            Method::BasicPublish(publish) => {
                channel.incoming = Some(Incoming {
                    publish,
                    header: None,
                    body: BytesMut::new(),
                    ignore: false,
                });
            }
            Method::BasicAck(ack) => {
                let incarnation = channel.incarnation;
                self.log
                    .settlements
                    .push((id, incarnation, ack.delivery_tag));
                self.settle(id, ack.delivery_tag, ack.multiple, None);
            }
            Method::BasicNack(nack) => {
                let incarnation = channel.incarnation;
                self.log
                    .settlements
                    .push((id, incarnation, nack.delivery_tag));
                self.settle(id, nack.delivery_tag, nack.multiple, Some(nack.requeue));
            }
            Method::BasicReject(reject) => {
                let incarnation = channel.incarnation;
                self.log
                    .rejects
                    .push((id, incarnation, reject.delivery_tag, reject.requeue));
                self.settle(id, reject.delivery_tag, false, Some(reject.requeue));
            }
            other if is_request(&other) => {
                let index = self.log.requests.len();
                self.log.requests.push(RequestLog {
                    channel: id,
                    name: other.name(),
                    reply: None,
                    get_ok_end: None,
                });
                let answer = self.request(id, other);
                self.answer(id, index, answer);
            }
            other => self.log.fault(format!(
                "client sent {} on channel {id}, which the model does not expect",
                other.name()
            )),
        }
    }

    pub(super) fn open_channel(&mut self, id: u16) {
        let index = self.log.requests.len();
        self.log.requests.push(RequestLog {
            channel: id,
            name: "channel.open",
            reply: None,
            get_ok_end: None,
        });
        if self.channels.contains_key(&id) {
            self.log.fault(format!("client reopened channel {id}"));
            return;
        }
        if id == 0 || id > self.proposal.channel_max {
            self.log
                .fault(format!("client opened channel {id} beyond channel-max"));
            return;
        }
        let incarnation = self.incarnations.entry(id).or_insert(0);
        *incarnation += 1;
        let incarnation = *incarnation;
        self.channels.insert(id, BrokerChannel::new(incarnation));
        self.answer(
            id,
            index,
            Answer::Reply(spec::ChannelOpenOk::default().into()),
        );
    }

    pub(super) fn answer(&mut self, id: u16, index: usize, answer: Answer) {
        let record = |log: &mut super::Log, method: &Method, body: Option<Bytes>| {
            if let Some(entry) = log.requests.get_mut(index) {
                entry.reply = Some((method.clone(), body));
            }
        };
        match answer {
            Answer::Reply(method) => {
                record(&mut self.log, &method, None);
                self.reply(id, &method);
            }
            Answer::Queued(method, activate) => {
                record(&mut self.log, &method, None);
                // Consume-oks of consumers the broker named keep their
                // order among themselves: nothing in a consume-ok tells
                // two of them apart, so no client could match them if they
                // swapped, and RabbitMQ's replies from one queue type come
                // through the channel in the order of the consumes. A
                // named consumer's may overtake anything.
                let server_named = matches!(
                    &method,
                    Method::BasicConsumeOk(ok) if text(&ok.consumer_tag).starts_with("amq.ctag-")
                );
                let must_follow = self.channels.get(&id).map_or(0, |channel| {
                    channel
                        .deferred
                        .iter()
                        .filter(|deferred| server_named && is_server_named(&deferred.method))
                        .map(|deferred| deferred.countdown)
                        .max()
                        .unwrap_or(0)
                });
                if must_follow > 0 || self.rng.chance(0.4) {
                    let drawn = u8::try_from(self.rng.range(1, 3)).unwrap_or(1);
                    let countdown = drawn.max(must_follow);
                    if let Some(channel) = self.channels.get_mut(&id) {
                        channel.deferred.push(Deferred {
                            method,
                            countdown,
                            activate,
                        });
                    }
                } else {
                    self.reply(id, &method);
                    self.activate(id, activate);
                }
            }
            Answer::GetOk(get_ok, message) => {
                let tag = get_ok.delivery_tag;
                let method: Method = get_ok.into();
                record(&mut self.log, &method, Some(message.body.clone()));
                let method_end =
                    self.write_content(id, &method, &message.properties, &message.body);
                if let Some(entry) = self.log.requests.get_mut(index) {
                    entry.get_ok_end = Some(method_end);
                }
                let end = self.written_offset();
                if let Some((_, _, at)) = self
                    .channels
                    .get_mut(&id)
                    .and_then(|channel| channel.unacked.get_mut(&tag))
                {
                    *at = end;
                }
                self.tick_deferred(id);
            }
            Answer::ChannelError(code, text) => self.close_channel(id, code, &text),
            Answer::ConnectionError(code, text) => self.close_connection(code, &text),
        }
        self.dispatch();
    }

    /// Writes a reply and lets held-back replies count it.
    pub(super) fn reply(&mut self, id: u16, method: &Method) {
        self.write(id, method);
        self.tick_deferred(id);
    }

    pub(super) fn tick_deferred(&mut self, id: u16) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let mut due = Vec::new();
        let mut kept = Vec::new();
        for mut entry in std::mem::take(&mut channel.deferred) {
            entry.countdown = entry.countdown.saturating_sub(1);
            if entry.countdown == 0 {
                due.push(entry);
            } else {
                kept.push(entry);
            }
        }
        channel.deferred = kept;
        for entry in due {
            self.write(id, &entry.method);
            self.activate(id, entry.activate);
        }
    }

    /// Sends every held-back reply on the channel, in order.
    pub(super) fn release_deferred(&mut self, id: u16) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let due = std::mem::take(&mut channel.deferred);
        for entry in due {
            self.write(id, &entry.method);
            self.activate(id, entry.activate);
        }
    }

    pub(super) fn activate(&mut self, id: u16, tag: Option<String>) {
        let Some(tag) = tag else { return };
        let Some(consumer) = self
            .channels
            .get_mut(&id)
            .and_then(|channel| channel.consumers.get_mut(&tag))
        else {
            return;
        };
        consumer.active = true;
        if let Some(queue) = self.model.queues.get_mut(&consumer.queue) {
            queue.consumers.push((id, tag));
        }
        self.dispatch();
    }

    /// A channel goes away: its unacknowledged messages go back to their
    /// queues, its consumers stop.
    pub(super) fn drop_channel(&mut self, id: u16) {
        let Some(channel) = self.channels.remove(&id) else {
            return;
        };
        for (tag, consumer) in &channel.consumers {
            if let Some(queue) = self.model.queues.get_mut(&consumer.queue) {
                queue
                    .consumers
                    .retain(|(owner, existing)| !(*owner == id && existing == tag));
            }
        }
        for (queue, mut message, _) in channel.unacked.into_values().rev() {
            if let Some(queue) = self.model.queues.get_mut(&queue) {
                message.redelivered = true;
                queue.messages.push_front(message);
            }
        }
        self.dispatch();
    }

    /// The broker closes a channel (a channel exception or an operator).
    pub(super) fn close_channel(&mut self, id: u16, code: u16, reason: &str) {
        if !self
            .channels
            .get(&id)
            .is_some_and(|channel| !channel.closing)
        {
            return;
        }
        self.release_deferred(id);
        self.drop_channel(id);
        let incarnation = self.incarnations.get(&id).copied().unwrap_or(0);
        let mut closing = BrokerChannel::new(incarnation);
        closing.closing = true;
        self.channels.insert(id, closing);
        let close = spec::ChannelClose {
            reply_code: code,
            reply_text: reason.into(),
            class_id: 0,
            method_id: 0,
        };
        self.write(id, &close.into());
    }

    /// The broker closes the connection (a connection exception).
    pub(super) fn close_connection(&mut self, code: u16, reason: &str) {
        if self.phase != Phase::Open {
            return;
        }
        let close = spec::ConnectionClose {
            reply_code: code,
            reply_text: reason.into(),
            class_id: 0,
            method_id: 0,
        };
        self.write(0, &close.into());
        self.drop_all_channels();
        self.phase = Phase::Closing;
    }
}
