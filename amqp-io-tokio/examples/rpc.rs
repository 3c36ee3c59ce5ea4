//! Direct reply-to RPC: a server squaring numbers and a client with 100
//! requests in flight at once, each correlated to its reply.
//!
//! `cargo run -p amqp-io-tokio --features kombu --example rpc` (AMQP_URL picks the broker).
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_io_tokio::rpc::{serve, RpcClient};
use amqp_io_tokio::{Connection, Error};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::QueueDeclare;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&url).await?;

    // The server: a queue of its own, one reply per request.
    let server = connection.channel().await?;
    let declare = QueueDeclare {
        exclusive: true,
        ..Default::default()
    };
    let queue = server.queue_declare(declare).await?.queue.to_string();
    let serving = tokio::spawn({
        let (server, queue) = (server.clone(), queue.clone());
        async move {
            serve(&server, &queue, |request| {
                let number: u64 = std::str::from_utf8(request.body())
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or_default();
                (
                    BasicProperties::default(),
                    (number * number).to_string().into(),
                )
            })
            .await
        }
    });

    // The client: 100 calls at once over one reply-to consumer.
    let client = Arc::new(RpcClient::new(&connection).await?);
    let started = Instant::now();
    let calls: Vec<_> = (1..=100u64)
        .map(|n| {
            let (client, queue) = (Arc::clone(&client), queue.clone());
            tokio::spawn(async move {
                let properties = BasicProperties::default();
                let reply = client
                    .call(
                        "",
                        &queue,
                        properties,
                        n.to_string(),
                        Duration::from_secs(5),
                    )
                    .await?;
                Ok::<_, Error>((n, String::from_utf8_lossy(reply.body()).into_owned()))
            })
        })
        .collect();
    let mut answered = 0;
    for call in calls {
        let (n, square) = call.await.expect("the call task")?;
        assert_eq!(square, (n * n).to_string());
        answered += 1;
    }
    println!(
        "{answered} requests answered and correlated in {:.1} ms; {} left pending",
        started.elapsed().as_secs_f64() * 1000.0,
        client.pending()
    );
    serving.abort();
    connection.close().await
}
