//! Publish-with-confirms and consume rates against a broker: `MESSAGES`
//! (default 100000) messages of `SIZE` bytes (default 16), at most 1,000
//! unconfirmed, then consumed with a prefetch of 1,000 and one ack per 100.
//!
//! `cargo run --release -p amqp-io-tokio --example throughput`
use std::time::{Duration, Instant};

use amqp_io_tokio::{Connection, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, BasicPublish, BasicQos, QueueDeclare};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let (messages, size) = (setting("MESSAGES", 100_000), setting("SIZE", 16));
    let connection = Connection::connect(&url).await?;
    let channel = connection.channel().await?;
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare(declare).await?.queue;
    channel.confirm_select().await?;

    let publish = BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    let properties = BasicProperties::default();
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    for _ in 0..messages {
        // The channel's window (Config::max_unconfirmed) paces this loop.
        channel.publish(&publish, &properties, body.clone()).await?;
    }
    channel.wait_for_confirms(Duration::from_secs(60)).await?;
    let publishing = started.elapsed();

    channel
        .basic_qos(BasicQos {
            prefetch_count: 1_000,
            ..Default::default()
        })
        .await?;
    let consume = BasicConsume {
        queue,
        ..Default::default()
    };
    let mut consumer = channel.basic_consume(consume).await?;
    let started = Instant::now();
    for received in 1..=messages {
        let delivery = consumer.recv().await.expect("a delivery")?;
        if received % 100 == 0 || received == messages {
            delivery.ack_multiple()?;
        }
    }
    let consuming = started.elapsed();
    connection.close().await?;
    let rate = |elapsed: Duration| messages as f64 / elapsed.as_secs_f64();
    println!(
        "{messages} x {size} B: publish with confirms {:.0} msgs/s, consume with acks {:.0} msgs/s",
        rate(publishing),
        rate(consuming)
    );
    Ok(())
}
