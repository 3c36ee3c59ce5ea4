//! The kombu pattern for collecting replies: a temporary reply queue, a
//! `no_ack` callback consumer on it, and a `drain_events(timeout)` loop that
//! stops at a reply limit or when the broker has been quiet for `timeout`.
//!
//! Three worker threads (each with its own connection) listen on a fanout
//! exchange; the client broadcasts one request and collects their replies.
//! `cargo run -p amqp-io-std --example kombu_replies` (AMQP_URL overrides
//! the local broker).
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_io_std::{Connection, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, BasicPublish, ExchangeDeclare, QueueBind, QueueDeclare};

const EXCHANGE: &str = "amqp-foundation.demo.pidbox";
const WORKERS: usize = 3;

fn main() {
    if let Err(error) = run() {
        eprintln!("kombu_replies failed: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());

    let (ready_sender, ready) = mpsc::channel();
    let workers: Vec<_> = (0..WORKERS)
        .map(|number| {
            let url = url.clone();
            let ready = ready_sender.clone();
            std::thread::spawn(move || worker(&url, number, &ready))
        })
        .collect();
    for _ in 0..WORKERS {
        ready
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "a worker did not start")?;
    }

    let connection = Connection::open(&url)?;
    let channel = connection.channel()?;
    // The reply queue lives as long as this consumer: exclusive, deleted
    // with the connection.
    let reply_queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        })?
        .queue;
    let replies = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&replies);
    channel.basic_consume_with_callback(
        BasicConsume {
            queue: reply_queue.clone(),
            no_ack: true,
            ..Default::default()
        },
        move |delivery| {
            let text = String::from_utf8_lossy(delivery.body()).into_owned();
            if let Ok(mut replies) = collected.lock() {
                replies.push(text);
            }
        },
    )?;

    let ticket = format!("ticket-{}", std::process::id());
    let request = BasicProperties::default()
        .content_type("application/json")
        .reply_to(reply_queue.to_string())
        .correlation_id(ticket.clone());
    let broadcast = BasicPublish {
        exchange: EXCHANGE.into(),
        ..Default::default()
    };
    let started = Instant::now();
    channel.publish(&broadcast, &request, r#"{"method": "ping"}"#)?;
    println!("broadcast ping with {ticket}; collecting up to {WORKERS} replies");

    // kombu's collect loop: the timeout restarts with each reply.
    let limit = WORKERS;
    loop {
        let count = replies.lock().map_or(0, |replies| replies.len());
        if count >= limit {
            break;
        }
        match connection.drain_events(Duration::from_secs(1)) {
            Ok(_) => {}
            Err(Error::Timeout { .. }) => break,
            Err(error) => return Err(error.into()),
        }
    }
    let replies = replies
        .lock()
        .map(|replies| replies.clone())
        .unwrap_or_default();
    for reply in &replies {
        println!("  reply: {reply}");
    }
    println!(
        "collected {} of {limit} replies in {:.1} ms",
        replies.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    connection.close()?;
    for worker in workers {
        worker.join().map_err(|_| "a worker thread panicked")??;
    }
    Ok(())
}

/// A node: answers one broadcast on its own queue, then leaves.
fn worker(url: &str, number: usize, ready: &mpsc::Sender<()>) -> Result<(), Error> {
    let connection = Connection::open(url)?;
    let channel = connection.channel()?;
    channel.exchange_declare(ExchangeDeclare {
        exchange: EXCHANGE.into(),
        exchange_type: "fanout".into(),
        auto_delete: true,
        ..Default::default()
    })?;
    let queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })?
        .queue;
    channel.queue_bind(QueueBind {
        queue: queue.clone(),
        exchange: EXCHANGE.into(),
        ..Default::default()
    })?;
    let requests = channel.basic_consume(BasicConsume {
        queue,
        no_ack: true,
        ..Default::default()
    })?;
    let _ = ready.send(());
    let request = requests.recv_timeout(Duration::from_secs(30))?;
    let properties = &request.properties();
    let reply_to = properties.reply_to.clone().unwrap_or_default();
    let reply = BasicPublish {
        routing_key: reply_to,
        ..Default::default()
    };
    let mut answer = BasicProperties::default().content_type("application/json");
    if let Some(ticket) = &properties.correlation_id {
        answer = answer.correlation_id(ticket.clone());
    }
    let body = format!(r#"{{"worker-{number}@{}": "pong"}}"#, hostname());
    channel.publish(&reply, &answer, body)?;
    connection.close()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}
