//! Direct reply-to RPC through both adapters against the local RabbitMQ:
//! 1,000 concurrent requests answered and correlated, timeouts that fire,
//! late replies dropped without harm, nothing left behind.
//!
//! These tests need the broker and fail (never pass silently) without it.

use std::sync::Arc;
use std::time::Duration;

use amqp_io_common::Error;
use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::{BasicQos, QueueDeclare};
use amqp_tests::{broker_unreachable, broker_url, unique};
use bytes::Bytes;

fn square(body: &[u8]) -> Bytes {
    let number: u64 = std::str::from_utf8(body)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_default();
    Bytes::from((number * number).to_string())
}

async fn connect() -> amqp_io_tokio::Connection {
    match amqp_io_tokio::Connection::connect(&broker_url()).await {
        Ok(connection) => connection,
        Err(error) => broker_unreachable(&error),
    }
}

async fn declare(connection: &amqp_io_tokio::Connection, queue: &str) {
    let declare = QueueDeclare {
        queue: queue.into(),
        auto_delete: true,
        ..Default::default()
    };
    connection
        .channel()
        .await
        .unwrap()
        .queue_declare(declare)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_are_all_answered_and_correlated() {
    let connection = connect().await;
    let queue = unique("rpc");
    declare(&connection, &queue).await;
    let server = connection.channel().await.unwrap();
    server
        .basic_qos(BasicQos {
            prefetch_count: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    let serving = tokio::spawn({
        let (server, queue) = (server.clone(), queue.clone());
        async move {
            amqp_io_tokio::rpc::serve(&server, &queue, |request| {
                (BasicProperties::default(), square(request.body()))
            })
            .await
        }
    });
    let client = Arc::new(
        amqp_io_tokio::rpc::RpcClient::new(&connection)
            .await
            .unwrap(),
    );
    let calls: Vec<_> = (0..1_000u64)
        .map(|n| {
            let (client, queue) = (Arc::clone(&client), queue.clone());
            tokio::spawn(async move {
                let reply = client
                    .call(
                        "",
                        &queue,
                        BasicProperties::default(),
                        n.to_string(),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap();
                (n, reply.body().clone())
            })
        })
        .collect();
    for call in calls {
        let (n, reply) = call.await.unwrap();
        assert_eq!(reply, Bytes::from((n * n).to_string()), "request {n}");
    }
    assert_eq!(client.pending(), 0);
    serving.abort();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn unanswered_and_late_requests_time_out_and_leave_nothing_behind() {
    let connection = connect().await;
    let client = amqp_io_tokio::rpc::RpcClient::new(&connection)
        .await
        .unwrap();

    // Nobody serves this queue: the call times out, its entry goes.
    let silent = unique("silent");
    declare(&connection, &silent).await;
    let result = client
        .call(
            "",
            &silent,
            BasicProperties::default(),
            "1",
            Duration::from_millis(200),
        )
        .await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert_eq!(client.pending(), 0);

    // A slow server answers after the caller gave up: the late reply is
    // dropped, and the next call is answered normally.
    let slow = unique("slow");
    declare(&connection, &slow).await;
    let server = connection.channel().await.unwrap();
    let serving = tokio::spawn({
        let (server, slow) = (server.clone(), slow.clone());
        async move {
            amqp_io_tokio::rpc::serve(&server, &slow, |request| {
                if request.body().as_ref() == b"late" {
                    std::thread::sleep(Duration::from_millis(300));
                }
                (BasicProperties::default(), square(b"7"))
            })
            .await
        }
    });
    let result = client
        .call(
            "",
            &slow,
            BasicProperties::default(),
            "late",
            Duration::from_millis(100),
        )
        .await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reply = client
        .call(
            "",
            &slow,
            BasicProperties::default(),
            "now",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(reply.body().as_ref(), b"49");
    assert_eq!(client.pending(), 0);
    serving.abort();
    connection.close().await.unwrap();
}

#[test]
fn the_blocking_client_calls_and_times_out() {
    let connection = match amqp_io_std::Connection::open(&broker_url()) {
        Ok(connection) => connection,
        Err(error) => broker_unreachable(&error),
    };
    let queue = unique("rpc-std");
    let setup = connection.channel().unwrap();
    let declare = QueueDeclare {
        queue: queue.as_str().into(),
        auto_delete: true,
        ..Default::default()
    };
    setup.queue_declare(declare).unwrap();
    // The server on its own connection and thread, answering 20 requests.
    let server = std::thread::spawn({
        let queue = queue.clone();
        move || {
            let connection = amqp_io_std::Connection::open(&broker_url()).unwrap();
            let channel = connection.channel().unwrap();
            let served = amqp_io_std::rpc::serve(&channel, &queue, Some(20), |request| {
                (BasicProperties::default(), square(request.body()))
            })
            .unwrap();
            connection.close().unwrap();
            served
        }
    });
    let client = Arc::new(amqp_io_std::rpc::RpcClient::new(&connection).unwrap());
    // Four threads share the client, five calls each.
    let callers: Vec<_> = (0..4u64)
        .map(|thread| {
            let (client, queue) = (Arc::clone(&client), queue.clone());
            std::thread::spawn(move || {
                for call in 0..5u64 {
                    let n = thread * 10 + call;
                    let reply = client
                        .call(
                            "",
                            &queue,
                            BasicProperties::default(),
                            n.to_string(),
                            Duration::from_secs(10),
                        )
                        .unwrap();
                    assert_eq!(reply.body().as_ref(), (n * n).to_string().as_bytes());
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!(server.join().unwrap(), 20);
    // Nobody answers now.
    let result = client.call(
        "",
        &queue,
        BasicProperties::default(),
        "1",
        Duration::from_millis(200),
    );
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert_eq!(client.pending(), 0);
    connection.close().unwrap();
}
