//! What the library does, against a real broker: connect, declare, publish
//! a batch with confirms, consume it with acks, basic.get, a mandatory
//! publish coming back, and a clean close, with the rates measured.
//!
//! `scripts/demo` runs it; `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`) picks the broker and
//! `DEMO_MESSAGES` (default 20000) the batch size.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_io_std::{Connection, Error};
use amqp_proto::codec::{BasicProperties, FieldValue};
use amqp_proto::spec::{BasicConsume, BasicGet, BasicPublish, BasicQos, QueueDeclare};

const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    if let Err(error) = run() {
        eprintln!("demo failed: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let messages: u64 = match std::env::var("DEMO_MESSAGES") {
        Ok(count) => count.parse().unwrap_or(20_000),
        Err(_) => 20_000,
    };

    let connection = Connection::open(&url)?;
    let server = connection.server_properties();
    let text = |key: &str| match server.get(key) {
        Some(FieldValue::LongString(value)) => value.to_string_lossy().into_owned(),
        _ => "?".into(),
    };
    let tuning = connection.tuning();
    println!(
        "connected to {} {} at {}: frame_max {} bytes, channel_max {}, heartbeat {} s",
        text("product"),
        text("version"),
        redact(&url),
        tuning.frame_max,
        tuning.channel_max,
        tuning.heartbeat,
    );

    let channel = connection.channel()?;
    let queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })?
        .queue;
    println!("declared the exclusive queue {queue}");

    // Publish a batch in confirm mode; the channel keeps at most 1,000
    // unconfirmed, so memory stays flat however large the batch.
    channel.confirm_select()?;
    let publish = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let properties = BasicProperties::default()
        .content_type("text/plain")
        .delivery_mode(2);
    let body = bytes::Bytes::from_static(b"sixteen byte msg");
    let started = Instant::now();
    for _ in 0..messages {
        channel.publish(&publish, &properties, body.clone())?;
    }
    channel.wait_for_confirms(TIMEOUT)?;
    let elapsed = started.elapsed();
    println!(
        "published {messages} messages of {} bytes, all confirmed by the broker, in {:.2} s: {:.0} msgs/s",
        body.len(),
        elapsed.as_secs_f64(),
        rate(messages, elapsed),
    );

    // Consume them with acknowledgements (one ack per 100 deliveries,
    // `multiple` covering the rest), with a prefetch window of 1,000.
    channel.basic_qos(BasicQos {
        prefetch_count: 1_000,
        ..Default::default()
    })?;
    let consumer = channel.basic_consume(BasicConsume {
        queue: queue.clone(),
        ..Default::default()
    })?;
    let started = Instant::now();
    let mut received = 0;
    let mut last_tag = 0;
    while received < messages {
        let delivery = consumer.recv_timeout(TIMEOUT)?;
        received += 1;
        last_tag = delivery.delivery_tag;
        if received % 100 == 0 {
            channel.ack(last_tag, true)?;
        }
    }
    if received % 100 != 0 {
        channel.ack(last_tag, true)?;
    }
    let elapsed = started.elapsed();
    consumer.cancel()?;
    println!(
        "consumed and acknowledged {received} messages in {:.2} s: {:.0} msgs/s",
        elapsed.as_secs_f64(),
        rate(received, elapsed),
    );

    // One message fetched on demand, and one from an empty queue.
    channel
        .publish(
            &publish,
            &properties.clone().message_id("get-me"),
            "fetched with basic.get",
        )?
        .wait(TIMEOUT)?;
    let get = BasicGet {
        queue: queue.clone(),
        no_ack: true,
        ..Default::default()
    };
    if let Some(message) = channel.basic_get(get.clone())? {
        println!(
            "basic.get returned {:?} (message id {:?}, {} left in the queue)",
            String::from_utf8_lossy(&message.content.body),
            message.content.header.properties.message_id,
            message.message_count,
        );
    }
    if channel.basic_get(get)?.is_none() {
        println!("basic.get on the now empty queue returned get-empty");
    }

    // A mandatory publish nobody can route comes back before its confirm.
    let returned = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&returned);
    channel.on_return(move |message| {
        if let Ok(mut returned) = sink.lock() {
            returned.push(message);
        }
    })?;
    let unroutable = BasicPublish {
        routing_key: "no-queue-has-this-name".into(),
        mandatory: true,
        ..Default::default()
    };
    channel
        .publish(&unroutable, &properties, "nobody will get this")?
        .wait(TIMEOUT)?;
    for message in returned.lock().map(|list| list.clone()).unwrap_or_default() {
        println!(
            "the broker returned the mandatory publish to {:?}: {} {}",
            message.routing_key, message.reply_code, message.reply_text,
        );
    }

    channel.close()?;
    connection.close()?;
    println!("closed the channel and the connection cleanly");
    Ok(())
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
