//! `celery inspect` / `celery control` from Rust, through kombu's mailbox:
//!
//! ```text
//! cargo run -p amqp-io-std --features kombu --example celery_inspect -- ping
//! cargo run -p amqp-io-std --features kombu --example celery_inspect -- enable_events
//! cargo run -p amqp-io-std --features kombu --example celery_inspect -- ping --destination celery@host --timeout 2
//! ```
//!
//! Prints one line per node that answered, as celery does, and how many
//! nodes are online. `AMQP_URL` picks the broker.
use std::time::Duration;

use amqp_io_std::pidbox::{Broadcast, Mailbox};
use amqp_io_std::Connection;

fn main() {
    if let Err(error) = run() {
        eprintln!("celery_inspect: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let command = arguments
        .next()
        .ok_or("usage: celery_inspect <command> [--destination NODE]... [--timeout SECONDS]")?;
    let mut broadcast = Broadcast::new(&command);
    while let Some(flag) = arguments.next() {
        let value = arguments.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--destination" => broadcast
                .destination
                .get_or_insert_with(Vec::new)
                .push(value),
            "--timeout" => broadcast.timeout = Duration::from_secs_f64(value.parse()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::open(&url)?;
    let mut mailbox = Mailbox::celery(&connection)?;
    let replies = mailbox.broadcast(&broadcast, |_| {})?;
    for reply in &replies {
        if let Some(object) = reply.as_object() {
            for (node, answer) in object {
                println!("-> {node}: {answer}");
            }
        }
    }
    let count = replies.len();
    println!("{count} node{} online.", if count == 1 { "" } else { "s" });
    connection.close()?;
    Ok(())
}
