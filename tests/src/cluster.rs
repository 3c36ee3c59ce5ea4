//! The local 3-node RabbitMQ cluster of `scripts/cluster` (nodes 1..3 on
//! 127.0.0.1:5681-5683): bringing it up, killing and restarting a node.
//!
//! Tests that use it take [`lock`] first: killing a node must not happen
//! under another test's feet. The lock runs `scripts/cluster up` every
//! time (about a second on a running cluster, about 30 s cold), so a test
//! finds all three nodes up and joined whether or not the test command
//! started the cluster, and a node a failed test left down comes back.
//!
//! Node [`CONSUMER_TIMEOUT_NODE`] runs with a low `consumer_timeout`
//! ([`CONSUMER_TIMEOUT`], checked on a 500 ms channel tick) for the
//! consumer-timeout tests: every `scripts/cluster` call from here passes
//! `CONSUMER_TIMEOUT_MS_3`, as the test command's `scripts/cluster up`
//! does, so `up` and `start` never undo it (the script restarts a running
//! node whose configuration changed).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The nodes of the cluster.
pub const NODES: [u8; 3] = [1, 2, 3];

/// The node whose broker closes a channel holding a delivery
/// unacknowledged for longer than [`CONSUMER_TIMEOUT`].
pub const CONSUMER_TIMEOUT_NODE: u8 = 3;

/// Node [`CONSUMER_TIMEOUT_NODE`]'s `consumer_timeout`; `scripts/test`
/// starts the cluster with the same value (`CONSUMER_TIMEOUT_MS_3=2000`).
pub const CONSUMER_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(2000);

/// Node `n`'s AMQP port (5681, 5682, 5683).
#[must_use]
pub fn port(n: u8) -> u16 {
    5680 + u16::from(n)
}

/// Node `n`'s AMQP URL, guest/guest on `/` (guest logs in from localhost
/// only, which this is).
#[must_use]
pub fn url(n: u8) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", port(n))
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster")
}

/// Runs `scripts/cluster` with `args`; its progress lines, or why it failed.
pub fn run(args: &[&str]) -> Result<String, String> {
    let output = Command::new(script())
        .args(args)
        .env(
            format!("CONSUMER_TIMEOUT_MS_{CONSUMER_TIMEOUT_NODE}"),
            CONSUMER_TIMEOUT.as_millis().to_string(),
        )
        .output()
        .map_err(|error| format!("cannot run {}: {error}", script().display()))?;
    let progress = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if output.status.success() {
        Ok(progress)
    } else {
        Err(format!(
            "scripts/cluster {} failed: {progress}",
            args.join(" ")
        ))
    }
}

/// Stops the test with a clear message when the cluster is not available:
/// a test that needs it fails without it, in CI and locally alike.
pub fn unavailable(error: &dyn std::fmt::Display) -> ! {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    panic!(
        "the local RabbitMQ cluster (127.0.0.1:5681-5683, scripts/cluster up) is not available: {error}{}",
        if ci {
            " (CI=true: the cluster suites are required)"
        } else {
            ""
        }
    );
}

/// Serializes the tests that use the cluster and brings it up (all three
/// nodes running and joined) before handing it over.
pub fn lock() -> MutexGuard<'static, ()> {
    static CLUSTER: Mutex<()> = Mutex::new(());
    // A test that failed while holding the lock poisons it; the cluster
    // is brought up again below either way.
    let guard = CLUSTER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(error) = run(&["up"]) {
        unavailable(&error);
    }
    guard
}

/// Hard-kills node `n` (SIGKILL of its `beam.smp`) and starts it again
/// when dropped, also when the test fails in between, unless
/// [`start`](Self::start) already did.
pub struct Killed {
    node: u8,
    restarted: bool,
}

impl Killed {
    /// Kills node `n`.
    ///
    /// # Panics
    ///
    /// When `scripts/cluster kill` fails.
    #[must_use]
    pub fn node(n: u8) -> Self {
        if let Err(error) = run(&["kill", &n.to_string()]) {
            unavailable(&error);
        }
        Self {
            node: n,
            restarted: false,
        }
    }

    /// Starts the node again and waits until it is back in the cluster.
    ///
    /// # Errors
    ///
    /// What `scripts/cluster start` said when it failed.
    pub fn start(mut self) -> Result<String, String> {
        self.restarted = true;
        run(&["start", &self.node.to_string()])
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if !self.restarted {
            if let Err(error) = run(&["start", &self.node.to_string()]) {
                eprintln!("{error}");
            }
        }
    }
}
