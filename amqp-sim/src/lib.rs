//! Deterministic simulation of the `amqp-proto` core.
//!
//! The real [`amqp_proto::Connection`] runs against a modelled RabbitMQ
//! ([`broker`]) on a simulated clock. A seed names a list of [`Step`]s
//! (application commands, network deliveries of random prefixes, clock
//! advances, faults and malformed input, see [`generate`]); after every
//! step the oracle checks the core's invariants: every request resolved
//! exactly once and with the reply the broker gave it, nothing after the
//! application abandoned a request or its deadline failed it (and what
//! its late reply carries given back: messages conserved, consumers
//! cancelled, channels closed), every confirm
//! settled once, channel and connection lifecycles, the reply codes owed
//! to malformed input, no false positives against a correct broker,
//! bounded output, prompt closes. A connection that fails as automatic
//! recovery would recover is, some of the time, replaced by
//! `Connection::recover` against the same broker, and the recovery's
//! replay, its `Event::Recovered` and the numbering across connections
//! are checked too. The same seed always gives the same trace, and
//! re-splitting the server's bytes must not change it.
//!
//! ```
//! let outcome = amqp_sim::run_seed(7, &amqp_sim::Options::default());
//! // Either a summary, or a failure naming the seed, step and invariant.
//! let _ = outcome;
//! ```
//!
//! A failure replays with `cargo run -p amqp-sim -- --seed N --trace` and
//! shrinks with `--shrink N` to a `Vec<Step>` for `tests/regressions.rs`.

// The broker's bytes must never panic the simulation: no unwrap, expect
// or unchecked indexing outside tests (tests may unwrap what they built).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod app;
pub mod broker;
mod driver;
mod faults;
mod generator;
mod hash;
mod oracle;
pub mod rng;
mod shrink;
mod sim;
mod step;

pub use generator::generate;
pub use oracle::Violation;
pub use shrink::{shrink, Shrunk};
pub use step::{Malformed, Reaction, Step};

use sim::Mode;

/// How seeds are run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most steps a generated run has (at least 10).
    pub max_steps: usize,
    /// Every this many seeds (by value), the run is repeated twice: once
    /// as it was (determinism) and once with the server's bytes re-split
    /// (split invariance). 0 never repeats.
    pub recheck_every: u64,
    /// Keep a readable trace of every run, not only of failures.
    pub trace: bool,
    /// Invariants not to stop at (named as in [`Failure::invariant`]):
    /// known bugs that would hide others. The runs note them in the trace
    /// and go on.
    pub ignore: &'static [&'static str],
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_steps: 200,
            recheck_every: 8,
            trace: false,
            ignore: &[],
        }
    }
}

/// A run that kept every invariant.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Steps run.
    pub steps: usize,
    /// Events the core emitted.
    pub events: usize,
    /// Hash of the trace (events, bytes written, times).
    pub hash: u64,
    /// How the connection ended.
    pub ending: String,
    /// The readable trace, when asked for.
    pub trace: Vec<String>,
}

/// A run that broke an invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The step after which the invariant was found broken (the number of
    /// steps for the final checks, `usize::MAX` for a panic).
    pub step_index: usize,
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was observed.
    pub detail: String,
    /// The readable trace of the failing run.
    pub trace: Vec<String>,
}

impl Failure {
    /// The failure's class: its invariant and the start of its detail with
    /// numbers blurred, so that one bug met with different tags, sizes or
    /// times is reported once. Reply codes keep their names.
    #[must_use]
    pub fn class(&self) -> String {
        let mut detail = String::new();
        let mut in_number = false;
        for c in self.detail.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    detail.push('N');
                }
                in_number = true;
            } else {
                in_number = false;
                detail.push(c);
            }
        }
        let detail: String = detail.chars().take(100).collect();
        format!("{}: {detail}", self.invariant)
    }

    /// The command that replays it.
    #[must_use]
    pub fn replay_command(&self) -> String {
        format!("cargo run -p amqp-sim -- --seed {} --trace", self.seed)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} broke {} after step {}: {}",
            self.seed, self.invariant, self.step_index, self.detail
        )
    }
}

/// What a seed did.
pub type Outcome = Result<Summary, Box<Failure>>;

/// Runs the steps generated for `seed`, with the re-checks `options` ask for.
pub fn run_seed(seed: u64, options: &Options) -> Outcome {
    let steps = generate(seed, options.max_steps);
    let outcome = run_steps(seed, &steps, options);
    let summary = outcome?;
    if options.recheck_every > 0 && seed % options.recheck_every == 0 {
        if let Err(failure) = recheck(seed, &steps, &summary, options) {
            if !options.ignore.contains(&failure.invariant) {
                return Err(failure);
            }
        }
    }
    Ok(summary)
}

/// Runs `steps` (generated, shrunk or hand-written) with the broker and
/// client choices of `seed`.
pub fn run_steps(seed: u64, steps: &[Step], options: &Options) -> Outcome {
    let mode = Mode {
        resplit: None,
        trace: options.trace,
        ignore: options.ignore,
    };
    let run = sim::run(seed, steps, mode);
    match run.failure {
        None => Ok(Summary {
            seed,
            steps: steps.len(),
            events: run.events,
            hash: run.hash,
            ending: run.ending,
            trace: run.trace,
        }),
        Some((step_index, violation)) => {
            // Run again for the trace; the run is deterministic.
            let trace = if options.trace {
                run.trace
            } else {
                sim::run(
                    seed,
                    steps,
                    Mode {
                        trace: true,
                        ..mode
                    },
                )
                .trace
            };
            Err(Box::new(Failure {
                seed,
                step_index,
                invariant: violation.invariant,
                detail: violation.detail,
                trace,
            }))
        }
    }
}

/// Runs `steps` and always rechecks determinism and split invariance:
/// what a regression test calls.
pub fn check_steps(seed: u64, steps: &[Step], options: &Options) -> Outcome {
    let summary = run_steps(seed, steps, options)?;
    recheck(seed, steps, &summary, options)?;
    Ok(summary)
}

pub(crate) fn recheck_steps(seed: u64, steps: &[Step], options: &Options) -> Option<Box<Failure>> {
    check_steps(seed, steps, options).err()
}

/// Runs a seed again as it was, and with the server's bytes split
/// differently: both traces must equal the first.
fn recheck(
    seed: u64,
    steps: &[Step],
    first: &Summary,
    options: &Options,
) -> Result<(), Box<Failure>> {
    let plain = Mode {
        resplit: None,
        trace: false,
        ignore: options.ignore,
    };
    let resplit = Mode {
        resplit: Some(0x5EED),
        ..plain
    };
    let fail = |invariant: &'static str, detail: String, trace: Vec<String>| {
        Box::new(Failure {
            seed,
            step_index: steps.len(),
            invariant,
            detail,
            trace,
        })
    };
    let again = sim::run(seed, steps, plain);
    if again.hash != first.hash {
        return Err(fail(
            "determinism",
            format!("hash {:#x} then {:#x}", first.hash, again.hash),
            Vec::new(),
        ));
    }
    let resplit_run = sim::run(seed, steps, resplit);
    let traced = |mode: Mode| {
        sim::run(
            seed,
            steps,
            Mode {
                trace: true,
                ..mode
            },
        )
        .trace
    };
    if let Some((index, violation)) = resplit_run.failure {
        return Err(Box::new(Failure {
            seed,
            step_index: index,
            invariant: "split-invariance",
            detail: format!(
                "with the server's bytes re-split, {} broke: {}",
                violation.invariant, violation.detail
            ),
            trace: traced(resplit),
        }));
    }
    if resplit_run.hash != first.hash {
        // Both traces, so that the first difference can be found.
        let mut trace = traced(plain);
        trace.push("---- the same steps, server bytes re-split ----".to_owned());
        trace.extend(traced(resplit));
        return Err(fail(
            "split-invariance",
            format!(
                "re-splitting the server's bytes changed the trace (ending {:?} vs {:?})",
                first.ending, resplit_run.ending
            ),
            trace,
        ));
    }
    Ok(())
}
