//! The record of what a connection declared, kept so that a new connection
//! can declare it again: exchanges, queues (server-named ones included),
//! bindings, and per channel its mode, qos and consumers.
//!
//! Entries are recorded when the server confirms them (the `-ok` reply, or
//! at once for `nowait`), and forgotten when the application deletes,
//! unbinds or cancels them, or the server cancels a consumer.

use crate::codec::ShortString;
use crate::spec::{
    BasicConsume, BasicQos, ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeUnbind, Method,
    QueueBind, QueueDeclare, QueueDelete, QueueUnbind,
};

/// A queue this connection declared.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedQueue {
    /// The declaration as sent (its `queue` is empty for a server-named one).
    pub declare: QueueDeclare,
    /// The queue's name: the one the server gave, for a server-named queue.
    pub name: ShortString,
}

impl RecordedQueue {
    /// True if the server chose the name (the declaration named none): a
    /// new connection gets a new name.
    #[must_use]
    pub fn is_server_named(&self) -> bool {
        self.declare.queue.is_empty()
    }
}

/// A binding this connection made.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// A queue bound to an exchange.
    Queue(QueueBind),
    /// An exchange bound to an exchange (RabbitMQ's extension).
    Exchange(ExchangeBind),
}

/// What a channel of this connection was set up with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordedChannel {
    /// The channel id; a recovered channel gets the same one.
    pub id: u16,
    /// The opening's epoch (see [`ChannelHandle`](crate::ChannelHandle));
    /// a recovered channel keeps it, so handles stay valid.
    pub epoch: u64,
    /// `confirm.select` was sent.
    pub confirms: bool,
    /// `tx.select` was sent.
    pub transactional: bool,
    /// The last `basic.qos` with `global` false, then with it true.
    pub qos: Vec<BasicQos>,
    /// Consumers, each with the tag the server confirmed.
    pub consumers: Vec<BasicConsume>,
    /// The highest delivery tag the application was given on this channel,
    /// counting earlier connections: a recovered channel numbers its
    /// deliveries after it, so acknowledgements of deliveries from before
    /// the failure are recognised and dropped instead of acknowledging the
    /// new connection's messages.
    pub delivery_tag_offset: u64,
    /// The last publish sequence number given out on this channel: a
    /// recovered channel in confirm mode continues after it.
    pub publish_sequence_offset: u64,
}

/// Everything automatic recovery declares again on a new connection: see
/// [`Connection::topology`](crate::Connection::topology) and
/// [`Connection::recover`](crate::Connection::recover).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topology {
    exchanges: Vec<ExchangeDeclare>,
    queues: Vec<RecordedQueue>,
    bindings: Vec<Binding>,
    channels: Vec<RecordedChannel>,
    /// The highest channel epoch handed out on the recorded connections.
    last_epoch: u64,
}

impl Topology {
    /// The highest channel epoch handed out so far; a recovering
    /// connection numbers its new openings after it.
    #[must_use]
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    pub(crate) fn issued_epoch(&mut self, epoch: u64) {
        self.last_epoch = self.last_epoch.max(epoch);
    }

    /// Exchanges, in the order they were first declared.
    #[must_use]
    pub fn exchanges(&self) -> &[ExchangeDeclare] {
        &self.exchanges
    }

    /// Queues, in the order they were first declared.
    #[must_use]
    pub fn queues(&self) -> &[RecordedQueue] {
        &self.queues
    }

    /// Bindings, in the order they were made.
    #[must_use]
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Open channels, by id.
    #[must_use]
    pub fn channels(&self) -> &[RecordedChannel] {
        &self.channels
    }

    /// True when nothing is declared on the broker (channels aside).
    #[must_use]
    pub fn declares_nothing(&self) -> bool {
        self.exchanges.is_empty() && self.queues.is_empty() && self.bindings.is_empty()
    }

    pub(crate) fn channel_mut(&mut self, id: u16) -> Option<&mut RecordedChannel> {
        self.channels.iter_mut().find(|channel| channel.id == id)
    }

    pub(crate) fn channel_opened(&mut self, id: u16) {
        if self.channel_mut(id).is_none() {
            let at = self.channels.partition_point(|channel| channel.id < id);
            self.channels.insert(
                at,
                RecordedChannel {
                    id,
                    ..RecordedChannel::default()
                },
            );
        }
    }

    /// The channel closed: its settings and consumers are gone with it.
    pub(crate) fn channel_closed(&mut self, id: u16) {
        let consumers = match self.channels.iter().position(|channel| channel.id == id) {
            Some(index) => self.channels.remove(index).consumers,
            None => return,
        };
        for consumer in consumers {
            self.forget_auto_delete_queue(&consumer.queue);
        }
    }

    /// Records what `method` (sent on `channel`) did, now that the server
    /// confirmed it with `reply` (`None` for `nowait`).
    pub(crate) fn confirmed(&mut self, channel: u16, method: &Method, reply: Option<&Method>) {
        match method {
            Method::ExchangeDeclare(declare) if !declare.passive => {
                let declare = ExchangeDeclare {
                    nowait: false,
                    ..declare.clone()
                };
                match self
                    .exchanges
                    .iter_mut()
                    .find(|known| known.exchange == declare.exchange)
                {
                    Some(known) => *known = declare,
                    None => self.exchanges.push(declare),
                }
            }
            Method::ExchangeDelete(ExchangeDelete { exchange, .. }) => {
                self.exchanges.retain(|known| known.exchange != *exchange);
                self.bindings.retain(|binding| match binding {
                    Binding::Queue(bind) => bind.exchange != *exchange,
                    Binding::Exchange(bind) => {
                        bind.source != *exchange && bind.destination != *exchange
                    }
                });
            }
            Method::QueueDeclare(declare) if !declare.passive => {
                let name = match reply {
                    Some(Method::QueueDeclareOk(ok)) => ok.queue.clone(),
                    _ => declare.queue.clone(),
                };
                let queue = RecordedQueue {
                    declare: QueueDeclare {
                        nowait: false,
                        ..declare.clone()
                    },
                    name,
                };
                match self
                    .queues
                    .iter_mut()
                    .find(|known| known.name == queue.name)
                {
                    Some(known) => *known = queue,
                    None => self.queues.push(queue),
                }
            }
            Method::QueueDelete(QueueDelete { queue, .. }) => self.forget_queue(queue),
            Method::QueueBind(bind) => {
                let binding = Binding::Queue(QueueBind {
                    nowait: false,
                    ..bind.clone()
                });
                if !self.bindings.contains(&binding) {
                    self.bindings.push(binding);
                }
            }
            Method::QueueUnbind(QueueUnbind {
                queue,
                exchange,
                routing_key,
                arguments,
                ..
            }) => self.bindings.retain(|binding| {
                !matches!(binding, Binding::Queue(bind) if bind.queue == *queue
                    && bind.exchange == *exchange
                    && bind.routing_key == *routing_key
                    && bind.arguments == *arguments)
            }),
            Method::ExchangeBind(bind) => {
                let binding = Binding::Exchange(ExchangeBind {
                    nowait: false,
                    ..bind.clone()
                });
                if !self.bindings.contains(&binding) {
                    self.bindings.push(binding);
                }
            }
            Method::ExchangeUnbind(ExchangeUnbind {
                destination,
                source,
                routing_key,
                arguments,
                ..
            }) => self.bindings.retain(|binding| {
                !matches!(binding, Binding::Exchange(bind) if bind.destination == *destination
                    && bind.source == *source
                    && bind.routing_key == *routing_key
                    && bind.arguments == *arguments)
            }),
            Method::BasicQos(qos) => {
                if let Some(record) = self.channel_mut(channel) {
                    record.qos.retain(|known| known.global != qos.global);
                    record.qos.push(qos.clone());
                    record.qos.sort_by_key(|known| known.global);
                }
            }
            Method::ConfirmSelect(_) => {
                if let Some(record) = self.channel_mut(channel) {
                    record.confirms = true;
                }
            }
            Method::TxSelect(_) => {
                if let Some(record) = self.channel_mut(channel) {
                    record.transactional = true;
                }
            }
            Method::BasicConsume(consume) => {
                let tag = match reply {
                    Some(Method::BasicConsumeOk(ok)) => ok.consumer_tag.clone(),
                    _ => consume.consumer_tag.clone(),
                };
                if let Some(record) = self.channel_mut(channel) {
                    record.consumers.retain(|known| known.consumer_tag != tag);
                    record.consumers.push(BasicConsume {
                        consumer_tag: tag,
                        nowait: false,
                        ..consume.clone()
                    });
                }
            }
            Method::BasicCancel(cancel) => self.consumer_gone(channel, &cancel.consumer_tag),
            _ => {}
        }
    }

    /// True if recording `method` needs the server's reply first (it carries
    /// a name the server chose, or the declaration may still be refused).
    pub(crate) fn records(method: &Method) -> bool {
        matches!(
            method,
            Method::ExchangeDeclare(ExchangeDeclare { passive: false, .. })
                | Method::ExchangeDelete(_)
                | Method::QueueDeclare(QueueDeclare { passive: false, .. })
                | Method::QueueDelete(_)
                | Method::QueueBind(_)
                | Method::QueueUnbind(_)
                | Method::ExchangeBind(_)
                | Method::ExchangeUnbind(_)
                | Method::BasicQos(_)
                | Method::ConfirmSelect(_)
                | Method::TxSelect(_)
                | Method::BasicConsume(_)
                | Method::BasicCancel(_)
        )
    }

    /// A consumer was cancelled, by either side.
    pub(crate) fn consumer_gone(&mut self, channel: u16, tag: &ShortString) {
        let Some(record) = self.channel_mut(channel) else {
            return;
        };
        let Some(index) = record
            .consumers
            .iter()
            .position(|known| known.consumer_tag == *tag)
        else {
            return;
        };
        let consumer = record.consumers.remove(index);
        self.forget_auto_delete_queue(&consumer.queue);
    }

    /// The broker deletes an auto-delete queue when its last consumer goes;
    /// declaring it again would resurrect it.
    fn forget_auto_delete_queue(&mut self, queue: &ShortString) {
        let auto_delete = self
            .queues
            .iter()
            .any(|known| known.name == *queue && known.declare.auto_delete);
        let still_consumed = self
            .channels
            .iter()
            .flat_map(|channel| &channel.consumers)
            .any(|consumer| consumer.queue == *queue);
        if auto_delete && !still_consumed {
            self.forget_queue(queue);
        }
    }

    fn forget_queue(&mut self, queue: &ShortString) {
        self.queues.retain(|known| known.name != *queue);
        self.bindings
            .retain(|binding| !matches!(binding, Binding::Queue(bind) if bind.queue == *queue));
        for channel in &mut self.channels {
            channel
                .consumers
                .retain(|consumer| consumer.queue != *queue);
        }
    }

    /// A server-named queue got a new name on the new connection: bindings
    /// and consumers follow it.
    pub(crate) fn rename_queue(&mut self, old: &ShortString, new: &ShortString) {
        for queue in &mut self.queues {
            if queue.name == *old {
                queue.name = new.clone();
            }
        }
        for binding in &mut self.bindings {
            if let Binding::Queue(bind) = binding {
                if bind.queue == *old {
                    bind.queue = new.clone();
                }
            }
        }
        for consumer in self
            .channels
            .iter_mut()
            .flat_map(|channel| &mut channel.consumers)
        {
            if consumer.queue == *old {
                consumer.queue = new.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BasicCancel, BasicConsumeOk, QueueDeclareOk};

    fn declared(topology: &mut Topology, queue: &str, server_name: &str, auto_delete: bool) {
        let declare = QueueDeclare {
            queue: queue.into(),
            auto_delete,
            ..QueueDeclare::default()
        };
        let ok = QueueDeclareOk {
            queue: server_name.into(),
            message_count: 0,
            consumer_count: 0,
        };
        topology.confirmed(1, &declare.into(), Some(&ok.into()));
    }

    fn consumed(topology: &mut Topology, queue: &str, tag: &str) {
        let consume = BasicConsume {
            queue: queue.into(),
            ..BasicConsume::default()
        };
        let ok = BasicConsumeOk {
            consumer_tag: tag.into(),
        };
        topology.confirmed(1, &consume.into(), Some(&ok.into()));
    }

    #[test]
    fn server_named_queues_keep_the_name_the_server_gave() {
        let mut topology = Topology::default();
        declared(&mut topology, "", "amq.gen-1", false);
        let queue = topology.queues().first().cloned();
        assert_eq!(
            queue.as_ref().map(|q| q.name.clone()),
            Some("amq.gen-1".into())
        );
        assert!(queue.is_some_and(|q| q.is_server_named()));
    }

    #[test]
    fn deleting_a_queue_forgets_its_bindings_and_consumers() {
        let mut topology = Topology::default();
        topology.channel_opened(1);
        declared(&mut topology, "jobs", "jobs", false);
        let bind = QueueBind {
            queue: "jobs".into(),
            exchange: "amq.direct".into(),
            routing_key: "jobs".into(),
            ..QueueBind::default()
        };
        topology.confirmed(1, &bind.clone().into(), None);
        topology.confirmed(1, &bind.into(), None);
        consumed(&mut topology, "jobs", "c1");
        assert_eq!(
            topology.bindings().len(),
            1,
            "a repeated bind is one binding"
        );
        let delete = QueueDelete {
            queue: "jobs".into(),
            ..QueueDelete::default()
        };
        topology.confirmed(1, &delete.into(), None);
        assert!(topology.declares_nothing());
        assert!(topology.channels().iter().all(|c| c.consumers.is_empty()));
    }

    #[test]
    fn an_auto_delete_queue_goes_with_its_last_consumer() {
        let mut topology = Topology::default();
        topology.channel_opened(1);
        declared(&mut topology, "temp", "temp", true);
        consumed(&mut topology, "temp", "a");
        consumed(&mut topology, "temp", "b");
        let cancel = |tag: &str| -> Method {
            BasicCancel {
                consumer_tag: tag.into(),
                nowait: false,
            }
            .into()
        };
        topology.confirmed(1, &cancel("a"), None);
        assert_eq!(topology.queues().len(), 1, "one consumer is left");
        topology.confirmed(1, &cancel("b"), None);
        assert!(topology.queues().is_empty());
    }

    #[test]
    fn a_renamed_queue_takes_its_bindings_and_consumers_along() {
        let mut topology = Topology::default();
        topology.channel_opened(1);
        declared(&mut topology, "", "amq.gen-old", false);
        let bind = QueueBind {
            queue: "amq.gen-old".into(),
            exchange: "amq.fanout".into(),
            ..QueueBind::default()
        };
        topology.confirmed(1, &bind.into(), None);
        consumed(&mut topology, "amq.gen-old", "c");
        topology.rename_queue(&"amq.gen-old".into(), &"amq.gen-new".into());
        assert!(matches!(topology.bindings(), [Binding::Queue(b)] if b.queue == "amq.gen-new"));
        let consumer_queue = topology
            .channels()
            .first()
            .and_then(|c| c.consumers.first())
            .map(|c| c.queue.clone());
        assert_eq!(consumer_queue, Some("amq.gen-new".into()));
    }

    #[test]
    fn exchange_bindings_go_with_unbind_and_with_either_exchange() {
        let mut topology = Topology::default();
        let bind = |destination: &str, source: &str| ExchangeBind {
            destination: destination.into(),
            source: source.into(),
            routing_key: "k".into(),
            ..ExchangeBind::default()
        };
        for exchange in ["a", "b", "c"] {
            let declare = ExchangeDeclare {
                exchange: exchange.into(),
                ..ExchangeDeclare::default()
            };
            topology.confirmed(1, &declare.into(), None);
        }
        topology.confirmed(1, &bind("b", "a").into(), None);
        topology.confirmed(1, &bind("c", "b").into(), None);
        topology.confirmed(1, &bind("c", "a").into(), None);
        let unbind = ExchangeUnbind {
            destination: "c".into(),
            source: "a".into(),
            routing_key: "k".into(),
            ..ExchangeUnbind::default()
        };
        topology.confirmed(1, &unbind.into(), None);
        assert_eq!(topology.bindings().len(), 2);
        // Deleting b takes both bindings it is an end of.
        let delete = ExchangeDelete {
            exchange: "b".into(),
            ..ExchangeDelete::default()
        };
        topology.confirmed(1, &delete.into(), None);
        assert!(topology.bindings().is_empty());
        let names: Vec<_> = topology
            .exchanges()
            .iter()
            .map(|e| e.exchange.clone())
            .collect();
        assert_eq!(names, vec!["a".into(), "c".into()] as Vec<ShortString>);
    }

    #[test]
    fn a_passive_declaration_records_nothing() {
        let mut topology = Topology::default();
        let passive = QueueDeclare {
            queue: "elsewhere".into(),
            passive: true,
            ..QueueDeclare::default()
        };
        assert!(!Topology::records(&passive.clone().into()));
        topology.confirmed(1, &passive.into(), None);
        assert!(topology.declares_nothing());
    }

    #[test]
    fn qos_keeps_the_last_of_each_scope() {
        let mut topology = Topology::default();
        topology.channel_opened(1);
        for (prefetch_count, global) in [(10, false), (20, true), (30, false)] {
            let qos = BasicQos {
                prefetch_size: 0,
                prefetch_count,
                global,
            };
            topology.confirmed(1, &qos.into(), None);
        }
        let qos: Vec<_> = topology
            .channels()
            .iter()
            .flat_map(|c| c.qos.iter().map(|q| (q.prefetch_count, q.global)))
            .collect();
        assert_eq!(qos, vec![(30, false), (20, true)]);
    }
}
