//! Turns a seed into a list of [`Step`]s: application commands, network
//! deliveries, clock advances and (for most seeds) faults.
//!
//! Each seed draws a *profile* first (how many steps, how often faults
//! happen, how eagerly the network delivers), so that the campaign covers
//! calm runs, where any error the client reports is a false positive, as
//! well as hostile ones.

use crate::faults::random_fault;
use crate::rng::Rng;
use crate::step::Step;

/// Stream numbers for [`Rng::fork`]: each consumer of randomness gets its
/// own, so that changing one does not shift the others.
pub(crate) const STREAM_STEPS: u64 = 1;

/// The steps of the simulation named by `seed`.
#[must_use]
pub fn generate(seed: u64, max_steps: usize) -> Vec<Step> {
    let mut rng = Rng::fork(seed, STREAM_STEPS);
    let count = usize::try_from(rng.range(10, max_steps.max(10) as u64)).unwrap_or(10);
    // Fault rate per step, in thousandths: a quarter of the seeds are calm.
    let fault_rate = *rng.pick(&[0u64, 15, 40, 100]).unwrap_or(&0);
    let mut steps = Vec::with_capacity(count + 4);
    // Let the handshake through first, most of the time: a run that never
    // opens does not exercise much.
    if !rng.chance(0.05) {
        steps.push(Step::DeliverAll);
        steps.push(Step::DeliverAll);
        steps.push(Step::DeliverAll);
        // Usually a channel and the two queues the traffic uses, so that
        // runs get to deliveries, gets and confirms; shrinking drops what
        // a failure does not need.
        if rng.chance(0.8) {
            steps.push(Step::Open);
            steps.push(Step::DeclareQueue {
                ch: 0,
                queue: 0,
                passive: false,
            });
            steps.push(Step::DeclareQueue {
                ch: 0,
                queue: 1,
                passive: false,
            });
            if rng.chance(0.5) {
                steps.push(Step::Open);
            }
            steps.push(Step::DeliverAll);
        }
    }
    for index in 0..count {
        if rng.below(1000) < fault_rate {
            steps.push(random_fault(&mut rng));
        } else {
            steps.push(command(&mut rng, index));
        }
    }
    steps
}

fn small(rng: &mut Rng) -> u8 {
    rng.byte() % 8
}

/// A queue index biased to `q0` and `q1`, which the generator declares
/// most: traffic needs queues that exist (the rest still exercise 404s).
fn queue(rng: &mut Rng) -> u8 {
    match rng.below(10) {
        0..=3 => 0,
        4..=6 => 1,
        _ => small(rng),
    }
}

/// A publish's exchange: mostly the default one and `amq.*`, which always
/// exist; sometimes `x0`..`x3`, which may not.
fn publish_exchange(rng: &mut Rng) -> u8 {
    match rng.below(10) {
        0..=5 => 0,
        6..=8 => 1 + rng.byte() % 3,
        _ => 4 + rng.byte() % 4,
    }
}

/// A binding's exchange index (the simulation skips the default one):
/// mostly `amq.*`.
fn bind_exchange(rng: &mut Rng) -> u8 {
    if rng.chance(0.7) {
        rng.byte() % 3
    } else {
        3 + rng.byte() % 4
    }
}

/// One application command, network delivery or clock advance.
fn command(rng: &mut Rng, index: usize) -> Step {
    // Early on, opening channels and declaring things matters most; later
    // the traffic. Closing the connection is rare: it ends the run.
    let early = index < 12;
    let weights = [
        if early { 90 } else { 12 }, // 0 Open
        9,                           // 1 Close
        if early { 60 } else { 15 }, // 2 DeclareQueue
        6,                           // 3 DeleteQueue
        3,                           // 4 PurgeQueue
        if early { 24 } else { 9 },  // 5 BindQueue
        3,                           // 6 UnbindQueue
        if early { 24 } else { 6 },  // 7 DeclareExchange
        2,                           // 8 DeleteExchange
        6,                           // 9 Qos
        24,                          // 10 Consume
        9,                           // 11 Cancel
        9,                           // 12 SelectConfirms
        45,                          // 13 Publish
        15,                          // 14 Get
        12,                          // 15 Ack
        6,                           // 16 Nack
        3,                           // 17 Reject
        2,                           // 18 UpdateSecret
        1,                           // 19 CloseConnection
        72,                          // 20 Deliver
        24,                          // 21 DeliverAll
        21,                          // 22 Advance
        // Requests are outstanding only until the next delivery, so these
        // often find none; their weight is set so that a run of 100 steps
        // abandons or times out a few.
        9,  // 23 Abandon
        14, // 24 Deadline
    ];
    let ch = small(rng);
    match rng.weighted(&weights).unwrap_or(20) {
        0 => Step::Open,
        1 => Step::Close { ch },
        2 => Step::DeclareQueue {
            ch,
            queue: match rng.below(10) {
                0..=3 => 0,
                4..=6 => 1,
                _ => rng.byte() % 5,
            },
            passive: rng.chance(0.15),
        },
        3 => Step::DeleteQueue {
            ch,
            queue: small(rng),
        },
        4 => Step::PurgeQueue {
            ch,
            queue: small(rng),
        },
        5 => Step::BindQueue {
            ch,
            queue: queue(rng),
            exchange: bind_exchange(rng),
            key: small(rng),
        },
        6 => Step::UnbindQueue {
            ch,
            queue: queue(rng),
            exchange: bind_exchange(rng),
            key: small(rng),
        },
        7 => Step::DeclareExchange {
            ch,
            exchange: rng.byte() % 4,
            kind: rng.byte() % 3,
        },
        8 => Step::DeleteExchange {
            ch,
            exchange: rng.byte() % 4,
        },
        9 => Step::Qos {
            ch,
            prefetch: rng.byte() % 4,
        },
        10 => Step::Consume {
            ch,
            queue: queue(rng),
            // Server-named half the time; a few named tags, so that
            // pipelined duplicates (530 from the broker) stay rare.
            tag: if rng.chance(0.5) {
                0
            } else {
                1 + rng.byte() % 12
            },
            no_ack: rng.chance(0.3),
        },
        11 => Step::Cancel {
            consumer: small(rng),
        },
        12 => Step::SelectConfirms { ch },
        13 => Step::Publish {
            ch,
            exchange: publish_exchange(rng),
            // Keys 0 and 1 are `q0` and `q1`: routable on the default
            // exchange.
            key: if rng.chance(0.5) {
                rng.byte() % 2
            } else {
                small(rng)
            },
            mandatory: rng.chance(0.4),
            size: body_size(rng),
            depth: table_depth(rng),
        },
        14 => Step::Get {
            ch,
            queue: queue(rng),
            no_ack: rng.chance(0.4),
        },
        15 => Step::Ack {
            delivery: small(rng),
            multiple: rng.chance(0.3),
        },
        16 => Step::Nack {
            delivery: small(rng),
            multiple: rng.chance(0.3),
            requeue: rng.chance(0.5),
        },
        17 => Step::Reject {
            delivery: small(rng),
            requeue: rng.chance(0.5),
        },
        18 => Step::UpdateSecret,
        19 => Step::CloseConnection,
        20 => Step::Deliver {
            permille: u16::try_from(rng.range(1, 999)).unwrap_or(500),
        },
        21 => Step::DeliverAll,
        23 => Step::Abandon {
            request: small(rng),
        },
        24 => Step::Deadline {
            request: small(rng),
            ms: deadline_ms(rng),
        },
        _ => Step::Advance {
            ms: advance_ms(rng),
        },
    }
}

/// Mostly small bodies; some span several frames at small frame-max.
fn body_size(rng: &mut Rng) -> u32 {
    let size = match rng.below(10) {
        0 => 0,
        1..=6 => rng.range(1, 40),
        7 | 8 => rng.range(41, 2_000),
        _ => rng.range(2_001, 20_000),
    };
    u32::try_from(size).unwrap_or(0)
}

/// Usually no headers; rarely tables nested right at and past the
/// decoder's default limit of 32.
fn table_depth(rng: &mut Rng) -> u8 {
    match rng.below(200) {
        0 => 33,
        1 => 32,
        2..=30 => 1 + rng.byte() % 3,
        _ => 0,
    }
}

/// A request's deadline: due at once now and then, mostly within the
/// clock advances' reach so that replies and deadlines race.
fn deadline_ms(rng: &mut Rng) -> u32 {
    let ms = match rng.below(10) {
        0 | 1 => rng.range(0, 5),
        2..=6 => rng.range(5, 500),
        _ => rng.range(500, 5_000),
    };
    u32::try_from(ms).unwrap_or(0)
}

/// Mostly short, sometimes past heartbeat and close deadlines.
fn advance_ms(rng: &mut Rng) -> u32 {
    let ms = match rng.below(10) {
        0..=5 => rng.range(1, 300),
        6..=8 => rng.range(300, 3_000),
        _ => rng.range(3_000, 20_000),
    };
    u32::try_from(ms).unwrap_or(1)
}
