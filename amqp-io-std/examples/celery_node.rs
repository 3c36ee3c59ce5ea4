//! A Rust node in celery's mailbox: `celery inspect ping` lists it beside
//! the workers. Answers `ping` and `hello`, and replies to anything else
//! as a kombu node does to a command it does not know.
//!
//! `cargo run -p amqp-io-std --features kombu --example celery_node -- rust@myhost [SECONDS]`
//! (serves for SECONDS, default 30; `AMQP_URL` picks the broker).
use std::time::{Duration, Instant};

use amqp_io_std::pidbox::{unknown_command, Node};
use amqp_io_std::Connection;
use serde_json::json;

fn main() {
    if let Err(error) = run() {
        eprintln!("celery_node: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let hostname = arguments.next().unwrap_or_else(|| "rust@localhost".into());
    let seconds: u64 = arguments.next().map_or(Ok(30), |value| value.parse())?;
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::open(&url)?;
    let mut node = Node::celery(&connection, &hostname)?;
    println!("{hostname} is listening");
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        node.serve(Duration::from_millis(200), |command| {
            println!("{hostname}: {} {:?}", command.method, command.arguments);
            match command.method.as_str() {
                "ping" => json!({"ok": "pong"}),
                "hello" => json!({"ok": format!("hello from {hostname}")}),
                _ => unknown_command(command),
            }
        })?;
    }
    connection.close()?;
    Ok(())
}
