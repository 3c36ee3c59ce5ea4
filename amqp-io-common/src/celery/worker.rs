//! The worker side: every decision a Celery worker makes about a
//! delivery, as a state machine fed deliveries, outcomes and the time.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime};

use amqp_proto::spec::{BasicConsume, BasicQos};
use amqp_proto::Settlement;
use serde_json::Value;

use super::message::{parse_request, task_topology, Malformed, Request, Seconds};
use super::result::result_message;
use super::{Failure, Outgoing, DEFAULT_QUEUE};
use crate::pidbox::Topology;

/// When a task's delivery is acknowledged: Celery's `acks_late`,
/// `acks_on_failure_or_timeout` family.
///
/// Late (the default here) acknowledges after the task ran and its result
/// was published, so that a worker that dies mid-task (or a handler that
/// never returns until the process is killed) loses nothing: the broker
/// delivers the task again. Celery's own default, [`AckPolicy::early`],
/// acknowledges as the task starts: a crash loses it, but it never runs
/// twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckPolicy {
    /// Acknowledge after the result is published (Celery's `acks_late`);
    /// false: when the task starts.
    pub late: bool,
    /// With `late`: acknowledge a task that failed (Celery's default), or
    /// reject it without requeue (dead-lettering it, if the queue says).
    pub on_failure: bool,
    /// With `late`: acknowledge a task stopped by its hard time limit
    /// (Celery's default), or requeue it.
    pub on_timeout: bool,
}

impl Default for AckPolicy {
    /// Late, acknowledging failures and timeouts.
    fn default() -> Self {
        Self {
            late: true,
            on_failure: true,
            on_timeout: true,
        }
    }
}

impl AckPolicy {
    /// Celery's default: acknowledged when the task starts.
    #[must_use]
    pub fn early() -> Self {
        Self {
            late: false,
            ..Self::default()
        }
    }

    /// Acknowledged after the result is published (the default).
    #[must_use]
    pub fn late() -> Self {
        Self::default()
    }
}

/// What a worker sets per task, over its own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskSettings {
    /// How its deliveries are acknowledged; `None` for the worker's.
    pub acks: Option<AckPolicy>,
    /// Its hard time limit when the message sets none.
    pub time_limit: Option<Duration>,
    /// Its soft time limit when the message sets none.
    pub soft_time_limit: Option<Duration>,
}

/// A worker's settings (Celery's `worker_*` and `task_*` ones).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSettings {
    /// The queue it consumes (declared as Celery declares it).
    pub queue: String,
    /// How many tasks run at once (1 in the blocking adapter, which runs
    /// them in turn).
    pub concurrency: usize,
    /// The prefetch count; `None` for Celery's: 4 per task running at
    /// once (`worker_prefetch_multiplier`). Raised by one for each task
    /// held for its `eta`, as Celery does, so that held tasks do not stop
    /// the others.
    pub prefetch_count: Option<u16>,
    /// How deliveries are acknowledged.
    pub acks: AckPolicy,
    /// The hard time limit of tasks whose message and settings set none.
    pub time_limit: Option<Duration>,
    /// The soft time limit likewise.
    pub soft_time_limit: Option<Duration>,
    /// How many tasks to hold for their `eta` before the prefetch stops
    /// growing (then the broker holds the rest): bounds the memory that
    /// tasks scheduled far ahead take.
    pub max_held: usize,
}

impl WorkerSettings {
    /// Consuming `queue`, one task at a time, late acknowledgements.
    #[must_use]
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            concurrency: 1,
            prefetch_count: None,
            acks: AckPolicy::default(),
            time_limit: None,
            soft_time_limit: None,
            max_held: 10_000,
        }
    }

    /// Runs up to `concurrency` tasks at once.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Sets the prefetch count.
    #[must_use]
    pub fn prefetch_count(mut self, prefetch: u16) -> Self {
        self.prefetch_count = Some(prefetch);
        self
    }

    /// Sets how deliveries are acknowledged.
    #[must_use]
    pub fn acks(mut self, acks: AckPolicy) -> Self {
        self.acks = acks;
        self
    }

    /// The prefetch count without held tasks.
    fn base_prefetch(&self) -> u16 {
        self.prefetch_count.unwrap_or_else(|| {
            u16::try_from(self.concurrency.saturating_mul(4)).unwrap_or(u16::MAX)
        })
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self::new(DEFAULT_QUEUE)
    }
}

/// The time limit a running task is held to: the sooner of its soft and
/// hard limits.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeLimit {
    /// How long the task may run.
    pub after: Duration,
    /// True for the soft limit (`SoftTimeLimitExceeded`), false for the
    /// hard one (`TimeLimitExceeded`).
    pub soft: bool,
    seconds: Seconds,
}

/// A task to run, from [`Action::Run`]: the request, the handler
/// registered for its name, the delivery it came in, how to acknowledge
/// it and its time limit. Hand it back to [`Worker::complete`] with the
/// outcome.
#[derive(Debug)]
pub struct Job<H, D> {
    request: Request,
    handler: H,
    delivery: D,
    acks: AckPolicy,
    limit: Option<TimeLimit>,
}

impl<H, D> Job<H, D> {
    /// The task message, read.
    #[must_use]
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The handler registered for the task's name.
    #[must_use]
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The delivery it came in.
    #[must_use]
    pub fn delivery(&self) -> &D {
        &self.delivery
    }

    /// True when the delivery is to be acknowledged now, before the task
    /// runs ([`AckPolicy::early`]).
    #[must_use]
    pub fn ack_first(&self) -> bool {
        !self.acks.late
    }

    /// How long the task may run; past it, the adapter abandons the task
    /// and reports [`Outcome::TimedOut`].
    #[must_use]
    pub fn limit(&self) -> Option<&TimeLimit> {
        self.limit.as_ref()
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler returned: a value, or a failure.
    Returned(Result<Value, Failure>),
    /// The handler ran past [`Job::limit`] and was abandoned.
    TimedOut,
}

/// A delivery the worker did not run, and why: for the log (each is
/// reported once, as one [`Action::Reply`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Refused {
    /// No task message it can read: rejected without requeue.
    Malformed(Malformed),
    /// A task no handler is registered for: answered with Celery's
    /// `NotRegistered` failure and rejected without requeue, as Celery
    /// does.
    NotRegistered {
        /// The task id.
        id: String,
        /// The unknown name.
        name: String,
    },
    /// Past its `expires`: answered `REVOKED` (`TaskRevokedError('expired')`)
    /// and acknowledged, as Celery does.
    Expired {
        /// The task id.
        id: String,
        /// Its name.
        name: String,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "rejected a malformed task message: {why}"),
            Self::NotRegistered { id, name } => {
                write!(
                    f,
                    "received unregistered task {name:?} ({id}): answered NotRegistered"
                )
            }
            Self::Expired { id, name } => write!(f, "task {name:?} ({id}) expired: revoked"),
        }
    }
}

/// Logs a refused delivery once, as a warning under the `amqp::celery`
/// target (with the `tracing` feature; without it, the worker's
/// [`WorkerStats`] still count it).
pub fn log_refused(refused: &Refused) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "amqp::celery", %refused, "task message refused");
    #[cfg(not(feature = "tracing"))]
    let _ = refused;
}

/// What the adapter does next, from [`Worker::poll_action`].
#[derive(Debug)]
#[non_exhaustive]
// Each action is moved out once, right after it is made; boxing the
// reply would cost an allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Action<H, D> {
    /// Run this job: settle its delivery with `basic.ack` first when
    /// [`Job::ack_first`], call its handler within [`Job::limit`], then
    /// hand the job and its outcome to [`Worker::complete`].
    Run(Job<H, D>),
    /// Publish `reply`, if any, then settle `delivery` as `settle`, if
    /// anything (in this order: a late acknowledgement follows the
    /// result). Log `refused`, if any.
    Reply {
        /// The delivery answered.
        delivery: D,
        /// The result message to publish.
        reply: Option<Outgoing>,
        /// How to settle the delivery; `None` when it was settled before
        /// the task ran.
        settle: Option<Settlement>,
        /// Why the task did not run, if it did not.
        refused: Option<Refused>,
    },
    /// Send this `basic.qos`: the prefetch grows by one for each task held
    /// for its `eta` and shrinks as they are released.
    Qos(BasicQos),
}

/// What a worker did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Deliveries received.
    pub received: u64,
    /// Tasks that returned a value.
    pub succeeded: u64,
    /// Tasks that returned a failure.
    pub failed: u64,
    /// Tasks abandoned at their time limit.
    pub timed_out: u64,
    /// Tasks revoked for having expired.
    pub expired: u64,
    /// Tasks no handler is registered for.
    pub not_registered: u64,
    /// Deliveries that were no task message.
    pub malformed: u64,
}

/// A job held for its `eta`, ordered soonest first.
#[derive(Debug)]
struct Held<H, D> {
    eta: SystemTime,
    order: u64,
    job: Job<H, D>,
}

impl<H, D> PartialEq for Held<H, D> {
    fn eq(&self, other: &Self) -> bool {
        (self.eta, self.order) == (other.eta, other.order)
    }
}

impl<H, D> Eq for Held<H, D> {}

impl<H, D> PartialOrd for Held<H, D> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<H, D> Ord for Held<H, D> {
    /// Reversed, so that the max-heap gives the soonest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.eta, other.order).cmp(&(self.eta, self.order))
    }
}

/// A Celery worker's decisions, IO-free, over the handlers (`H`) an
/// adapter registers and the deliveries (`D`, anything that borrows as an
/// [`amqp_proto::Delivery`]: the adapter's own, which settles itself) it
/// feeds in.
///
/// An adapter declares [`topology`](Self::topology), sets
/// [`qos`](Self::qos), consumes [`consume`](Self::consume); then feeds
/// each delivery to [`handle_delivery`](Self::handle_delivery), calls
/// [`handle_timeout`](Self::handle_timeout) when the time
/// [`poll_timeout`](Self::poll_timeout) gives comes, and after each of
/// these (and after [`complete`](Self::complete)) carries out every
/// [`poll_action`](Self::poll_action) until it gives `None`.
///
/// ```
/// use std::time::SystemTime;
/// use amqp_io_common::celery::{task_message, Action, Outcome, Signature, Worker, WorkerSettings};
/// use amqp_proto::codec::{Content, ContentHeader};
/// use serde_json::json;
///
/// type Handler = fn(&amqp_io_common::celery::Request) -> serde_json::Value;
/// let mut worker = Worker::<Handler, amqp_proto::Delivery>::new(WorkerSettings::new("celery"));
/// worker.register("tasks.add", |request| json!(request.args.len()), Default::default());
///
/// // What a client sends, as the broker delivers it.
/// let now = SystemTime::now();
/// let message = task_message(&Signature::new("tasks.add"), "id-1", "results", "me", now);
/// let delivery = amqp_proto::Delivery {
///     channel: 1,
///     consumer_tag: "worker".into(),
///     delivery_tag: 1,
///     redelivered: false,
///     exchange: "".into(),
///     routing_key: "celery".into(),
///     content: Content {
///         header: Box::new(ContentHeader::basic(message.body.len() as u64, message.properties)),
///         body: message.body.into(),
///     },
/// };
/// worker.handle_delivery(delivery, now);
/// let Some(Action::Run(job)) = worker.poll_action() else { panic!("a task to run") };
/// let value = (job.handler())(job.request());
/// worker.complete(job, Outcome::Returned(Ok(value)), now);
/// let Some(Action::Reply { reply: Some(reply), settle: Some(_), .. }) = worker.poll_action() else {
///     panic!("the result, then the acknowledgement")
/// };
/// assert_eq!(reply.publish.routing_key, "results");
/// ```
#[derive(Debug)]
pub struct Worker<H, D> {
    settings: WorkerSettings,
    tasks: HashMap<String, (H, TaskSettings)>,
    held: BinaryHeap<Held<H, D>>,
    held_order: u64,
    ready: VecDeque<Job<H, D>>,
    actions: VecDeque<Action<H, D>>,
    running: usize,
    prefetch_asked: u16,
    stats: WorkerStats,
}

impl<H, D> Worker<H, D> {
    /// A worker with these settings and no tasks.
    #[must_use]
    pub fn new(settings: WorkerSettings) -> Self {
        let prefetch_asked = settings.base_prefetch();
        Self {
            settings,
            tasks: HashMap::new(),
            held: BinaryHeap::new(),
            held_order: 0,
            ready: VecDeque::new(),
            actions: VecDeque::new(),
            running: 0,
            prefetch_asked,
            stats: WorkerStats::default(),
        }
    }

    /// Its settings.
    #[must_use]
    pub fn settings(&self) -> &WorkerSettings {
        &self.settings
    }

    /// Registers `handler` for the task `name` (replacing any before).
    pub fn register(&mut self, name: &str, handler: H, settings: TaskSettings) {
        self.tasks.insert(name.to_owned(), (handler, settings));
    }

    /// The names of the tasks registered.
    pub fn registered(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// What to declare before consuming: the queue as Celery declares it.
    #[must_use]
    pub fn topology(&self) -> Topology {
        task_topology(&self.settings.queue)
    }

    /// The prefetch to set before consuming. Global, as Celery sets it on
    /// RabbitMQ (whose global prefetch is per channel; the worker's channel
    /// has this one consumer).
    #[must_use]
    pub fn qos(&self) -> BasicQos {
        BasicQos {
            prefetch_count: self.settings.base_prefetch(),
            global: true,
            ..Default::default()
        }
    }

    /// `basic.consume` of the queue, acknowledged.
    #[must_use]
    pub fn consume(&self) -> BasicConsume {
        BasicConsume {
            queue: self.settings.queue.as_str().into(),
            ..Default::default()
        }
    }

    /// What it did so far.
    #[must_use]
    pub fn stats(&self) -> WorkerStats {
        self.stats
    }

    /// Tasks running (handed out by [`Action::Run`], not completed yet).
    #[must_use]
    pub fn running(&self) -> usize {
        self.running
    }

    /// Tasks held for their `eta`.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is running, held, waiting to run or to be done.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.running == 0
            && self.held.is_empty()
            && self.ready.is_empty()
            && self.actions.is_empty()
    }

    /// When the next held task is due; call
    /// [`handle_timeout`](Self::handle_timeout) then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.held.peek().map(|held| held.eta)
    }

    /// The next thing to do, until `None`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action<H, D>> {
        self.actions.pop_front()
    }

    /// Gives up the tasks not started yet (held for their `eta`, or
    /// waiting for a slot), for the adapter to requeue (`basic.reject`
    /// with requeue) as it stops: another worker runs them. Running tasks
    /// still complete.
    pub fn shutdown(&mut self) -> Vec<D> {
        let held = std::mem::take(&mut self.held)
            .into_iter()
            .map(|held| held.job.delivery);
        let ready = self.ready.drain(..).map(|job| job.delivery);
        held.chain(ready).collect()
    }

    /// Releases the held tasks whose `eta` is past, to run in turn.
    pub fn handle_timeout(&mut self, now: SystemTime) {
        while self.held.peek().is_some_and(|held| held.eta <= now) {
            if let Some(held) = self.held.pop() {
                self.ready.push_back(held.job);
            }
        }
        self.ask_prefetch();
        self.start_ready(now);
    }

    /// Takes a finished job back with its outcome: queues the result and
    /// the acknowledgement its policy says (an [`Action::Reply`]), and the
    /// next task to run, if one waits for the slot.
    pub fn complete(&mut self, job: Job<H, D>, outcome: Outcome, now: SystemTime) {
        self.running = self.running.saturating_sub(1);
        let Job {
            request,
            delivery,
            acks,
            limit,
            ..
        } = job;
        let (result, settle) = match outcome {
            Outcome::Returned(Ok(value)) => {
                self.stats.succeeded += 1;
                (Ok(value), Settlement::Ack { multiple: false })
            }
            Outcome::Returned(Err(failure)) => {
                self.stats.failed += 1;
                let failure = with_traceback(failure, &request);
                (Err(failure), on_failure(acks))
            }
            Outcome::TimedOut => {
                self.stats.timed_out += 1;
                match limit {
                    Some(TimeLimit { soft: true, .. }) => {
                        // What an uncaught SoftTimeLimitExceeded is in
                        // Celery: a failure, with its traceback.
                        let failure = Failure::with_args(
                            "SoftTimeLimitExceeded",
                            "billiard.exceptions",
                            Vec::new(),
                        );
                        (Err(with_traceback(failure, &request)), on_failure(acks))
                    }
                    limit => {
                        let seconds = limit.map_or(Value::Null, |limit| limit.seconds.to_json());
                        let failure = Failure::with_args(
                            "TimeLimitExceeded",
                            "billiard.exceptions",
                            vec![seconds],
                        );
                        let settle = if acks.on_timeout {
                            Settlement::Ack { multiple: false }
                        } else {
                            Settlement::Reject { requeue: true }
                        };
                        (Err(failure), settle)
                    }
                }
            }
        };
        self.actions.push_back(Action::Reply {
            delivery,
            reply: result_message(&request, &result, now),
            settle: acks.late.then_some(settle),
            refused: None,
        });
        self.start_ready(now);
    }

    /// The prefetch wanted now: the base plus one per held task, up to
    /// `max_held`; unlimited stays unlimited.
    fn ask_prefetch(&mut self) {
        let base = self.settings.base_prefetch();
        if base == 0 {
            return;
        }
        let held = u16::try_from(self.held.len().min(self.settings.max_held)).unwrap_or(u16::MAX);
        let wanted = base.saturating_add(held);
        if wanted == self.prefetch_asked {
            return;
        }
        self.prefetch_asked = wanted;
        let qos = BasicQos {
            prefetch_count: wanted,
            global: true,
            ..Default::default()
        };
        // Only the latest prefetch matters: replace one not sent yet.
        if let Some(Action::Qos(queued)) = self.actions.back_mut() {
            *queued = qos;
        } else {
            self.actions.push_back(Action::Qos(qos));
        }
    }

    /// Hands out waiting tasks while slots are free, revoking those that
    /// expired while they waited (Celery checks when the task would start).
    fn start_ready(&mut self, now: SystemTime) {
        while self.running < self.settings.concurrency {
            let Some(job) = self.ready.pop_front() else {
                return;
            };
            if job.request.expires.is_some_and(|expires| now > expires) {
                self.revoke(job.request, job.delivery, now);
                continue;
            }
            self.running += 1;
            self.actions.push_back(Action::Run(job));
        }
    }

    fn revoke(&mut self, request: Request, delivery: D, now: SystemTime) {
        self.stats.expired += 1;
        let reply = result_message(&request, &Err(Failure::revoked("expired")), now);
        self.actions.push_back(Action::Reply {
            delivery,
            reply,
            settle: Some(Settlement::Ack { multiple: false }),
            refused: Some(Refused::Expired {
                id: request.id,
                name: request.name,
            }),
        });
    }
}

impl<H: Clone, D: Borrow<amqp_proto::Delivery>> Worker<H, D> {
    /// Reads a delivery from the queue and decides: reject it (malformed),
    /// answer it (an unknown task, or one that expired), hold it (its `eta`
    /// is ahead), or queue it to run.
    pub fn handle_delivery(&mut self, delivery: D, now: SystemTime) {
        self.stats.received += 1;
        let request = match parse_request(delivery.borrow()) {
            Ok(request) => request,
            Err(why) => {
                self.stats.malformed += 1;
                self.actions.push_back(Action::Reply {
                    delivery,
                    reply: None,
                    settle: Some(Settlement::Reject { requeue: false }),
                    refused: Some(Refused::Malformed(why)),
                });
                return;
            }
        };
        let Some((handler, task)) = self.tasks.get(&request.name) else {
            self.stats.not_registered += 1;
            let reply = result_message(&request, &Err(Failure::not_registered(&request.name)), now);
            self.actions.push_back(Action::Reply {
                delivery,
                reply,
                settle: Some(Settlement::Reject { requeue: false }),
                refused: Some(Refused::NotRegistered {
                    id: request.id,
                    name: request.name,
                }),
            });
            return;
        };
        if request.expires.is_some_and(|expires| now > expires) {
            self.revoke(request, delivery, now);
            return;
        }
        let limit = time_limit(&request, task, &self.settings);
        let job = Job {
            handler: handler.clone(),
            acks: task.acks.unwrap_or(self.settings.acks),
            limit,
            delivery,
            request,
        };
        match job.request.eta {
            Some(eta) if eta > now => {
                self.held_order += 1;
                self.held.push(Held {
                    eta,
                    order: self.held_order,
                    job,
                });
                self.ask_prefetch();
            }
            _ => {
                self.ready.push_back(job);
                self.start_ready(now);
            }
        }
    }
}

/// With late acknowledgements, how a failed task is settled.
fn on_failure(acks: AckPolicy) -> Settlement {
    if acks.on_failure {
        Settlement::Ack { multiple: false }
    } else {
        Settlement::Reject { requeue: false }
    }
}

/// The sooner of the soft and hard limits: the message's, else the
/// task's, else the worker's.
fn time_limit(
    request: &Request,
    task: &TaskSettings,
    worker: &WorkerSettings,
) -> Option<TimeLimit> {
    let pick = |message: &Option<Seconds>, task: Option<Duration>, worker: Option<Duration>| {
        message
            .clone()
            .or_else(|| task.or(worker).map(Seconds::from_duration))
    };
    let hard = pick(&request.time_limit, task.time_limit, worker.time_limit);
    let soft = pick(
        &request.soft_time_limit,
        task.soft_time_limit,
        worker.soft_time_limit,
    );
    let limit = |seconds: Seconds, soft| TimeLimit {
        after: seconds.duration(),
        soft,
        seconds,
    };
    match (hard, soft) {
        (Some(hard), Some(soft)) if soft.duration() < hard.duration() => Some(limit(soft, true)),
        (Some(hard), _) => Some(limit(hard, false)),
        (None, Some(soft)) => Some(limit(soft, true)),
        (None, None) => None,
    }
}

/// A failure with a traceback: the handler's, or one in Python's format
/// naming the Rust task, so that tools reading Celery's results find the
/// text they expect.
fn with_traceback(failure: Failure, request: &Request) -> Failure {
    if failure.traceback.is_some() {
        return failure;
    }
    let last = match failure.message().as_str() {
        "" => failure.qualified_type(),
        message => format!("{}: {message}", failure.qualified_type()),
    };
    let traceback = format!(
        "Traceback (most recent call last):\n  Rust task {:?} [{}]\n{last}\n",
        request.name, request.id
    );
    failure.traceback(traceback)
}
