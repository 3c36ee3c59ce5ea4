//! The campaign runner.
//!
//! ```text
//! cargo run --release -p amqp-sim -- --seeds 1000000 [--start N] [--threads T]
//! cargo run -p amqp-sim -- --seed N --trace
//! cargo run -p amqp-sim -- --shrink N
//! cargo run --release -p amqp-sim -- --seeds N --keep-going --ignore close-timeout-early
//! ```
//!
//! A campaign prints seeds per second and, for each distinct invariant
//! broken, the first seed and the one line that replays it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use amqp_sim::{run_seed, shrink, Failure, Options};

#[derive(Debug, Default)]
struct Args {
    seeds: Option<u64>,
    start: u64,
    seed: Option<u64>,
    trace: bool,
    shrink: Option<u64>,
    threads: Option<usize>,
    max_steps: Option<usize>,
    keep_going: bool,
    ignore: Vec<String>,
    help: bool,
}

const USAGE: &str = "usage: amqp-sim --seeds N [--start N] [--threads T] [--keep-going] \
                     [--ignore a,b] | --seed N [--trace] | --shrink N   \
                     (--max-steps N, --ignore apply to all)";

fn parse() -> Result<Args, String> {
    let mut args = Args::default();
    let mut iter = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> Result<u64, String> {
        value
            .ok_or(format!("{flag} needs a number"))?
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(flag) = iter.next() {
        match flag.as_str() {
            "--seeds" => args.seeds = Some(number(iter.next(), "--seeds")?),
            "--start" => args.start = number(iter.next(), "--start")?,
            "--seed" => args.seed = Some(number(iter.next(), "--seed")?),
            "--shrink" => args.shrink = Some(number(iter.next(), "--shrink")?),
            "--threads" => args.threads = Some(number(iter.next(), "--threads")? as usize),
            "--max-steps" => args.max_steps = Some(number(iter.next(), "--max-steps")? as usize),
            "--trace" => args.trace = true,
            "--keep-going" => args.keep_going = true,
            "--help" | "-h" => args.help = true,
            "--ignore" => args.ignore.extend(
                iter.next()
                    .ok_or("--ignore needs invariant names, comma-separated")?
                    .split(',')
                    .map(str::to_owned),
            ),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    if args.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut options = Options::default();
    if let Some(max_steps) = args.max_steps {
        options.max_steps = max_steps;
    }
    if !args.ignore.is_empty() {
        // Options hold `'static` names; the runner lives until exit.
        let names: Vec<&'static str> = args
            .ignore
            .iter()
            .map(|name| &*Box::leak(name.clone().into_boxed_str()))
            .collect();
        options.ignore = Box::leak(names.into_boxed_slice());
    }
    if let Some(seed) = args.shrink {
        return shrink_one(seed, &options);
    }
    if let Some(seed) = args.seed {
        return replay(seed, args.trace, &options);
    }
    campaign(&args, &options)
}

fn replay(seed: u64, trace: bool, options: &Options) -> ExitCode {
    let options = Options { trace, ..*options };
    match run_seed(seed, &options) {
        Ok(summary) => {
            for line in &summary.trace {
                println!("{line}");
            }
            println!(
                "seed {seed}: ok, {} steps, {} events, ended: {}, trace hash {:#018x}",
                summary.steps, summary.events, summary.ending, summary.hash
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if trace {
                for line in &failure.trace {
                    println!("{line}");
                }
            }
            println!("{failure}");
            println!("shrink: cargo run -p amqp-sim -- --shrink {seed}");
            ExitCode::FAILURE
        }
    }
}

fn shrink_one(seed: u64, options: &Options) -> ExitCode {
    match shrink(seed, options) {
        Some(shrunk) => {
            for line in &shrunk.failure.trace {
                println!("{line}");
            }
            println!("{}", shrunk.failure);
            println!("{} steps; as a regression test:\n", shrunk.steps.len());
            println!("{}", shrunk.as_test(&format!("seed_{seed}")));
            ExitCode::FAILURE
        }
        None => {
            println!("seed {seed} passes: nothing to shrink");
            ExitCode::SUCCESS
        }
    }
}

/// Per failure class: its first seed, that failure, how many seeds hit it.
type Found = BTreeMap<String, (u64, Box<Failure>, u64)>;

fn campaign(args: &Args, options: &Options) -> ExitCode {
    let count = args.seeds.unwrap_or(10_000);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let next = AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let found: Mutex<Found> = Mutex::new(BTreeMap::new());
    let began = Instant::now();
    // A panic inside the core is caught and reported as a failure; the
    // default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let seed = args.start + index;
                if let Err(failure) = run_seed(seed, options) {
                    let mut found = found
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let entry = found.entry(failure.class()).or_insert((seed, failure, 0));
                    entry.2 += 1;
                    if seed < entry.0 {
                        entry.0 = seed;
                    }
                    if !args.keep_going {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                if index > 0 && index % 100_000 == 0 {
                    let rate = index as f64 / began.elapsed().as_secs_f64();
                    eprintln!("{index} seeds, {rate:.0} seeds/s");
                }
            });
        }
    });
    let ran = next.load(Ordering::Relaxed).min(count);
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "{ran} seeds from {} in {seconds:.1} s: {:.0} seeds/s on {threads} threads",
        args.start,
        ran as f64 / seconds
    );
    let found = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if found.is_empty() {
        println!("no invariant broken");
        return ExitCode::SUCCESS;
    }
    for (class, (seed, failure, times)) in &found {
        println!(
            "[{class}] {times} seed(s), first {seed}: {}",
            failure.detail
        );
        println!("  cargo run -p amqp-sim -- --seed {seed} --trace");
    }
    ExitCode::FAILURE
}
