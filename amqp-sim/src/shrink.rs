//! Delta debugging of a failing run: remove steps while the same class of
//! failure ([`Failure::class`](crate::Failure::class)) still occurs, down to a list where removing any one step
//! makes it pass; then print it as a regression test.

use crate::{generate, run_seed, run_steps, Failure, Options, Step};

/// A minimal failing run.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The seed (it still chooses the broker's and client's settings).
    pub seed: u64,
    /// The steps left.
    pub steps: Vec<Step>,
    /// The failure they cause.
    pub failure: Failure,
}

impl Shrunk {
    /// Rust source of a regression test for `tests/regressions.rs`.
    #[must_use]
    pub fn as_test(&self, name: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "/// {} ({}).\n#[test]\nfn {name}() {{\n    let steps = vec![\n",
            self.failure.invariant,
            self.failure.detail.replace('\n', " ")
        ));
        for step in &self.steps {
            out.push_str(&format!("        {step:?},\n"));
        }
        out.push_str(&format!("    ];\n    passes({}, &steps);\n}}\n", self.seed));
        out
    }
}

/// Shrinks the run of `seed`, if it fails; `None` if it passes. The
/// recheck failures (determinism, split invariance) are shrunk against
/// the full `run_seed`, the rest against a plain run.
#[must_use]
pub fn shrink(seed: u64, options: &Options) -> Option<Shrunk> {
    let options = Options {
        trace: false,
        ..*options
    };
    let failure = run_seed(seed, &options).err()?;
    // The same class of failure, not just the same invariant: a shrunk
    // run must show the same bug.
    let class = failure.class();
    let rechecked = matches!(failure.invariant, "determinism" | "split-invariance");
    let fails = |steps: &[Step]| -> Option<Box<Failure>> {
        let outcome = if rechecked {
            // Force the recheck whatever the seed's residue.
            crate::recheck_steps(seed, steps, &options)
        } else {
            run_steps(seed, steps, &options).err()
        };
        outcome.filter(|found| found.class() == class)
    };
    let mut steps = generate(seed, options.max_steps);
    // Only the steps up to the failure matter (final checks: all of them).
    if let Some(shorter) = steps.get(..=failure.step_index).map(<[Step]>::to_vec) {
        if fails(&shorter).is_some() {
            steps = shorter;
        }
    }
    let mut chunk = steps.len().div_ceil(2).max(1);
    loop {
        let mut removed = false;
        let mut start = 0;
        while start < steps.len() {
            let end = (start + chunk).min(steps.len());
            let mut candidate = steps.clone();
            candidate.drain(start..end);
            if fails(&candidate).is_some() {
                steps = candidate;
                removed = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed {
            break;
        }
        if !removed {
            chunk = chunk.div_ceil(2).max(1);
        }
    }
    let failure = fails(&steps).map(|found| *found)?;
    let failure = run_steps(
        seed,
        &steps,
        &Options {
            trace: true,
            ..options
        },
    )
    .err()
    .map_or(failure, |found| *found);
    Some(Shrunk {
        seed,
        steps,
        failure,
    })
}
