//! The Rust side of `scripts/celery-bench`: sends `tasks.add` to a Celery
//! worker (Rust or Python) on a queue, one at a time or pipelined, and
//! prints what it measured as one JSON line, the same as
//! `tests/interop/celery_call.py bench` prints for Python's client.
//!
//!     celery_bench --queue Q --tasks N --adapter std|tokio --mode sequential|pipelined
//!
//! `{"tasks", "seconds", "per_second", "latency_ms": {"p50", "p90", "p99",
//! "mean"}}` (latency for sequential runs: each task's round trip, from
//! sending to its result).

use std::time::{Duration, Instant};

use amqp_io_common::celery::TaskOptions;
use amqp_tests::broker_url;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

struct Args {
    queue: String,
    tasks: u64,
    tokio: bool,
    pipelined: bool,
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        queue: "celery".into(),
        tasks: 1_000,
        tokio: false,
        pipelined: false,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        let value = arguments
            .next()
            .ok_or_else(|| format!("{argument} needs a value"))?;
        match argument.as_str() {
            "--queue" => parsed.queue = value,
            "--tasks" => parsed.tasks = value.parse().map_err(|error| format!("{error}"))?,
            "--adapter" => parsed.tokio = value == "tokio",
            "--mode" => parsed.pipelined = value == "pipelined",
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn report(tasks: u64, elapsed: Duration, mut latencies: Vec<Duration>) -> String {
    let seconds = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let mut line =
        json!({"tasks": tasks, "seconds": seconds, "per_second": tasks as f64 / seconds});
    if !latencies.is_empty() {
        latencies.sort();
        let pick = |quantile: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let at = ((latencies.len() as f64 * quantile) as usize).min(latencies.len() - 1);
            latencies[at].as_secs_f64() * 1000.0
        };
        let total: Duration = latencies.iter().sum();
        #[allow(clippy::cast_precision_loss)]
        let mean = total.as_secs_f64() * 1000.0 / latencies.len() as f64;
        line["latency_ms"] =
            json!({"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": mean});
    }
    line.to_string()
}

fn blocking(args: &Args) -> Result<String, Box<dyn std::error::Error>> {
    use amqp_io_std::celery::Client;
    let connection = amqp_io_std::Connection::open(&broker_url())?;
    let client = Client::new(&connection)?;
    let options = || TaskOptions::default().queue(args.queue.as_str());
    let mut latencies = Vec::new();
    let started = Instant::now();
    if args.pipelined {
        let results = (0..args.tasks)
            .map(|n| client.send_task("tasks.add", (n, 1), (), options()))
            .collect::<Result<Vec<_>, _>>()?;
        for (n, result) in (0..).zip(&results) {
            assert_eq!(result.get_as::<u64>(WAIT)?, n + 1);
        }
    } else {
        for n in 0..args.tasks {
            let sent = Instant::now();
            let result = client.send_task("tasks.add", (n, 1), (), options())?;
            assert_eq!(result.get_as::<u64>(WAIT)?, n + 1);
            latencies.push(sent.elapsed());
        }
    }
    let line = report(args.tasks, started.elapsed(), latencies);
    connection.close()?;
    Ok(line)
}

async fn nonblocking(args: &Args) -> Result<String, Box<dyn std::error::Error>> {
    use amqp_io_tokio::celery::Client;
    let connection = amqp_io_tokio::Connection::connect(&broker_url()).await?;
    let client = Client::new(&connection).await?;
    let options = || TaskOptions::default().queue(args.queue.as_str());
    let mut latencies = Vec::new();
    let started = Instant::now();
    if args.pipelined {
        let mut results = Vec::new();
        for n in 0..args.tasks {
            results.push(client.send_task("tasks.add", (n, 1), (), options()).await?);
        }
        for (n, result) in (0..).zip(&results) {
            assert_eq!(result.get_as::<u64>(WAIT).await?, n + 1);
        }
    } else {
        for n in 0..args.tasks {
            let sent = Instant::now();
            let result = client.send_task("tasks.add", (n, 1), (), options()).await?;
            assert_eq!(result.get_as::<u64>(WAIT).await?, n + 1);
            latencies.push(sent.elapsed());
        }
    }
    let line = report(args.tasks, started.elapsed(), latencies);
    connection.close().await?;
    Ok(line)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let line = if args.tokio {
        tokio::runtime::Runtime::new()?.block_on(nonblocking(&args))?
    } else {
        blocking(&args)?
    };
    println!("{line}");
    Ok(())
}
