//! A Celery worker in Rust, on the blocking adapter: serves the tasks a
//! Python `apply_async` (or `celery_client`) sends to queue Q.
//!
//!     cargo run -p amqp-io-std --features kombu --example celery_worker -- --queue Q
//!
//! - `tasks.add(x, y)`: x + y
//! - `tasks.echo(*args, **kwargs)`: `{"args": [...], "kwargs": {...}}`
//! - `tasks.fail(msg)`: raises `ValueError(msg)`, as Celery reports it
//! - `tasks.sleep(seconds)`: sleeps, returns seconds
//!
//! Prints `{"event": "ready", "queue": "Q"}` once consuming, then serves
//! until killed. Refused messages are logged to stderr. `AMQP_URL` names
//! the broker.

mod celery_cli;

use std::time::Duration;

use amqp_io_std::celery::{Worker, WorkerSettings};
use amqp_io_std::Connection;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = celery_cli::worker_args()?;
    // Malformed and unknown tasks are logged as warnings.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let connection = Connection::open(&celery_cli::url())?;

    let mut worker = Worker::new(WorkerSettings::new(args.queue.as_str()));
    worker
        .register("tasks.add", celery_cli::add)
        .register("tasks.echo", celery_cli::echo)
        .register("tasks.fail", celery_cli::fail)
        .register("tasks.sleep", |task| {
            let (duration, seconds) = celery_cli::sleep(task)?;
            std::thread::sleep(duration);
            Ok(seconds)
        });
    let mut worker = worker.consume(&connection)?;
    println!("{}", celery_cli::ready_line(&args.queue));

    loop {
        worker.serve(Duration::from_secs(1))?;
    }
}
