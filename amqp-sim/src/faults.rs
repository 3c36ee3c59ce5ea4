//! The fault half of the generator: transport cuts, stalls, the broker's
//! own closes and cancels, flow and blocking, and malformed input.

use crate::rng::Rng;
use crate::step::{Malformed, Step};

/// One fault step. Malformed input is rarer than the rest: it ends the
/// connection, so runs with it exercise less of everything else.
pub(crate) fn random_fault(rng: &mut Rng) -> Step {
    let ch = rng.byte() % 8;
    let weights = [
        3, // 0 Cut
        2, // 1 Stall
        6, // 2 ServerCloseChannel
        2, // 3 ServerCloseConnection
        6, // 4 ServerCancel
        6, // 5 Flow
        4, // 6 Blocked
        8, // 7 Inject
        8, // 8 a delay: a long advance with bytes in flight
    ];
    match rng.weighted(&weights).unwrap_or(8) {
        0 => Step::Cut,
        1 => Step::Stall,
        2 => Step::ServerCloseChannel { ch },
        3 => Step::ServerCloseConnection,
        4 => Step::ServerCancel { consumer: ch },
        5 => Step::Flow {
            ch,
            active: rng.chance(0.5),
        },
        6 => Step::Blocked {
            on: rng.chance(0.6),
        },
        7 => Step::Inject(random_malformed(rng, ch)),
        _ => Step::Advance {
            ms: u32::try_from(rng.range(1_000, 12_000)).unwrap_or(1_000),
        },
    }
}

fn random_malformed(rng: &mut Rng, ch: u8) -> Malformed {
    match rng.below(10) {
        0 => Malformed::BadFrameEnd,
        1 => Malformed::Oversize,
        2 => Malformed::UnknownFrameType,
        3 => Malformed::HeartbeatOnChannel,
        4 => Malformed::UnknownMethod,
        5 => Malformed::ChannelNotOpen,
        6 => Malformed::BodyWithoutHeader { ch },
        7 => Malformed::MethodBeforeHeader,
        8 => Malformed::ClientOnlyMethod { ch },
        _ => Malformed::UnknownConfirm { ch },
    }
}
