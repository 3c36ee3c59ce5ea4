//! A Celery worker in Rust, on the tokio adapter: serves the tasks a
//! Python `apply_async` (or `celery_client`) sends to queue Q, several at
//! once.
//!
//!     cargo run -p amqp-io-tokio --features kombu --example celery_worker -- --queue Q [--concurrency N]
//!
//! - `tasks.add(x, y)`: x + y
//! - `tasks.echo(*args, **kwargs)`: `{"args": [...], "kwargs": {...}}`
//! - `tasks.fail(msg)`: raises `ValueError(msg)`, as Celery reports it
//! - `tasks.sleep(seconds)`: sleeps, returns seconds
//!
//! Prints `{"event": "ready", "queue": "Q"}` once consuming, then serves
//! until Ctrl-C (SIGINT): a warm shutdown, running tasks finish. Refused
//! messages are logged to stderr. `AMQP_URL` names the broker.

#[path = "../../amqp-io-std/examples/celery_cli/mod.rs"]
mod celery_cli;

use amqp_io_tokio::celery::{Worker, WorkerSettings};
use amqp_io_tokio::Connection;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = celery_cli::worker_args()?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let connection = Connection::connect(&celery_cli::url()).await?;

    let settings = WorkerSettings::new(args.queue.as_str()).concurrency(args.concurrency);
    let mut worker = Worker::new(settings);
    worker
        .register("tasks.add", |task| async move { celery_cli::add(&task) })
        .register("tasks.echo", |task| async move { celery_cli::echo(&task) })
        .register("tasks.fail", |task| async move { celery_cli::fail(&task) })
        .register("tasks.sleep", |task| async move {
            let (duration, seconds) = celery_cli::sleep(&task)?;
            tokio::time::sleep(duration).await;
            Ok(seconds)
        });
    let worker = worker.consume(&connection).await?;
    println!("{}", celery_cli::ready_line(&args.queue));

    let stats = worker.run_until(tokio::signal::ctrl_c()).await?;
    eprintln!("celery_worker: {stats:?}");
    connection.close().await?;
    Ok(())
}
