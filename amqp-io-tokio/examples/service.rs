//! A small service: consume requests, process each, publish the result
//! with a confirm, and only then acknowledge the request, so a crash at
//! any point loses nothing (the request is redelivered).
//!
//! To run on its own it also plays the client: it sends `REQUESTS`
//! (default 1000) requests and collects the results from a reply queue.
//! `cargo run -p amqp-io-tokio --example service` (AMQP_URL overrides the
//! local broker).
use std::time::{Duration, Instant};

use amqp_io_tokio::{Channel, Connection, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicConsume, BasicPublish, BasicQos, QueueDeclare};

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("service failed: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Error> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let requests: usize = std::env::var("REQUESTS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1_000);
    let connection = Connection::connect(&url).await?;

    // The service's own queue, and a reply queue for the client side.
    let setup = connection.channel().await?;
    let exclusive = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let work_queue = setup.queue_declare(exclusive.clone()).await?.queue;
    let reply_queue = setup.queue_declare(exclusive).await?.queue;

    let service = tokio::spawn(serve(connection.channel().await?, work_queue.to_string()));

    // The client: publish requests, then collect every result.
    let client = connection.channel().await?;
    client.confirm_select().await?;
    let started = Instant::now();
    let request = BasicPublish {
        routing_key: work_queue.clone(),
        ..Default::default()
    };
    for n in 0..requests {
        let properties = BasicProperties::default()
            .reply_to(reply_queue.to_string())
            .correlation_id(format!("request-{n}"));
        client
            .publish(&request, &properties, format!("{n}"))
            .await?;
    }
    client.wait_for_confirms(Duration::from_secs(30)).await?;
    let consume = BasicConsume {
        queue: reply_queue,
        no_ack: true,
        ..Default::default()
    };
    let mut results = client.basic_consume(consume).await?;
    let mut total = 0u64;
    for _ in 0..requests {
        let result = tokio::time::timeout(Duration::from_secs(30), results.recv())
            .await
            .map_err(|_| Error::Timeout {
                operation: "collecting results",
                timeout: Duration::from_secs(30),
            })?
            .ok_or_else(|| Error::ConsumerCancelled("results".into()))??;
        total += std::str::from_utf8(result.body())
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or_default();
    }
    let elapsed = started.elapsed();
    let expected: u64 = (0..requests as u64).map(|n| n * n).sum();
    println!(
        "{requests} requests served in {:.2} s ({:.0} per second); sum of squares {total} (expected {expected})",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    service.abort();
    connection.close().await?;
    if total == expected {
        Ok(())
    } else {
        Err(Error::UnexpectedReply {
            operation: "service results",
            reply: format!("sum {total}, expected {expected}"),
        })
    }
}

/// The service loop: square the number in each request, reply, ack.
async fn serve(channel: Channel, queue: String) -> Result<(), Error> {
    channel
        .basic_qos(BasicQos {
            prefetch_count: 100,
            ..Default::default()
        })
        .await?;
    channel.confirm_select().await?;
    let consume = BasicConsume {
        queue: queue.into(),
        ..Default::default()
    };
    let mut requests = channel.basic_consume(consume).await?;
    while let Some(request) = requests.recv().await {
        let request = request?;
        let number: u64 = std::str::from_utf8(request.body())
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_default();
        let properties = request.properties();
        let Some(reply_to) = properties.reply_to.clone() else {
            request.reject(false)?; // nowhere to answer: dead-letter it
            continue;
        };
        let reply = BasicPublish {
            routing_key: reply_to,
            ..Default::default()
        };
        let mut answer = BasicProperties::default();
        if let Some(id) = &properties.correlation_id {
            answer = answer.correlation_id(id.clone());
        }
        let result = format!("{}", number * number);
        // Confirmed first, acknowledged second: at-least-once.
        channel.publish(&reply, &answer, result).await?.await?;
        request.ack()?;
    }
    Ok(())
}
