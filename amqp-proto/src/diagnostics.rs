//! What the core tells an operator, through `tracing` with the `tracing`
//! feature (off by default; the adapters turn it on with theirs), and
//! nothing at all without it: each function here compiles to an empty
//! body then, so the call sites stay free of `cfg`.
//!
//! | target | level | what |
//! |---|---|---|
//! | `amqp::frames` | TRACE | one event per frame received and per method or publish sent: channel, kind, method name (`basic.deliver`), sizes; never a payload |
//! | `amqp::heartbeat` | TRACE | heartbeats sent and received |
//! | `amqp::protocol` | WARN | the server broke the protocol and the core closes the connection: the reply code and the rule, once per connection |
//!
//! The core reads no clock and does no IO; emitting an event is neither
//! (the subscriber the application installed does what it does with it).

use crate::spec::constants::ReplyCode;
use crate::spec::Method;

/// True if a subscriber may want frame or heartbeat events: asked before
/// [`frame_received`], so that a frame's event costs one comparison when
/// nobody listens at TRACE.
#[inline]
pub(crate) fn frames_wanted() -> bool {
    #[cfg(feature = "tracing")]
    return tracing::level_enabled!(tracing::Level::TRACE);
    #[cfg(not(feature = "tracing"))]
    false
}

/// A frame read from the server's bytes, reported from the decoder's
/// view of it (type, channel, payload size, and a method frame's class
/// and method ids): scalars only, so that the frame itself is neither
/// built nor copied for its event. Called only when [`frames_wanted`].
#[cold]
#[inline(never)]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn frame_received(frame_type: u8, channel: u16, size: u32, method: Option<(u16, u16)>) {
    #[cfg(feature = "tracing")]
    match frame_type {
        crate::spec::constants::FRAME_METHOD => {
            let name = method
                .and_then(|(class_id, method_id)| Method::name_of(class_id, method_id))
                .unwrap_or("unknown");
            tracing::trace!(
                target: "amqp::frames",
                direction = "receive",
                channel,
                kind = "method",
                method = name,
                size,
            );
        }
        crate::spec::constants::FRAME_HEADER => tracing::trace!(
            target: "amqp::frames",
            direction = "receive",
            channel,
            kind = "header",
            size,
        ),
        crate::spec::constants::FRAME_BODY => tracing::trace!(
            target: "amqp::frames",
            direction = "receive",
            channel,
            kind = "body",
            size,
        ),
        crate::spec::constants::FRAME_HEARTBEAT => {
            tracing::trace!(target: "amqp::heartbeat", direction = "receive", "heartbeat");
        }
        _ => tracing::trace!(target: "amqp::frames", direction = "receive", kind = "other"),
    }
}

/// A method frame queued for sending (asked only when [`frames_wanted`]).
#[cold]
#[inline(never)]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn method_sent(channel: u16, method: &Method) {
    #[cfg(feature = "tracing")]
    tracing::trace!(
        target: "amqp::frames",
        direction = "transmit",
        channel,
        kind = "method",
        method = method.name(),
    );
}

/// A publish queued for sending: its method, header and `frames` frames
/// (asked only when [`frames_wanted`]).
#[cold]
#[inline(never)]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn publish_sent(channel: u16, body_size: u64, frames: usize) {
    #[cfg(feature = "tracing")]
    tracing::trace!(
        target: "amqp::frames",
        direction = "transmit",
        channel,
        kind = "method",
        method = "basic.publish",
        body_size,
        frames,
    );
}

/// A heartbeat queued for sending.
#[inline]
pub(crate) fn heartbeat_sent() {
    #[cfg(feature = "tracing")]
    tracing::trace!(target: "amqp::heartbeat", direction = "transmit", "heartbeat");
}

/// The server broke the protocol; the core closes the connection with
/// `code`.
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn protocol_violation(code: ReplyCode, rule: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "amqp::protocol",
        reply_code = code.0,
        error.type = code.name().unwrap_or("_OTHER"),
        rule,
        "protocol violation by the server; closing the connection"
    );
}
