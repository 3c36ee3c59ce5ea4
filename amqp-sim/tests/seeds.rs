//! The campaign as a test: 100,000 seeds (`AMQP_SIM_SEEDS` overrides, and
//! `AMQP_SIM_START` moves the range), on every core of the machine. On
//! failure it lists each distinct invariant broken with its first seed
//! and the command that replays it, then panics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use amqp_sim::{run_seed, Failure, Options};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[test]
fn seeds_keep_every_invariant() {
    let count = env("AMQP_SIM_SEEDS", 100_000);
    let start = env("AMQP_SIM_START", 0);
    let options = Options::default();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let next = AtomicU64::new(0);
    let failures: Mutex<BTreeMap<String, (u64, Box<Failure>)>> = Mutex::new(BTreeMap::new());
    let began = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let seed = start + index;
                if let Err(failure) = run_seed(seed, &options) {
                    let mut failures = failures.lock().unwrap();
                    let entry = failures.entry(failure.class()).or_insert((seed, failure));
                    if seed < entry.0 {
                        *entry = (seed, run_seed(seed, &options).unwrap_err());
                    }
                }
            });
        }
    });
    let seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "{count} seeds in {seconds:.1} s ({:.0} seeds/s, {threads} threads)",
        count as f64 / seconds
    );
    let failures = failures.into_inner().unwrap();
    if failures.is_empty() {
        return;
    }
    let mut report = String::new();
    for (class, (seed, failure)) in &failures {
        report.push_str(&format!(
            "\n[{class}]\n  seed {seed}, after step {}: {}\n  replay: {}\n  shrink: cargo run -p amqp-sim -- --shrink {seed}\n",
            failure.step_index,
            failure.detail,
            failure.replay_command()
        ));
    }
    panic!("{} kind(s) of failure:{report}", failures.len());
}
