//! The broker's channels: opening and closing, the requests of the
//! exchange, queue, basic and confirm classes, publishes and their
//! confirms, deliveries within prefetch, and acknowledgements.
//!
//! Replies go out in request order, except `basic.consume-ok` and
//! `basic.cancel-ok`: RabbitMQ sends those from the queue's process, so
//! with pipelined requests they may come after the replies to later
//! requests. The model defers them by a seeded number of later replies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use amqp_proto::codec::{BasicProperties, ContentHeader, ShortString};
use amqp_proto::spec::{self, Method};
use bytes::{Bytes, BytesMut};

use super::model::{Exchange, Kind, Message};
use super::{is_request, wire, Broker, Phase, RequestLog};

/// A consumer on a channel.
#[derive(Debug)]
pub(super) struct Consumer {
    queue: String,
    no_ack: bool,
    /// False while its consume-ok is held back: RabbitMQ's queue sends
    /// consume-ok before the first delivery.
    active: bool,
}

/// A reply held back to model RabbitMQ's reordering.
#[derive(Debug)]
struct Deferred {
    method: Method,
    /// Later replies on the channel to let pass first.
    countdown: u8,
    /// The consumer to activate when it goes out.
    activate: Option<String>,
}

/// A publish whose content is being read.
#[derive(Debug)]
struct Incoming {
    publish: spec::BasicPublish,
    header: Option<ContentHeader>,
    body: BytesMut,
    /// The channel is closing: the content is read and dropped.
    ignore: bool,
}

/// A publisher confirm to send later.
#[derive(Debug)]
struct Held {
    sequence: u64,
    ack: bool,
    at: Instant,
}

/// One open channel.
#[derive(Debug)]
pub(super) struct BrokerChannel {
    pub(super) incarnation: u32,
    /// The broker sent `channel.close` and waits for close-ok.
    pub(super) closing: bool,
    confirm: bool,
    publish_sequence: u64,
    unsettled: BTreeSet<u64>,
    held: Vec<Held>,
    prefetch: u16,
    unacked: BTreeMap<u64, (String, Message)>,
    next_delivery_tag: u64,
    pub(super) consumers: BTreeMap<String, Consumer>,
    deferred: Vec<Deferred>,
    incoming: Option<Incoming>,
}

impl BrokerChannel {
    fn new(incarnation: u32) -> Self {
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
    fn has_credit(&self) -> bool {
        self.prefetch == 0 || self.unacked.len() < usize::from(self.prefetch)
    }
}

/// What a request handler decided.
enum Answer {
    Reply(Method),
    /// consume-ok or cancel-ok, possibly held back; activates a consumer.
    Queued(Method, Option<String>),
    GetOk(spec::BasicGetOk, Box<Message>),
    /// A channel exception (soft error): `channel.close` with this code.
    ChannelError(u16, String),
    /// A connection exception (hard error).
    ConnectionError(u16, String),
}

fn text(s: &ShortString) -> String {
    s.to_string_lossy().into_owned()
}

impl Broker {
    /// A method on a channel other than 0.
    pub(super) fn channel_method(&mut self, id: u16, method: Method) {
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
            Method::BasicAck(ack) => self.settle(id, ack.delivery_tag, ack.multiple, None),
            Method::BasicNack(nack) => {
                self.settle(id, nack.delivery_tag, nack.multiple, Some(nack.requeue));
            }
            Method::BasicReject(reject) => {
                self.settle(id, reject.delivery_tag, false, Some(reject.requeue));
            }
            other if is_request(&other) => {
                let index = self.log.requests.len();
                self.log.requests.push(RequestLog {
                    channel: id,
                    name: other.name(),
                    reply: None,
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

    fn open_channel(&mut self, id: u16) {
        let index = self.log.requests.len();
        self.log.requests.push(RequestLog {
            channel: id,
            name: "channel.open",
            reply: None,
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

    fn answer(&mut self, id: u16, index: usize, answer: Answer) {
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
                if self.rng.chance(0.4) {
                    let countdown = u8::try_from(self.rng.range(1, 3)).unwrap_or(1);
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
                let method: Method = get_ok.into();
                record(&mut self.log, &method, Some(message.body.clone()));
                self.write_content(id, &method, &message.properties, &message.body);
                self.tick_deferred(id);
            }
            Answer::ChannelError(code, text) => self.close_channel(id, code, &text),
            Answer::ConnectionError(code, text) => self.close_connection(code, &text),
        }
        self.dispatch();
    }

    /// Writes a reply and lets held-back replies count it.
    fn reply(&mut self, id: u16, method: &Method) {
        self.write(id, method);
        self.tick_deferred(id);
    }

    fn tick_deferred(&mut self, id: u16) {
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

    fn activate(&mut self, id: u16, tag: Option<String>) {
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

    fn request(&mut self, id: u16, method: Method) -> Answer {
        let not_found = |what: &str, name: &str| {
            Answer::ChannelError(404, format!("NOT_FOUND - no {what} '{name}' in vhost '/'"))
        };
        match method {
            Method::ExchangeDeclare(declare) => {
                let name = text(&declare.exchange);
                let Some(kind) = Kind::parse(&text(&declare.exchange_type)) else {
                    return Answer::ConnectionError(
                        503,
                        "COMMAND_INVALID - unknown exchange type".into(),
                    );
                };
                match self.model.exchanges.get(&name) {
                    Some(existing) if existing.kind != kind => Answer::ChannelError(
                        406,
                        format!(
                            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}'"
                        ),
                    ),
                    Some(_) => Answer::Reply(spec::ExchangeDeclareOk {}.into()),
                    None if declare.passive => not_found("exchange", &name),
                    None => {
                        self.model.exchanges.insert(
                            name,
                            Exchange {
                                kind,
                                bindings: Vec::new(),
                            },
                        );
                        Answer::Reply(spec::ExchangeDeclareOk {}.into())
                    }
                }
            }
            Method::ExchangeDelete(delete) => {
                self.model.exchanges.remove(&text(&delete.exchange));
                Answer::Reply(spec::ExchangeDeleteOk {}.into())
            }
            Method::QueueDeclare(declare) => {
                let mut name = text(&declare.queue);
                if name.is_empty() {
                    name = self.model.generate_name();
                }
                if !self.model.queues.contains_key(&name) {
                    if declare.passive {
                        return not_found("queue", &name);
                    }
                    self.model
                        .queues
                        .insert(name.clone(), super::model::Queue::default());
                }
                let queue = self.model.queues.get(&name);
                Answer::Reply(
                    spec::QueueDeclareOk {
                        queue: name.as_str().into(),
                        message_count: queue.map_or(0, |q| q.messages.len() as u32),
                        consumer_count: queue.map_or(0, |q| q.consumers.len() as u32),
                    }
                    .into(),
                )
            }
            Method::QueueBind(bind) => {
                let (queue, exchange) = (text(&bind.queue), text(&bind.exchange));
                if !self.model.queues.contains_key(&queue) {
                    return not_found("queue", &queue);
                }
                let Some(found) = self.model.exchanges.get_mut(&exchange) else {
                    return not_found("exchange", &exchange);
                };
                let binding = (queue, text(&bind.routing_key));
                if !found.bindings.contains(&binding) {
                    found.bindings.push(binding);
                }
                Answer::Reply(spec::QueueBindOk {}.into())
            }
            Method::QueueUnbind(unbind) => {
                let binding = (text(&unbind.queue), text(&unbind.routing_key));
                if let Some(found) = self.model.exchanges.get_mut(&text(&unbind.exchange)) {
                    found.bindings.retain(|existing| *existing != binding);
                }
                Answer::Reply(spec::QueueUnbindOk {}.into())
            }
            Method::QueuePurge(purge) => {
                let name = text(&purge.queue);
                match self.model.queues.get_mut(&name) {
                    Some(queue) => {
                        let count = queue.messages.len() as u32;
                        queue.messages.clear();
                        Answer::Reply(
                            spec::QueuePurgeOk {
                                message_count: count,
                            }
                            .into(),
                        )
                    }
                    None => not_found("queue", &name),
                }
            }
            Method::QueueDelete(delete) => {
                let name = text(&delete.queue);
                let count = self.delete_queue(&name);
                Answer::Reply(
                    spec::QueueDeleteOk {
                        message_count: count,
                    }
                    .into(),
                )
            }
            Method::BasicQos(qos) => {
                if let Some(channel) = self.channels.get_mut(&id) {
                    channel.prefetch = qos.prefetch_count;
                }
                Answer::Reply(spec::BasicQosOk {}.into())
            }
            Method::BasicConsume(consume) => self.consume(id, &consume),
            Method::BasicCancel(cancel) => {
                let tag = text(&cancel.consumer_tag);
                let deferred_consume = self.channels.get(&id).is_some_and(|channel| {
                    channel
                        .deferred
                        .iter()
                        .any(|entry| entry.activate.as_ref() == Some(&tag))
                });
                if deferred_consume {
                    // The queue's process answers in order: consume-ok first.
                    self.release_deferred(id);
                }
                self.remove_consumer(id, &tag);
                Answer::Queued(
                    spec::BasicCancelOk {
                        consumer_tag: cancel.consumer_tag,
                    }
                    .into(),
                    None,
                )
            }
            Method::BasicGet(get) => {
                let name = text(&get.queue);
                let Some(queue) = self.model.queues.get_mut(&name) else {
                    return not_found("queue", &name);
                };
                let Some(message) = queue.messages.pop_front() else {
                    return Answer::Reply(spec::BasicGetEmpty::default().into());
                };
                let remaining = queue.messages.len() as u32;
                let Some(channel) = self.channels.get_mut(&id) else {
                    return Answer::Reply(spec::BasicGetEmpty::default().into());
                };
                channel.next_delivery_tag += 1;
                let tag = channel.next_delivery_tag;
                if !get.no_ack {
                    channel.unacked.insert(tag, (name, message.clone()));
                }
                Answer::GetOk(
                    spec::BasicGetOk {
                        delivery_tag: tag,
                        redelivered: message.redelivered,
                        exchange: message.exchange.as_str().into(),
                        routing_key: message.routing_key.as_str().into(),
                        message_count: remaining,
                    },
                    Box::new(message),
                )
            }
            Method::ConfirmSelect(_) => {
                if let Some(channel) = self.channels.get_mut(&id) {
                    channel.confirm = true;
                }
                Answer::Reply(spec::ConfirmSelectOk {}.into())
            }
            other => Answer::ConnectionError(
                540,
                format!("NOT_IMPLEMENTED - {} is not modelled", other.name()),
            ),
        }
    }

    fn consume(&mut self, id: u16, consume: &spec::BasicConsume) -> Answer {
        let queue = text(&consume.queue);
        if !self.model.queues.contains_key(&queue) {
            return Answer::ChannelError(
                404,
                format!("NOT_FOUND - no queue '{queue}' in vhost '/'"),
            );
        }
        let mut tag = text(&consume.consumer_tag);
        if tag.is_empty() {
            self.next_consumer_tag += 1;
            tag = format!("amq.ctag-{}", self.next_consumer_tag);
        }
        let Some(channel) = self.channels.get_mut(&id) else {
            return Answer::ConnectionError(541, "INTERNAL_ERROR".into());
        };
        if channel.consumers.contains_key(&tag) {
            return Answer::ConnectionError(
                530,
                format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
            );
        }
        channel.consumers.insert(
            tag.clone(),
            Consumer {
                queue,
                no_ack: consume.no_ack,
                active: false,
            },
        );
        Answer::Queued(
            spec::BasicConsumeOk {
                consumer_tag: tag.as_str().into(),
            }
            .into(),
            Some(tag),
        )
    }

    pub(super) fn remove_consumer(&mut self, id: u16, tag: &str) -> Option<Consumer> {
        let consumer = self.channels.get_mut(&id)?.consumers.remove(tag)?;
        if let Some(queue) = self.model.queues.get_mut(&consumer.queue) {
            queue
                .consumers
                .retain(|(channel, existing)| !(*channel == id && existing == tag));
        }
        Some(consumer)
    }

    /// Deletes a queue, notifying its consumers (consumer-cancel-notify);
    /// returns how many messages went with it.
    pub(super) fn delete_queue(&mut self, name: &str) -> u32 {
        let Some(queue) = self.model.delete_queue(name) else {
            return 0;
        };
        let mut holders: Vec<(u16, String)> = Vec::new();
        for (id, channel) in &self.channels {
            for (tag, consumer) in &channel.consumers {
                if consumer.queue == name {
                    holders.push((*id, tag.clone()));
                }
            }
        }
        for (id, tag) in holders {
            self.release_deferred(id);
            self.remove_consumer(id, &tag);
            let nowait = self.rng.chance(0.5);
            let cancel = spec::BasicCancel {
                consumer_tag: tag.as_str().into(),
                nowait,
            };
            self.write(id, &cancel.into());
        }
        queue.messages.len() as u32
    }

    /// A channel goes away: its unacknowledged messages go back to their
    /// queues, its consumers stop.
    fn drop_channel(&mut self, id: u16) {
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
        for (queue, mut message) in channel.unacked.into_values().rev() {
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
        self.channels.clear();
        self.phase = Phase::Closing;
    }

    fn settle(&mut self, id: u16, tag: u64, multiple: bool, requeue: Option<bool>) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let tags: Vec<u64> = if multiple {
            channel
                .unacked
                .keys()
                .copied()
                .filter(|t| tag == 0 || *t <= tag)
                .collect()
        } else {
            channel
                .unacked
                .contains_key(&tag)
                .then_some(tag)
                .into_iter()
                .collect()
        };
        if tags.is_empty() {
            let reason = format!("PRECONDITION_FAILED - unknown delivery tag {tag}");
            self.close_channel(id, 406, &reason);
            return;
        }
        let mut back = Vec::new();
        for t in tags {
            if let Some(entry) = channel.unacked.remove(&t) {
                back.push(entry);
            }
        }
        if requeue == Some(true) {
            for (queue, mut message) in back.into_iter().rev() {
                if let Some(queue) = self.model.queues.get_mut(&queue) {
                    message.redelivered = true;
                    queue.messages.push_front(message);
                }
            }
        }
        self.dispatch();
    }

    /// A content header from the client.
    pub(super) fn content_header(&mut self, id: u16, header: ContentHeader) {
        let Some(incoming) = self
            .channels
            .get_mut(&id)
            .and_then(|channel| channel.incoming.as_mut())
        else {
            self.log.fault(format!(
                "client sent a content header on channel {id} without a publish"
            ));
            return;
        };
        if incoming.header.is_some() {
            self.log.fault(format!(
                "client sent a second content header on channel {id}"
            ));
            return;
        }
        let done = header.body_size == 0;
        incoming.header = Some(header);
        if done {
            self.complete_publish(id);
        }
    }

    /// A content body frame from the client.
    pub(super) fn content_body(&mut self, id: u16, payload: &Bytes) {
        let Some(incoming) = self
            .channels
            .get_mut(&id)
            .and_then(|channel| channel.incoming.as_mut())
        else {
            self.log.fault(format!(
                "client sent a body frame on channel {id} without a publish"
            ));
            return;
        };
        let Some(header) = &incoming.header else {
            self.log.fault(format!(
                "client sent a body frame on channel {id} before the header"
            ));
            return;
        };
        incoming.body.extend_from_slice(payload);
        let (received, expected) = (incoming.body.len() as u64, header.body_size);
        if received > expected {
            self.log.fault(format!(
                "client sent {received} body bytes on channel {id}, announced {expected}"
            ));
        } else if received == expected {
            self.complete_publish(id);
        }
    }

    fn complete_publish(&mut self, id: u16) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let Some(incoming) = channel.incoming.take() else {
            return;
        };
        if incoming.ignore {
            return;
        }
        let properties = incoming
            .header
            .map(|header| header.properties)
            .unwrap_or_default();
        let exchange = text(&incoming.publish.exchange);
        let key = text(&incoming.publish.routing_key);
        let Some(queues) = self.model.route(&exchange, &key) else {
            let reason = format!("NOT_FOUND - no exchange '{exchange}' in vhost '/'");
            self.close_channel(id, 404, &reason);
            return;
        };
        let body = incoming.body.freeze();
        let message = Message {
            exchange: exchange.clone(),
            routing_key: key.clone(),
            properties: properties.clone(),
            body: body.clone(),
            redelivered: false,
        };
        let sequence = channel.confirm.then(|| {
            channel.publish_sequence += 1;
            channel.unsettled.insert(channel.publish_sequence);
            channel.publish_sequence
        });
        if queues.is_empty() && incoming.publish.mandatory {
            let returned: Method = spec::BasicReturn {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: exchange.as_str().into(),
                routing_key: key.as_str().into(),
            }
            .into();
            self.write_content(id, &returned, &properties, &body);
        }
        for queue in &queues {
            if let Some(queue) = self.model.queues.get_mut(queue) {
                queue.messages.push_back(message.clone());
            }
        }
        if let Some(sequence) = sequence {
            self.decide_confirm(id, sequence);
        }
        self.dispatch();
    }

    /// Acks or nacks a publish now, or holds the confirm for a while.
    fn decide_confirm(&mut self, id: u16, sequence: u64) {
        let roll = self.rng.below(100);
        let delay = Duration::from_millis(self.rng.range(0, 2_000));
        let at = self.now + delay;
        match roll {
            0..=54 => self.send_confirm(id, sequence, true),
            55..=59 => self.send_confirm(id, sequence, false),
            _ => {
                let ack = !self.rng.chance(0.05);
                if let Some(channel) = self.channels.get_mut(&id) {
                    channel.held.push(Held { sequence, ack, at });
                }
            }
        }
    }

    /// Sends one confirm; `multiple` when it is the oldest outstanding
    /// (then it settles exactly this one), on a coin flip.
    fn send_confirm(&mut self, id: u16, sequence: u64, ack: bool) {
        let multiple_ok = self
            .channels
            .get(&id)
            .is_some_and(|channel| channel.unsettled.first() == Some(&sequence));
        let multiple = multiple_ok && self.rng.chance(0.3);
        self.write_confirm(id, sequence, multiple, ack);
        if let Some(channel) = self.channels.get_mut(&id) {
            channel.unsettled.remove(&sequence);
        }
    }

    fn write_confirm(&mut self, id: u16, sequence: u64, multiple: bool, ack: bool) {
        let incarnation = self
            .channels
            .get(&id)
            .map_or(0, |channel| channel.incarnation);
        let method: Method = if ack {
            spec::BasicAck {
                delivery_tag: sequence,
                multiple,
            }
            .into()
        } else {
            spec::BasicNack {
                delivery_tag: sequence,
                multiple,
                requeue: false,
            }
            .into()
        };
        self.write(id, &method);
        self.log.confirms.insert((id, incarnation, sequence), ack);
    }

    /// Sends the held confirms that are due (all of them with `all`),
    /// as one `multiple` confirm when they are exactly the oldest
    /// outstanding ones with one outcome.
    pub(super) fn release_confirms(&mut self, all: bool) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            let now = self.now;
            let Some(channel) = self.channels.get_mut(&id) else {
                continue;
            };
            if channel.closing {
                continue;
            }
            let (mut due, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut channel.held)
                .into_iter()
                .partition(|held| all || held.at <= now);
            channel.held = kept;
            if due.is_empty() {
                continue;
            }
            due.sort_by_key(|held| held.sequence);
            let last = due.last().map_or(0, |held| held.sequence);
            let first_ack = due.first().is_some_and(|held| held.ack);
            let same = due.iter().all(|held| held.ack == first_ack);
            let oldest: Vec<u64> = channel.unsettled.range(..=last).copied().collect();
            let exact = oldest == due.iter().map(|held| held.sequence).collect::<Vec<_>>();
            if due.len() > 1 && same && exact && self.rng.chance(0.6) {
                let ack = first_ack;
                for held in &due {
                    if let Some(channel) = self.channels.get_mut(&id) {
                        channel.unsettled.remove(&held.sequence);
                    }
                }
                let incarnation = self.channels.get(&id).map_or(0, |c| c.incarnation);
                for held in due.iter().take(due.len() - 1) {
                    self.log
                        .confirms
                        .insert((id, incarnation, held.sequence), ack);
                }
                self.write_confirm(id, last, true, ack);
            } else {
                for held in due {
                    self.send_confirm(id, held.sequence, held.ack);
                }
            }
        }
    }

    /// Delivers ready messages to active consumers, round-robin, within
    /// each channel's prefetch.
    pub(super) fn dispatch(&mut self) {
        if self.phase != Phase::Open || self.hang_up {
            return;
        }
        let names: Vec<String> = self.model.queues.keys().cloned().collect();
        for name in names {
            while let Some((id, tag, no_ack, message)) = self.next_delivery(&name) {
                let Some(channel) = self.channels.get_mut(&id) else {
                    break;
                };
                channel.next_delivery_tag += 1;
                let delivery_tag = channel.next_delivery_tag;
                if !no_ack {
                    channel
                        .unacked
                        .insert(delivery_tag, (name.clone(), message.clone()));
                }
                let incarnation = channel.incarnation;
                self.log.deliveries.insert(
                    (id, incarnation, delivery_tag),
                    (tag.clone(), message.body.clone()),
                );
                let deliver: Method = spec::BasicDeliver {
                    consumer_tag: tag.as_str().into(),
                    delivery_tag,
                    redelivered: message.redelivered,
                    exchange: message.exchange.as_str().into(),
                    routing_key: message.routing_key.as_str().into(),
                }
                .into();
                self.write_content(id, &deliver, &message.properties, &message.body);
            }
        }
    }

    /// The consumer that takes the queue's next message, and the message.
    fn next_delivery(&mut self, name: &str) -> Option<(u16, String, bool, Message)> {
        let queue = self.model.queues.get_mut(name)?;
        if queue.messages.is_empty() || queue.consumers.is_empty() {
            return None;
        }
        let count = queue.consumers.len();
        for offset in 0..count {
            let index = (queue.next_consumer + offset) % count;
            let (id, tag) = queue.consumers.get(index)?.clone();
            let Some(channel) = self.channels.get(&id) else {
                continue;
            };
            let Some(consumer) = channel.consumers.get(&tag) else {
                continue;
            };
            if channel.closing || !consumer.active || !(consumer.no_ack || channel.has_credit()) {
                continue;
            }
            queue.next_consumer = index + 1;
            let message = queue.messages.pop_front()?;
            return Some((id, tag, consumer.no_ack, message));
        }
        None
    }

    /// Writes a content-carrying method, its header and body frames;
    /// a pending [`MethodBeforeHeader`](crate::Malformed::MethodBeforeHeader)
    /// fault goes between the method and the header.
    fn write_content(
        &mut self,
        id: u16,
        method: &Method,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        if self.hang_up || self.cut {
            return;
        }
        self.write(id, method);
        if self.interleave_next_content {
            self.interleave_next_content = false;
            self.inject_between(id);
        }
        wire::content(
            &mut self.out,
            id,
            properties,
            body,
            self.frame_max,
            &mut self.log,
        );
    }
}
