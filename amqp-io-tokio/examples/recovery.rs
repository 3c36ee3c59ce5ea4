//! Automatic recovery, watched from the application: a consumer and a
//! publisher, each on a connection with `ConnectOptions::recovery`, keep
//! going while their connections are closed under them.
//!
//! `cargo run -p amqp-io-tokio --example recovery` runs for `RUN_SECONDS`
//! (default 20); close its connections meanwhile (the management UI, or
//! `rabbitmqctl close_all_connections bye`) to watch them recover. With
//! `FORCE_CLOSE_AFTER=<seconds>` the example does that itself through
//! `rabbitmqctl`, and exits with an error unless both connections
//! recovered and messages flowed again afterwards.
//!
//! A message confirmed while the consumer's connection is still declaring
//! its queue again has nowhere to go (the fanout exchange has no binding
//! yet), so a few confirmed messages may never be received: that is the
//! broker routing, not a loss.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_io_tokio::{Backoff, ConnectOptions, Connection, Error, RecoveryEvent};
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{
    BasicConsume, BasicPublish, BasicQos, ExchangeDeclare, QueueBind, QueueDeclare,
};

const EXCHANGE: &str = "amqp-proto.recovery-example";

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("recovery example failed: {error}");
        std::process::exit(1);
    }
}

fn env_seconds(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// The fanout exchange both sides declare: each connection recovers what
/// it declared itself, and an auto-delete exchange may be gone (its last
/// binding went with the consumer's exclusive queue) when the publisher
/// comes back first.
fn exchange() -> ExchangeDeclare {
    ExchangeDeclare {
        exchange: EXCHANGE.into(),
        exchange_type: "fanout".into(),
        auto_delete: true,
        ..Default::default()
    }
}

/// A connection that recovers, reporting each step under `name`.
async fn recovering_connection(url: &str, name: &'static str) -> Result<Connection, Error> {
    let mut options = ConnectOptions::from_url(url)?;
    options.config.connection_name = Some(format!("recovery example {name}"));
    options.recovery = Some(Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        max_attempts: None,
    });
    let connection = Connection::connect_with(options).await?;
    connection.on_recovery(move |event| match event {
        RecoveryEvent::Started { error } => println!("[{name}] connection lost: {error}"),
        RecoveryEvent::AttemptFailed {
            attempt, retry_in, ..
        } => println!("[{name}] attempt {attempt} failed; next in {retry_in:?}"),
        RecoveryEvent::Recovered {
            renamed_queues,
            failures,
        } => {
            println!("[{name}] recovered");
            for (old, new) in renamed_queues {
                println!("[{name}]   queue {old} is now {new}");
            }
            for failure in failures {
                println!(
                    "[{name}]   refused: {} ({})",
                    failure.method, failure.failure
                );
            }
        }
        RecoveryEvent::GaveUp { error } => println!("[{name}] gave up: {error}"),
        other => println!("[{name}] {other:?}"),
    });
    Ok(connection)
}

async fn run() -> Result<(), Error> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=5".into());
    let seconds = env_seconds("RUN_SECONDS").unwrap_or(20);
    let force_close_after = env_seconds("FORCE_CLOSE_AFTER");

    // The consumer's topology: everything here is declared again after a
    // recovery, the server-named queue under a new name.
    let consuming = recovering_connection(&url, "consumer").await?;
    let channel = consuming.channel().await?;
    channel
        .basic_qos(BasicQos {
            prefetch_count: 50,
            ..Default::default()
        })
        .await?;
    channel.exchange_declare(exchange()).await?;
    let queue = channel
        .queue_declare(QueueDeclare {
            exclusive: true,
            ..Default::default()
        })
        .await?
        .queue;
    channel
        .queue_bind(QueueBind {
            queue: queue.clone(),
            exchange: EXCHANGE.into(),
            ..Default::default()
        })
        .await?;
    let mut consumer = channel
        .basic_consume(BasicConsume {
            queue,
            ..Default::default()
        })
        .await?;

    let publishing = recovering_connection(&url, "publisher").await?;
    let confirmed = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_until(
        publishing.clone(),
        Instant::now() + Duration::from_secs(seconds),
        Arc::clone(&confirmed),
    ));

    let forced_at = force_close_after.map(|after| {
        let at = Instant::now() + Duration::from_secs(after);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            println!("closing every connection with rabbitmqctl");
            let status = tokio::process::Command::new("rabbitmqctl")
                .args(["close_all_connections", "closed by the recovery example"])
                .status()
                .await;
            if !status.is_ok_and(|status| status.success()) {
                eprintln!("rabbitmqctl close_all_connections did not succeed");
            }
        });
        at
    });

    let deadline = Instant::now() + Duration::from_secs(seconds) + Duration::from_secs(1);
    let (mut received, mut after_force) = (0u64, 0u64);
    while let Ok(Some(delivery)) = tokio::time::timeout_at(deadline.into(), consumer.recv()).await {
        let delivery = delivery?;
        received += 1;
        if forced_at.is_some_and(|at| Instant::now() > at + Duration::from_secs(1)) {
            after_force += 1;
        }
        delivery.ack()?;
    }
    let _ = publisher.await;
    println!(
        "{} published and confirmed, {received} received ({after_force} after the forced close)",
        confirmed.load(Ordering::Relaxed)
    );
    consuming.close().await?;
    publishing.close().await?;
    if force_close_after.is_some() && after_force == 0 {
        return Err(Error::Timeout {
            operation: "receiving after the forced close",
            timeout: Duration::from_secs(seconds),
        });
    }
    Ok(())
}

/// Publishes a numbered message every 50 ms with a confirm until
/// `until`; a publish that fails (the connection is recovering) is
/// reported and tried again shortly.
async fn publish_until(connection: Connection, until: Instant, confirmed: Arc<AtomicU64>) {
    let publish = BasicPublish {
        exchange: EXCHANGE.into(),
        ..Default::default()
    };
    let mut channel = None;
    let mut number = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if channel.is_none() {
            channel = match connection.channel().await {
                Ok(opened) => match opened.exchange_declare(exchange()).await {
                    Ok(()) => opened.confirm_select().await.ok().map(|()| opened),
                    Err(_) => None,
                },
                Err(_) => None,
            };
        }
        let Some(open) = &channel else {
            continue;
        };
        let body = number.to_be_bytes().to_vec();
        let outcome = match open
            .publish(&publish, &BasicProperties::default(), body)
            .await
        {
            Ok(confirmation) => confirmation.await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => {
                confirmed.fetch_add(1, Ordering::Relaxed);
                number += 1;
            }
            // Unconfirmed at the failure: the application decides whether
            // to publish again (here: yes, the same number).
            Err(error) => println!("[publisher] message {number} not confirmed: {error}"),
        }
        // A channel the server closed (not one being recovered) is
        // replaced by a new one.
        if open.close_reason().is_some() {
            channel = None;
        }
    }
}
