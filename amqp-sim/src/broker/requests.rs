//! The requests of the exchange, queue, basic and confirm classes, as
//! RabbitMQ answers them (including its channel and connection exceptions).

use amqp_proto::spec::{self, Method};

use super::channel::{text, Answer, Consumer};
use super::model::{Exchange, Kind, Queue};
use super::Broker;

impl Broker {
    pub(super) fn request(&mut self, id: u16, method: Method) -> Answer {
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
                    self.model.queues.insert(name.clone(), Queue::default());
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
                    // The offset past its content is set once written.
                    channel
                        .unacked
                        .insert(tag, (name, message.clone(), u64::MAX));
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

    pub(super) fn consume(&mut self, id: u16, consume: &spec::BasicConsume) -> Answer {
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
                // `channel_method` logged the consume just before.
                request: self.log.requests.len().saturating_sub(1),
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

    /// Tells the client the broker cancelled its consumer
    /// (consumer-cancel-notify), with or without asking for cancel-ok.
    pub(super) fn notify_cancel(&mut self, id: u16, tag: &str) {
        let cancel = spec::BasicCancel {
            consumer_tag: tag.into(),
            nowait: self.rng.chance(0.5),
        };
        self.write(id, &cancel.into());
        let incarnation = self.channels.get(&id).map_or(0, |c| c.incarnation);
        self.log.cancels.insert((id, incarnation, tag.to_owned()));
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
            self.notify_cancel(id, &tag);
        }
        queue.messages.len() as u32
    }
}
