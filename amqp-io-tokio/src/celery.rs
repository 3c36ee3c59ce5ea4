//! Celery tasks over the tokio adapter: a [`Client`] that sends tasks to
//! Celery workers (Python's or ours) and awaits their results, and a
//! [`Worker`] that serves the tasks Celery clients send, several at once.
//! Every decision is [`amqp_io_common::celery`]'s, in Celery 5.7's wire
//! format; this module moves the messages, runs the handlers and keeps
//! time.
//!
//! ```no_run
//! use std::time::Duration;
//! use amqp_io_tokio::celery::{Client, TaskOptions};
//!
//! # async fn demo() -> Result<(), amqp_io_tokio::celery::Error> {
//! let connection = amqp_io_tokio::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let client = Client::new(&connection).await?;
//! let result = client.send_task("tasks.add", (2, 3), (), TaskOptions::default()).await?;
//! let sum: i64 = result.get_as(Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! Serving them:
//!
//! ```no_run
//! use amqp_io_tokio::celery::{Worker, WorkerSettings};
//! use serde_json::json;
//!
//! # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
//! let mut worker = Worker::new(WorkerSettings::new("celery").concurrency(8));
//! worker.register("tasks.add", |task| async move {
//!     let (x, y): (i64, i64) = task.bind(&["x", "y"])?;
//!     Ok(json!(x + y))
//! });
//! let worker = worker.consume(&connection).await?;
//! worker.run_until(tokio::signal::ctrl_c()).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use amqp_io_common::celery::{self as state, Action, Job, Outcome};
use amqp_io_common::Error as AmqpError;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::{Channel, Connection, Consumer, Delivery};

/// A task's result slot: set once by the routing task, which then wakes
/// whoever waits; `ended` when the result consumer ended first.
#[derive(Debug, Default)]
struct Slot {
    result: OnceLock<ResultMessage>,
    ended: OnceLock<String>,
    notify: Notify,
}

#[derive(Debug, Clone, Default)]
struct Waiter(Arc<Slot>);

impl Waiter {
    fn result(&self) -> Option<ResultMessage> {
        self.0.result.get().cloned()
    }
}

/// What the clones of a [`Client`] share.
#[derive(Debug)]
struct ClientInner {
    channel: Channel,
    state: Arc<Mutex<state::Client<Waiter>>>,
    router: tokio::task::JoinHandle<()>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.router.abort();
    }
}

impl Client {
    fn started(channel: Channel, results: Consumer, state: state::Client<Waiter>) -> Self {
        let state = Arc::new(Mutex::new(state));
        let router = tokio::spawn(route_results(results, Arc::clone(&state)));
        Self {
            inner: Arc::new(ClientInner {
                channel,
                state,
                router,
            }),
        }
    }

    async fn wait_for(
        &self,
        waiter: &Waiter,
        id: &str,
        timeout: Duration,
    ) -> Result<ResultMessage, Error> {
        let slot = &waiter.0;
        let wait = async {
            loop {
                // Made before the checks, so that a result set between
                // them still wakes it.
                let notified = slot.notify.notified();
                if let Some(result) = slot.result.get() {
                    return Ok(result.clone());
                }
                if let Some(why) = slot.ended.get() {
                    return Err(Error::Amqp(ended(why)));
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    task_id: id.to_owned(),
                    timeout,
                })
            })
    }
}

fn ended(why: &str) -> AmqpError {
    AmqpError::ConnectionClosed(amqp_proto::ConnectionError::TransportClosed(why.into()))
}

/// Files each result for the task waiting for it; when the consumer ends,
/// wakes every waiting task with the reason.
async fn route_results(mut results: Consumer, state: Arc<Mutex<state::Client<Waiter>>>) {
    let why = loop {
        match results.recv().await {
            Some(Ok(delivery)) => {
                if let Err(error) = delivery.ack() {
                    break error.to_string();
                }
                let delivery = delivery.into_inner();
                let done = lock(&state).on_result(&delivery);
                if let Some((waiter, result)) = done {
                    let _ = waiter.0.result.set(result);
                    waiter.0.notify.notify_waiters();
                }
            }
            Some(Err(AmqpError::MessageRefused(_))) => {}
            Some(Err(error)) => break error.to_string(),
            None => break "the result consumer ended".to_owned(),
        }
    };
    for waiter in lock(&state).drain() {
        let _ = waiter.0.ended.set(why.clone());
        waiter.0.notify.notify_waiters();
    }
}

amqp_io_common::celery_api! {
    krate = amqp_io_tokio,
    asyncness = [async],
    awaiting = [.await],
    demo = "# async fn demo(connection: amqp_io_tokio::Connection) -> Result<(), amqp_io_tokio::celery::Error> {",
    client_demo = "# async fn demo(client: amqp_io_tokio::celery::Client) -> Result<(), amqp_io_tokio::celery::Error> {",
    suffix = ".await",
}

/// What a handler returns.
type Returned = Pin<Box<dyn Future<Output = Result<Value, Failure>> + Send>>;

/// A task handler: the request (arguments, id, retries, ...) in, a future
/// of the return value or the failure out.
type Handler = Arc<dyn Fn(Request) -> Returned + Send + Sync>;

/// A Celery worker's tasks, before it consumes: register the handlers,
/// then [`consume`](Self::consume).
///
/// Tasks run as tokio tasks, up to the settings' concurrency at once. A
/// task past its time limit (from its message, its [`TaskSettings`] or the
/// [`WorkerSettings`]) is cancelled (its future dropped at its next
/// `.await`) and reported as Celery reports it; so is a handler that
/// panicked, as Python's `RuntimeError`. A handler that blocks should run
/// its work in `tokio::task::spawn_blocking`.
///
/// ```no_run
/// use std::time::Duration;
/// use amqp_io_tokio::celery::{Worker, WorkerSettings};
/// use serde_json::json;
///
/// let mut worker = Worker::new(WorkerSettings::new("celery").concurrency(4));
/// worker.register("tasks.sleep", |task| async move {
///     let (seconds,): (f64,) = task.bind(&["seconds"])?;
///     tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
///     Ok(json!(seconds))
/// });
/// ```
pub struct Worker {
    worker: state::Worker<Handler, Delivery>,
}

impl Worker {
    /// A worker with these settings and no tasks.
    #[must_use]
    pub fn new(settings: WorkerSettings) -> Self {
        Self {
            worker: state::Worker::new(settings),
        }
    }

    /// Registers `handler` for the task `name`.
    ///
    /// ```
    /// # let mut worker = amqp_io_tokio::celery::Worker::new(Default::default());
    /// worker.register("tasks.echo", |task| async move {
    ///     Ok(serde_json::json!({"args": task.args, "kwargs": task.kwargs}))
    /// });
    /// ```
    pub fn register<F>(
        &mut self,
        name: &str,
        handler: impl Fn(Request) -> F + Send + Sync + 'static,
    ) -> &mut Self
    where
        F: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        self.register_with(name, TaskSettings::default(), handler)
    }

    /// Registers `handler` for `name` with settings of its own (how it is
    /// acknowledged, its time limits).
    ///
    /// ```
    /// use std::time::Duration;
    /// use amqp_io_tokio::celery::{AckPolicy, TaskSettings};
    /// # let mut worker = amqp_io_tokio::celery::Worker::new(Default::default());
    ///
    /// let mut settings = TaskSettings::default();
    /// settings.acks = Some(AckPolicy::early());
    /// settings.soft_time_limit = Some(Duration::from_secs(10));
    /// worker.register_with("tasks.report", settings, |_| async { Ok(serde_json::json!("done")) });
    /// ```
    pub fn register_with<F>(
        &mut self,
        name: &str,
        settings: TaskSettings,
        handler: impl Fn(Request) -> F + Send + Sync + 'static,
    ) -> &mut Self
    where
        F: Future<Output = Result<Value, Failure>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        self.worker.register(name, handler, settings);
        self
    }

    /// Declares the queue as Celery does, sets the prefetch and starts
    /// consuming on a channel of its own.
    ///
    /// ```no_run
    /// # async fn demo(connection: amqp_io_tokio::Connection) -> amqp_io_tokio::Result<()> {
    /// let worker = amqp_io_tokio::celery::Worker::new(Default::default());
    /// let worker = worker.consume(&connection).await?;
    /// println!("consuming");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The declarations' or the consume's failure.
    pub async fn consume(self, connection: &Connection) -> crate::Result<Consuming> {
        let channel = connection.channel().await?;
        let consumer = consume_tasks(&channel, &self.worker).await?;
        Ok(Consuming {
            worker: self.worker,
            channel,
            consumer,
        })
    }
}

/// A job as it comes back from its tokio task.
type Finished = (Job<Handler, Delivery>, Outcome);

impl Consuming {
    /// Serves until the consumer ends.
    ///
    /// # Errors
    ///
    /// Why it ended (see [`run_until`](Self::run_until)).
    pub async fn run(self) -> crate::Result<WorkerStats> {
        self.run_until(std::future::pending::<()>()).await
    }

    /// Serves until `shutdown` resolves, then stops as Celery's warm
    /// shutdown does: no new task starts, those running finish (their
    /// results published, their deliveries settled), the tasks held for
    /// their `eta` are requeued, the consumer is cancelled and the channel
    /// closed. A malformed message is logged once, rejected, and the
    /// worker goes on. Returns what it did.
    ///
    /// ```no_run
    /// # async fn demo(worker: amqp_io_tokio::celery::Consuming) -> amqp_io_tokio::Result<()> {
    /// let stats = worker.run_until(tokio::signal::ctrl_c()).await?;
    /// println!("{} tasks succeeded", stats.succeeded);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The consumer's end (its queue deleted, the channel or connection
    /// closed), or a publish or settlement that failed for the same
    /// reasons.
    pub async fn run_until(mut self, shutdown: impl Future) -> crate::Result<WorkerStats> {
        let mut running: JoinSet<Finished> = JoinSet::new();
        let served = self.serve(&mut running, shutdown).await;
        // Take back what never started first, so that nothing starts now;
        // let what runs finish, as Celery's warm shutdown does.
        let unstarted = self.worker.shutdown();
        while let Some(finished) = running.join_next().await {
            if let Ok((job, outcome)) = finished {
                self.worker.complete(job, outcome, SystemTime::now());
            }
        }
        let finished = self.carry_out(&mut running).await;
        for delivery in unstarted {
            delivery.reject(true)?;
        }
        served?;
        finished?;
        let stats = self.worker.stats();
        self.consumer.cancel().await?;
        self.channel.close().await?;
        Ok(stats)
    }

    async fn serve(
        &mut self,
        running: &mut JoinSet<Finished>,
        shutdown: impl Future,
    ) -> crate::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            self.carry_out(running).await?;
            let due = self.worker.poll_timeout().map(|due| {
                due.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                Some(finished) = running.join_next(), if !running.is_empty() => {
                    // A job's task only awaits its handler's, which is
                    // where a panic would be: it always comes back.
                    if let Ok((job, outcome)) = finished {
                        self.worker.complete(job, outcome, SystemTime::now());
                    }
                }
                delivery = self.consumer.recv() => match delivery {
                    Some(Ok(delivery)) => self.worker.handle_delivery(delivery, SystemTime::now()),
                    Some(Err(AmqpError::MessageRefused(_))) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Err(ended("the task consumer ended")),
                },
                () = tokio::time::sleep(due.unwrap_or(Duration::MAX)), if due.is_some() => {
                    self.worker.handle_timeout(SystemTime::now());
                }
            }
        }
    }

    /// Does everything the worker decided: starts the tasks, publishes
    /// results, settles, sets the prefetch.
    async fn carry_out(&mut self, running: &mut JoinSet<Finished>) -> crate::Result<()> {
        while let Some(action) = self.worker.poll_action() {
            match action {
                Action::Run(job) => {
                    if job.ack_first() {
                        job.delivery().ack()?;
                    }
                    running.spawn(run(job));
                }
                Action::Reply {
                    delivery,
                    reply,
                    settle,
                    refused,
                } => answer(&self.channel, &delivery, reply, settle, refused.as_ref()).await?,
                Action::Qos(qos) => self.channel.basic_qos(qos).await?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs a job's handler as a task of its own (so that a panic is caught
/// and a time limit cancels it), and gives the job back with the outcome.
/// Dropped (the worker's future was), it cancels the handler too.
async fn run(job: Job<Handler, Delivery>) -> Finished {
    let mut task = tokio::spawn((job.handler())(job.request().clone()));
    let _cancel = CancelOnDrop(task.abort_handle());
    let joined = match job.limit() {
        Some(limit) => match tokio::time::timeout(limit.after, &mut task).await {
            Ok(joined) => joined,
            // `_cancel` cancels the handler.
            Err(_) => return (job, Outcome::TimedOut),
        },
        None => task.await,
    };
    let returned = joined.unwrap_or_else(|error| match error.try_into_panic() {
        Ok(panic) => Err(Failure::panicked(&*panic)),
        Err(error) => Err(Failure::new("RuntimeError", error.to_string())),
    });
    (job, Outcome::Returned(returned))
}

/// Cancels a handler's task when dropped (a finished one is unaffected).
struct CancelOnDrop(tokio::task::AbortHandle);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
