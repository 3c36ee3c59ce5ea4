//! Sends one Celery task (to a Python worker, or to `celery_worker`) and
//! prints its outcome as one JSON line, `{"task_id", "state", "result"}`
//! (a failure's result is Celery's `{"exc_type", "exc_message",
//! "exc_module"}`), on the tokio adapter.
//!
//!     cargo run -p amqp-io-tokio --features kombu --example celery_client -- --queue Q add 2 3
//!     ... celery_client -- --queue Q echo --args '[1, "two"]' --kwargs '{"three": 3}'
//!     ... celery_client -- --queue Q fail MSG
//!     ... celery_client -- --queue Q sleep 3 --time-limit 1
//!
//! Options: `--countdown S`, `--expires S`, `--time-limit S`,
//! `--soft-time-limit S`, `--priority N`, `--timeout S` (how long to wait
//! for the result; default 30). `AMQP_URL` names the broker.

#[path = "../../amqp-io-std/examples/celery_cli/mod.rs"]
mod celery_cli;

use amqp_io_tokio::celery::{Client, Error};
use amqp_io_tokio::Connection;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (signature, timeout) = celery_cli::client_args()?;
    let connection = Connection::connect(&celery_cli::url()).await?;
    let client = Client::new(&connection).await?;
    let task = client.send(&signature).await?;
    let line = match task.wait(timeout).await {
        Ok(result) => celery_cli::outcome_line(task.id(), result.state.as_str(), Some(&result)),
        Err(Error::Timeout { .. }) => {
            celery_cli::outcome_line(task.id(), task.state().as_str(), None)
        }
        Err(error) => return Err(error.into()),
    };
    println!("{line}");
    drop(task);
    connection.close().await?;
    Ok(())
}
