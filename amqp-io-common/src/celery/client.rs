//! The client side: sending tasks and matching their results.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use amqp_proto::codec::{FieldTable, FieldValue};
use amqp_proto::spec::{BasicConsume, BasicQos, QueueDeclare};
use amqp_proto::Delivery;

use super::message::{task_message, task_topology};
use super::{anon_nodename, Outgoing, ResultMessage, Signature, State, DEFAULT_QUEUE};
use crate::map::Map;
use crate::pidbox::Topology;

/// How a [`Client`] names its result queue and fills its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientSettings {
    /// The result queue's name; `None` for a fresh UUID (what Celery's
    /// `app.thread_oid` is).
    pub result_queue: Option<String>,
    /// The result queue's `x-expires` (Celery's `result_expires`, one day
    /// by default); `None` for none.
    pub result_expires: Option<Duration>,
    /// The `origin` header; `None` for [`anon_nodename`].
    pub origin: Option<String>,
    /// How many results the broker sends ahead of the client reading
    /// them (see [`Client::result_consume`]).
    pub result_prefetch: u16,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            result_queue: None,
            result_expires: Some(Duration::from_secs(86_400)),
            origin: None,
            result_prefetch: 1_000,
        }
    }
}

/// What to do to send one task, from [`Client::send`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Sent {
    /// The task id.
    pub id: String,
    /// First, the queue's topology, the first time this client sends to
    /// it.
    pub declare: Option<Topology>,
    /// Then the message.
    pub message: Outgoing,
    /// True when the task was sent with `ignore_result`: no result will
    /// come, and nothing was registered to wait for one.
    pub ignored: bool,
}

/// A task waiting for its result: what wakes the caller waiting on it
/// (`W`), and the last state a result message reported.
#[derive(Debug)]
struct Pending<W> {
    waiter: W,
    state: State,
}

/// A Celery client's bookkeeping over the `rpc://` result backend: the
/// result queue (declare it with [`result_declare`](Self::result_declare)
/// and consume it with [`result_consume`](Self::result_consume) before
/// sending), which task queues were declared, and the tasks waiting for
/// results, each with what wakes its caller (`W`: a slot, a channel's
/// sender, a waker). A result for a task nobody waits for any more is the
/// adapter's to drop.
///
/// ```
/// use std::time::SystemTime;
/// use amqp_io_common::celery::{Client, ClientSettings, Signature};
///
/// let mut client = Client::<&str>::new(ClientSettings::default());
/// let sent = client.send(&Signature::new("tasks.ping"), Some("waiter"), SystemTime::now());
/// assert!(sent.declare.is_some(), "the first send to a queue declares it");
/// assert_eq!(client.pending(), 1);
/// let again = client.send(&Signature::new("tasks.ping"), Some("other"), SystemTime::now());
/// assert!(again.declare.is_none());
/// ```
#[derive(Debug)]
pub struct Client<W> {
    result_queue: String,
    result_expires: Option<Duration>,
    origin: String,
    result_prefetch: u16,
    declared: HashSet<String>,
    pending: Map<String, Pending<W>>,
}

impl<W> Client<W> {
    /// A client with these settings.
    #[must_use]
    pub fn new(settings: ClientSettings) -> Self {
        Self {
            result_queue: settings
                .result_queue
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            result_expires: settings.result_expires,
            origin: settings.origin.unwrap_or_else(anon_nodename),
            result_prefetch: settings.result_prefetch,
            declared: HashSet::new(),
            pending: Map::default(),
        }
    }

    /// The queue results come back on (every task's `reply_to`).
    #[must_use]
    pub fn result_queue(&self) -> &str {
        &self.result_queue
    }

    /// `queue.declare` of the result queue, as Celery's `rpc://` backend
    /// declares it: durable, auto-deleted, `x-expires` as a 32-bit integer.
    #[must_use]
    pub fn result_declare(&self) -> QueueDeclare {
        let mut arguments = FieldTable::new();
        if let Some(expires) = self.result_expires {
            let millis = i32::try_from(expires.as_millis()).unwrap_or(i32::MAX);
            arguments.insert("x-expires", FieldValue::LongInt(millis));
        }
        QueueDeclare {
            queue: self.result_queue.as_str().into(),
            durable: true,
            auto_delete: true,
            arguments,
            ..Default::default()
        }
    }

    /// `basic.consume` of the result queue. Acknowledged, unlike
    /// Celery's no-ack consumer (which starts only when the first result
    /// is waited for): ours consumes from the start, so that no result
    /// waits in the broker, and with [`result_qos`](Self::result_qos) the
    /// broker holds back what the application does not read, instead of
    /// the adapter buffering results without end (and, once its buffer is
    /// full, ceasing to read the connection). The adapter acknowledges
    /// each result as it reads it. Python peers see no difference.
    #[must_use]
    pub fn result_consume(&self) -> BasicConsume {
        BasicConsume {
            queue: self.result_queue.as_str().into(),
            ..Default::default()
        }
    }

    /// `basic.qos` of the result consumer's channel, set before
    /// [`result_consume`](Self::result_consume): per consumer, so that the
    /// tasks published on the same channel are not affected.
    #[must_use]
    pub fn result_qos(&self) -> BasicQos {
        BasicQos {
            prefetch_count: self.result_prefetch,
            ..Default::default()
        }
    }

    /// Plans sending `signature` at `now`: the message (see
    /// [`task_message`]), the queue's declaration the first time, and, when
    /// a result is wanted, registers `waiter` for it under the task id.
    pub fn send(&mut self, signature: &Signature, waiter: Option<W>, now: SystemTime) -> Sent {
        let id = signature
            .options
            .task_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let queue = signature.options.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
        let declare = self
            .declared
            .insert(queue.to_owned())
            .then(|| task_topology(queue));
        let message = task_message(signature, &id, &self.result_queue, &self.origin, now);
        let ignored = signature.options.ignore_result == Some(true);
        if let (false, Some(waiter)) = (ignored, waiter) {
            self.pending.insert(
                id.clone(),
                Pending {
                    waiter,
                    state: State::Pending,
                },
            );
        }
        Sent {
            id,
            declare,
            message,
            ignored,
        }
    }

    /// Forgets that `queue` was declared (it was deleted, or the channel
    /// that declared it closed): the next send to it declares it again.
    pub fn forget_declared(&mut self, queue: &str) {
        self.declared.remove(queue);
    }

    /// Reads a delivery on the result queue. A final result (success,
    /// failure, revoked) ends the wait: the task is forgotten and its
    /// waiter returned with the result. Any other state is recorded
    /// ([`state`](Self::state)) and `None` returned, as is a result for a
    /// task nobody waits for, or a message that is no result.
    pub fn on_result(&mut self, delivery: &Delivery) -> Option<(W, ResultMessage)> {
        let result = ResultMessage::parse(delivery)?;
        if result.state.is_ready() {
            let pending = self.pending.remove(&result.task_id)?;
            return Some((pending.waiter, result));
        }
        if let Some(pending) = self.pending.get_mut(&result.task_id) {
            pending.state = result.state.clone();
        }
        None
    }

    /// The last state reported for task `id` while it waits for its final
    /// result (`PENDING` until a worker reports another).
    #[must_use]
    pub fn state(&self, id: &str) -> Option<&State> {
        self.pending.get(id).map(|pending| &pending.state)
    }

    /// The waiter of task `id`, while it waits.
    pub fn waiter_of(&mut self, id: &str) -> Option<&mut W> {
        self.pending.get_mut(id).map(|pending| &mut pending.waiter)
    }

    /// Stops waiting for task `id` (its caller gave up) and gives back its
    /// waiter; a result that comes later is dropped.
    pub fn forget(&mut self, id: &str) -> Option<W> {
        self.pending.remove(id).map(|pending| pending.waiter)
    }

    /// Forgets every waiting task (the result consumer ended), dropping
    /// their waiters.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Forgets every waiting task and gives back their waiters, to wake
    /// them with the reason (the result consumer ended).
    pub fn drain(&mut self) -> Vec<W> {
        self.pending
            .drain()
            .map(|(_, pending)| pending.waiter)
            .collect()
    }

    /// How many tasks wait for their results.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}
