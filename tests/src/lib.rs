//! Shared helpers for the cross-crate test suites: where the broker is,
//! failing loudly when it is not there, driving `rabbitmqctl`, a TCP proxy
//! that can stall traffic, and the local 3-node cluster ([`cluster`]).

pub mod capture;
pub mod cluster;
pub mod interop;
pub mod proxy;
pub mod tls_proxy;

use std::process::Command;

/// The broker's AMQP URL for the live suites: `AMQP_URL`, or the local
/// RabbitMQ with guest/guest on `/`.
#[must_use]
pub fn broker_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The broker's `host:port` (for tests that open sockets themselves).
#[must_use]
pub fn broker_address() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into())
}

/// Stops the test with a clear message when the broker cannot be reached:
/// a test that needs RabbitMQ fails without it, in CI and locally alike.
pub fn broker_unreachable(error: &dyn std::fmt::Display) -> ! {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    panic!(
        "RabbitMQ is not reachable at {}: {error}; scripts/ensure-rabbitmq starts it{}",
        broker_address(),
        if ci {
            " (CI=true: the live suites are required)"
        } else {
            ""
        }
    );
}

/// A name unique to this test process and call, so tests running at once
/// never share broker state.
#[must_use]
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "amqp-foundation-test.{prefix}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The broker URL with other credentials (`user:password`) or vhost.
#[must_use]
pub fn url_with(userinfo: &str, vhost: &str) -> String {
    let url = broker_url();
    let rest = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or(rest);
    format!("amqp://{userinfo}@{host}/{vhost}")
}

/// A `basic.publish` to `queue` through the default exchange.
#[must_use]
pub fn publish_to(queue: &str) -> amqp_proto::spec::BasicPublish {
    amqp_proto::spec::BasicPublish {
        routing_key: queue.into(),
        ..Default::default()
    }
}

/// A passive `queue.declare` of `queue`, to read its message count.
#[must_use]
pub fn passive_declare(queue: &str) -> amqp_proto::spec::QueueDeclare {
    amqp_proto::spec::QueueDeclare {
        queue: queue.into(),
        passive: true,
        ..Default::default()
    }
}

/// Runs `rabbitmqctl` with `args` and returns its standard output, or why
/// it failed.
pub fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run rabbitmqctl: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The broker's id of the connection whose client side is on
/// `local_port`, from `rabbitmqctl list_connections`.
pub fn connection_pid(local_port: u16) -> Result<String, String> {
    let listing = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "peer_port",
    ])?;
    listing
        .lines()
        .find_map(|line| {
            let mut columns = line.split_whitespace();
            let pid = columns.next()?;
            let port: u16 = columns.next()?.parse().ok()?;
            (port == local_port).then(|| pid.to_owned())
        })
        .ok_or_else(|| format!("no connection from port {local_port} in {listing:?}"))
}
