//! Celery tasks over the blocking adapter: a [`Client`] that sends tasks
//! to Celery workers (Python's or ours) and waits for their results, and a
//! [`Worker`] that serves the tasks Celery clients send. Every decision is
//! [`amqp_io_common::celery`]'s, in Celery 5.7's wire format; this module
//! moves the messages, runs the handlers and keeps time.
//!
//! ```no_run
//! use std::time::Duration;
//! use amqp_io_std::celery::{Client, TaskOptions};
//! use amqp_io_std::Connection;
//!
//! let connection = Connection::open("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//! let client = Client::new(&connection)?;
//! let result = client.send_task("tasks.add", (2, 3), (), TaskOptions::default())?;
//! let sum: i64 = result.get_as(Duration::from_secs(10))?;
//! # Ok::<(), amqp_io_std::celery::Error>(())
//! ```
//!
//! Serving them:
//!
//! ```no_run
//! use std::time::Duration;
//! use amqp_io_std::celery::{Worker, WorkerSettings};
//! use serde_json::json;
//!
//! let connection = amqp_io_std::Connection::open("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//! let mut worker = Worker::new(WorkerSettings::new("celery"));
//! worker.register("tasks.add", |task| {
//!     let (x, y): (i64, i64) = task.bind(&["x", "y"])?;
//!     Ok(json!(x + y))
//! });
//! let mut worker = worker.consume(&connection)?;
//! worker.run()?;
//! # Ok::<(), amqp_io_std::Error>(())
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use amqp_io_common::celery::{self as state, Action, Job, Outcome};
use amqp_io_common::Error as AmqpError;
use serde_json::Value;

use crate::{Channel, Connection, Consumer, Delivery};

/// A task's result slot: set once, by whichever thread reads the result.
#[derive(Debug, Clone, Default)]
struct Waiter(Arc<OnceLock<ResultMessage>>);

impl Waiter {
    fn result(&self) -> Option<ResultMessage> {
        self.0.get().cloned()
    }
}

/// What the clones of a [`Client`] share.
#[derive(Debug)]
struct ClientInner {
    channel: Channel,
    results: Consumer,
    state: Mutex<state::Client<Waiter>>,
}

impl Client {
    fn started(channel: Channel, results: Consumer, state: state::Client<Waiter>) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                channel,
                results,
                state: Mutex::new(state),
            }),
        }
    }

    /// Waits for `waiter`'s result, reading the result queue meanwhile:
    /// whichever thread reads a result files it for the task it is for.
    fn wait_for(
        &self,
        waiter: &Waiter,
        id: &str,
        timeout: Duration,
    ) -> Result<ResultMessage, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(result) = waiter.result() {
                return Ok(result);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    task_id: id.to_owned(),
                    timeout,
                });
            }
            // Short slices, so that a result another thread filed for
            // this task is seen soon.
            match self
                .inner
                .results
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(delivery) => {
                    delivery.ack()?;
                    let delivery = delivery.into_inner();
                    if let Some((waiter, result)) = lock(&self.inner.state).on_result(&delivery) {
                        let _ = waiter.0.set(result);
                    }
                }
                Err(AmqpError::Timeout { .. } | AmqpError::MessageRefused(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
}

amqp_io_common::celery_api! {
    krate = amqp_io_std,
    asyncness = [],
    awaiting = [],
    demo = "# fn demo(connection: &amqp_io_std::Connection) -> Result<(), amqp_io_std::celery::Error> {",
    client_demo = "# fn demo(client: &amqp_io_std::celery::Client) -> Result<(), amqp_io_std::celery::Error> {",
    suffix = "",
}

/// A task handler: the request (arguments, id, retries, ...) in, the
/// return value or the failure out.
type Handler = Arc<dyn Fn(&Request) -> Result<Value, Failure> + Send + Sync>;

/// A Celery worker's tasks, before it consumes: register the handlers,
/// then [`consume`](Self::consume).
///
/// It runs one task at a time, on the thread that serves it; a task with
/// a time limit (from its message, its [`TaskSettings`] or the
/// [`WorkerSettings`]) runs on a thread of its own, which is abandoned
/// (left to finish, its result dropped) when the limit passes, as
/// Celery's pool replaces a process it killed.
///
/// ```no_run
/// use amqp_io_std::celery::{Failure, Worker, WorkerSettings};
/// use serde_json::json;
///
/// let mut worker = Worker::new(WorkerSettings::new("celery"));
/// worker.register("tasks.fail", |task| {
///     let (message,): (String,) = task.bind(&["msg"])?;
///     Err(Failure::value_error(message))
/// });
/// ```
pub struct Worker {
    worker: state::Worker<Handler, Delivery>,
}

impl Worker {
    /// A worker with these settings and no tasks. Its concurrency is 1:
    /// this adapter runs tasks in turn.
    #[must_use]
    pub fn new(settings: WorkerSettings) -> Self {
        let settings = settings.concurrency(1);
        Self {
            worker: state::Worker::new(settings),
        }
    }

    /// Registers `handler` for the task `name`.
    ///
    /// ```
    /// # let mut worker = amqp_io_std::celery::Worker::new(Default::default());
    /// worker.register("tasks.echo", |task| {
    ///     Ok(serde_json::json!({"args": task.args, "kwargs": task.kwargs}))
    /// });
    /// ```
    pub fn register(
        &mut self,
        name: &str,
        handler: impl Fn(&Request) -> Result<Value, Failure> + Send + Sync + 'static,
    ) -> &mut Self {
        self.register_with(name, TaskSettings::default(), handler)
    }

    /// Registers `handler` for `name` with settings of its own (how it is
    /// acknowledged, its time limits).
    ///
    /// ```
    /// use std::time::Duration;
    /// use amqp_io_std::celery::{AckPolicy, TaskSettings};
    /// # let mut worker = amqp_io_std::celery::Worker::new(Default::default());
    ///
    /// let mut settings = TaskSettings::default();
    /// settings.acks = Some(AckPolicy::early());
    /// settings.time_limit = Some(Duration::from_secs(30));
    /// worker.register_with("tasks.report", settings, |_| Ok(serde_json::json!("done")));
    /// ```
    pub fn register_with(
        &mut self,
        name: &str,
        settings: TaskSettings,
        handler: impl Fn(&Request) -> Result<Value, Failure> + Send + Sync + 'static,
    ) -> &mut Self {
        self.worker.register(name, Arc::new(handler), settings);
        self
    }

    /// Declares the queue as Celery does, sets the prefetch, starts
    /// consuming on a channel of its own, and keeps the connection's
    /// heartbeats going while a task runs
    /// ([`Connection::spawn_heartbeat_keeper`]).
    ///
    /// ```no_run
    /// # fn demo(connection: &amqp_io_std::Connection) -> amqp_io_std::Result<()> {
    /// let worker = amqp_io_std::celery::Worker::new(Default::default());
    /// let mut worker = worker.consume(connection)?;
    /// println!("consuming");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The declarations' or the consume's failure.
    pub fn consume(self, connection: &Connection) -> crate::Result<Consuming> {
        let channel = connection.channel()?;
        let consumer = consume_tasks(&channel, &self.worker)?;
        connection.spawn_heartbeat_keeper();
        Ok(Consuming {
            worker: self.worker,
            channel,
            consumer,
        })
    }
}

impl Consuming {
    /// Waits up to `timeout` for a delivery (or a held task coming due)
    /// and handles it: runs the task and publishes its result, answers or
    /// rejects what it does not run, settles the delivery. Returns
    /// whether something was handled; a malformed message counts, is
    /// logged once and rejected, and the worker goes on.
    ///
    /// ```no_run
    /// # fn demo(mut worker: amqp_io_std::celery::Consuming, stop: &std::sync::atomic::AtomicBool) -> amqp_io_std::Result<()> {
    /// use std::sync::atomic::Ordering;
    /// use std::time::Duration;
    ///
    /// while !stop.load(Ordering::Relaxed) {
    ///     worker.serve(Duration::from_millis(200))?;
    /// }
    /// worker.close()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The consumer's end (its queue deleted, the channel or connection
    /// closed), or a publish or settlement that failed for the same
    /// reasons.
    pub fn serve(&mut self, timeout: Duration) -> crate::Result<bool> {
        let now = SystemTime::now();
        let wait = match self.worker.poll_timeout() {
            Some(due) => due
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(timeout),
            None => timeout,
        };
        let handled = match self.consumer.recv_timeout(wait) {
            Ok(delivery) => {
                self.worker.handle_delivery(delivery, SystemTime::now());
                true
            }
            Err(AmqpError::Timeout { .. } | AmqpError::MessageRefused(_)) => false,
            Err(error) => return Err(error),
        };
        let due = self
            .worker
            .poll_timeout()
            .is_some_and(|due| due <= SystemTime::now());
        if due {
            self.worker.handle_timeout(SystemTime::now());
        }
        self.carry_out()?;
        Ok(handled || due)
    }

    /// Serves until the consumer ends.
    ///
    /// # Errors
    ///
    /// Why it ended (see [`serve`](Self::serve)).
    pub fn run(&mut self) -> crate::Result<()> {
        loop {
            self.serve(Duration::from_secs(1))?;
        }
    }

    /// Stops: requeues the tasks held for their `eta` (another worker
    /// runs them), cancels the consumer (unacknowledged deliveries go
    /// back to the queue) and closes the channel. Returns what it did.
    ///
    /// # Errors
    ///
    /// The channel's close failing.
    pub fn close(self) -> crate::Result<WorkerStats> {
        let Self {
            mut worker,
            channel,
            consumer,
        } = self;
        for delivery in worker.shutdown() {
            delivery.reject(true)?;
        }
        consumer.cancel()?;
        channel.close()?;
        Ok(worker.stats())
    }

    /// Does everything the worker decided, running each task as it comes.
    fn carry_out(&mut self) -> crate::Result<()> {
        while let Some(action) = self.worker.poll_action() {
            match action {
                Action::Run(job) => {
                    if job.ack_first() {
                        job.delivery().ack()?;
                    }
                    let outcome = run(&job);
                    self.worker.complete(job, outcome, SystemTime::now());
                }
                Action::Reply {
                    delivery,
                    reply,
                    settle,
                    refused,
                } => answer(&self.channel, &delivery, reply, settle, refused.as_ref())?,
                Action::Qos(qos) => self.channel.basic_qos(qos)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs a job's handler, catching a panic; within its time limit on a
/// thread of its own, abandoned when the limit passes.
fn run(job: &Job<Handler, Delivery>) -> Outcome {
    let handler = Arc::clone(job.handler());
    let Some(limit) = job.limit() else {
        let returned = catch_unwind(AssertUnwindSafe(|| handler(job.request())));
        return Outcome::Returned(returned.unwrap_or_else(|panic| Err(Failure::panicked(&*panic))));
    };
    let request = job.request().clone();
    let (done, outcome) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name(format!("celery {}", request.name))
        .spawn(move || {
            let returned = catch_unwind(AssertUnwindSafe(|| handler(&request)));
            let _ = done.send(returned.unwrap_or_else(|panic| Err(Failure::panicked(&*panic))));
        });
    if let Err(error) = spawned {
        return Outcome::Returned(Err(Failure::new(
            "RuntimeError",
            format!("cannot start the task's thread: {error}"),
        )));
    }
    match outcome.recv_timeout(limit.after) {
        Ok(returned) => Outcome::Returned(returned),
        Err(mpsc::RecvTimeoutError::Timeout) => Outcome::TimedOut,
        Err(mpsc::RecvTimeoutError::Disconnected) => Outcome::Returned(Err(Failure::new(
            "RuntimeError",
            "the task's thread ended without a result",
        ))),
    }
}
