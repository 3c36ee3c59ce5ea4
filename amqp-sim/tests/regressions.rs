//! Shrunk failing runs found by the seed campaign, kept as regression
//! tests (`cargo run -p amqp-sim -- --shrink N` prints them; the seed still
//! chooses the broker's and the client's settings). Each asserts the
//! correct behaviour; each failed before its fix in the core (issue #13).

use amqp_sim::{check_steps, Malformed::*, Options, Step, Step::*};

/// The steps must keep every invariant, also when re-run and re-split.
fn passes(seed: u64, steps: &[Step]) {
    passes_ignoring(seed, steps, &[]);
}

/// The same, going on past the `ignored` invariants: for a second symptom
/// of a bug that another invariant reports first.
fn passes_ignoring(seed: u64, steps: &[Step], ignored: &'static [&'static str]) {
    let options = Options {
        ignore: ignored,
        ..Options::default()
    };
    if let Err(failure) = check_steps(seed, steps, &options) {
        panic!("{failure}\n{}", failure.trace.join("\n"));
    }
}

/// Bug 1: the application closes a channel while a content is half received;
/// the close-ok after the body must close the channel, not the connection.
///
/// Seed 2, false-positive-close: the broker behaved, the client closed with 505 (unexpected-frame)
#[test]
fn bug_1_channel_close_during_content() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        Deliver { permille: 651 },
        Deliver { permille: 56 },
        Deliver { permille: 782 },
        Deliver { permille: 366 },
        Open,
        Publish {
            ch: 1,
            exchange: 0,
            key: 4,
            mandatory: true,
            size: 12225,
            depth: 0,
        },
        Deliver { permille: 767 },
        Close { ch: 0 },
    ];
    passes(2, &steps);
}

/// Bug 2: a method between a content-carrying method and its header must
/// close the connection with 505 (spec 4.2.6).
///
/// Seed 232, malformed-reaction: after MethodBeforeHeader the client owed Close(505); it sent close None (13 bytes), closed: false
#[test]
fn bug_2_method_between_content_method_and_header() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        Inject(MethodBeforeHeader),
        Publish {
            ch: 7,
            exchange: 0,
            key: 1,
            mandatory: true,
            size: 32,
            depth: 0,
        },
    ];
    passes(232, &steps);
}

/// Bug 2, its second symptom (found with `--ignore malformed-reaction,delivery-mismatch`):
/// the method that replaces a get-ok leaves the basic.get unresolved, even
/// when the connection closes.
///
/// Seed 1883, unresolved-at-close: request 7 (basic.get on channel 1) never resolved
#[test]
fn bug_2_replaced_get_is_never_resolved() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 0,
            queue: 1,
            passive: false,
        },
        Open,
        Open,
        Consume {
            ch: 2,
            queue: 1,
            tag: 4,
            no_ack: false,
        },
        Close { ch: 5 },
        Consume {
            ch: 1,
            queue: 1,
            tag: 8,
            no_ack: false,
        },
        ServerCancel { consumer: 7 },
        Publish {
            ch: 7,
            exchange: 0,
            key: 1,
            mandatory: true,
            size: 0,
            depth: 0,
        },
        Inject(MethodBeforeHeader),
        Get {
            ch: 3,
            queue: 1,
            no_ack: true,
        },
        DeliverAll,
    ];
    passes_ignoring(1883, &steps, &["malformed-reaction", "delivery-mismatch"]);
}

/// Bug 6: a reordered consume-ok for a named consumer resolves the pending
/// server-named consume before it.
///
/// Seed 7, reply-mismatch: request 7 (basic.consume) on channel 2 got BasicConsumeOk(BasicConsumeOk { consumer_tag: "c1" }); the broker answered Some((BasicConsumeOk(BasicConsumeOk { consumer_tag: "amq.ctag-2" }), None))
#[test]
fn bug_6_named_tag_given_to_server_named_consume() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 7,
            queue: 2,
            passive: false,
        },
        Consume {
            ch: 1,
            queue: 1,
            tag: 0,
            no_ack: true,
        },
        Deliver { permille: 872 },
        Open,
        DeclareQueue {
            ch: 5,
            queue: 0,
            passive: false,
        },
        Deliver { permille: 322 },
        Consume {
            ch: 4,
            queue: 6,
            tag: 0,
            no_ack: false,
        },
        Consume {
            ch: 2,
            queue: 0,
            tag: 0,
            no_ack: false,
        },
        Consume {
            ch: 3,
            queue: 2,
            tag: 1,
            no_ack: false,
        },
        DeliverAll,
    ];
    passes(7, &steps);
}

/// Bug 6: two pipelined server-named consumes, the first consume-ok held back
/// by the queue: the first request gets the second one's tag.
///
/// Seed 260, reply-mismatch: request 14 (basic.consume) on channel 2 got BasicConsumeOk(BasicConsumeOk { consumer_tag: "amq.ctag-4" }); the broker answered Some((BasicConsumeOk(BasicConsumeOk { consumer_tag: "amq.ctag-3" }), None))
#[test]
fn bug_6_server_named_consumes_swap_tags() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        Open,
        DeclareQueue {
            ch: 4,
            queue: 1,
            passive: false,
        },
        Get {
            ch: 4,
            queue: 2,
            no_ack: false,
        },
        Consume {
            ch: 3,
            queue: 1,
            tag: 0,
            no_ack: false,
        },
        DeliverAll,
        Cancel { consumer: 2 },
        Get {
            ch: 6,
            queue: 7,
            no_ack: false,
        },
        DeliverAll,
        Open,
        Open,
        Consume {
            ch: 3,
            queue: 1,
            tag: 0,
            no_ack: true,
        },
        Consume {
            ch: 6,
            queue: 1,
            tag: 1,
            no_ack: false,
        },
        Open,
        DeclareQueue {
            ch: 1,
            queue: 3,
            passive: false,
        },
        Close { ch: 3 },
        Consume {
            ch: 1,
            queue: 1,
            tag: 0,
            no_ack: true,
        },
        DeliverAll,
        Consume {
            ch: 0,
            queue: 3,
            tag: 0,
            no_ack: false,
        },
    ];
    passes(260, &steps);
}

/// Bug 6, as a false positive: the named consume-ok resolves the server-named
/// consume, and the server-named one then finds no request (503).
///
/// Seed 251, false-positive-close: the broker behaved, the client closed with 503 (command-invalid)
#[test]
fn bug_6_named_consume_ok_taken_then_refused() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 0,
            queue: 0,
            passive: false,
        },
        DeclareQueue {
            ch: 0,
            queue: 1,
            passive: false,
        },
        Consume {
            ch: 3,
            queue: 0,
            tag: 0,
            no_ack: false,
        },
        Open,
        Consume {
            ch: 1,
            queue: 4,
            tag: 0,
            no_ack: true,
        },
        Consume {
            ch: 0,
            queue: 7,
            tag: 2,
            no_ack: false,
        },
        Open,
        Deliver { permille: 944 },
        Consume {
            ch: 2,
            queue: 1,
            tag: 9,
            no_ack: false,
        },
    ];
    passes(251, &steps);
}

/// close() after a quiet minute: its deadline counts from the last input,
/// so the next timeout ends it at once instead of waiting for close-ok.
///
/// Seed 29, close-timeout-early: close timed out 0 ms after close() (close timeout 5s)
#[test]
fn close_deadline_counts_from_now() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        Advance { ms: 7228 },
        CloseConnection,
        Advance { ms: 5197 },
    ];
    passes(29, &steps);
}

/// A message whose headers nest 33 tables: the client must never send what
/// it would refuse to read (its encoder now refuses it), and such a message
/// from elsewhere refuses that message alone.
///
/// Seed 220, false-positive-close: the broker behaved, the client closed with 506 (resource-error)
#[test]
fn deep_header_tables_are_accepted() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        Publish {
            ch: 4,
            exchange: 0,
            key: 1,
            mandatory: true,
            size: 0,
            depth: 33,
        },
    ];
    passes(220, &steps);
}

/// The server answers the protocol header with `AMQP\x01\x01\x00\x0a`: in
/// one read the client closes silently; split, it takes `AMQP\x01` for a
/// frame of type 65 and writes a connection.close.
///
/// Seed 1608, split-invariance: with the server's bytes re-split, malformed-reaction broke: after RejectedHeader the client owed Silent; it sent close None (40 bytes), closed: true
#[test]
fn rejected_protocol_header_any_split() {
    let steps = vec![];
    passes(1608, &steps);
}

/// Six bytes of that header in one read are a bad frame (501, a close is
/// written and the client waits for close-ok); re-split, the read after the
/// decode error ends the connection at once.
///
/// Seed 86288, split-invariance: re-splitting the server's bytes changed the trace (ending "protocol violation by the server (501 (frame-error)): unknown frame type 65" vs "protocol violation by the server (501 (frame-error)): unknown frame type 65")
#[test]
fn decode_error_aftermath_any_split() {
    let steps = vec![Deliver { permille: 816 }];
    passes(86288, &steps);
}

/// A calm run that exercises most commands keeps every invariant.
#[test]
fn a_calm_run_passes() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 0,
            queue: 0,
            passive: false,
        },
        SelectConfirms { ch: 0 },
        Consume {
            ch: 0,
            queue: 0,
            tag: 1,
            no_ack: false,
        },
        DeliverAll,
        Publish {
            ch: 0,
            exchange: 0,
            key: 0,
            mandatory: true,
            size: 5000,
            depth: 1,
        },
        Publish {
            ch: 0,
            exchange: 0,
            key: 2,
            mandatory: true,
            size: 3,
            depth: 0,
        },
        Deliver { permille: 500 },
        Advance { ms: 2500 },
        DeliverAll,
        Ack {
            delivery: 0,
            multiple: true,
        },
        Get {
            ch: 0,
            queue: 0,
            no_ack: false,
        },
        DeliverAll,
    ];
    passes(2, &steps);
}

/// An oracle mistake the campaign found, kept so the oracle keeps it
/// right: the consume of `c11` is abandoned, the broker cancels `c11`
/// itself (consumer-cancel-notify) and a second consume takes the tag
/// again. The core rightly requeued the delivery that came before the
/// second consume-ok; the oracle judged it by the tag, after the second
/// consume had revived it, and called the give-back wanted. It now judges
/// a delivery by the consume that made its consumer (the broker logs it).
///
/// Seed 583069, given-back-wanted: the core requeued message 1 on channel 1 (a delivery to c11), which nobody gave up
#[test]
fn abandoned_consume_tag_taken_again() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 0,
            queue: 0,
            passive: false,
        },
        DeclareQueue {
            ch: 0,
            queue: 1,
            passive: false,
        },
        Publish {
            ch: 6,
            exchange: 0,
            key: 0,
            mandatory: true,
            size: 21,
            depth: 0,
        },
        SelectConfirms { ch: 0 },
        Consume {
            ch: 1,
            queue: 0,
            tag: 11,
            no_ack: false,
        },
        Abandon { request: 4 },
        ServerCancel { consumer: 6 },
        Consume {
            ch: 1,
            queue: 5,
            tag: 11,
            no_ack: false,
        },
    ];
    passes(583069, &steps);
}

/// A network-model mistake the campaign found once the new steps thinned
/// out the deliveries: the broker answers every request at once, which
/// puts its heartbeat off, but no step delivers the answers, so the
/// client (5 s heartbeat) hears nothing for 10 s from a live broker. The
/// network now carries a live broker's bytes within half an interval.
///
/// Seed 387318, false-heartbeat-timeout: heartbeat timeout although the broker was live
#[test]
fn undelivered_replies_do_not_silence_a_live_broker() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Advance { ms: 2282 },
        Open,
        Advance { ms: 2453 },
        Publish {
            ch: 5,
            exchange: 1,
            key: 1,
            mandatory: true,
            size: 11871,
            depth: 1,
        },
        Advance { ms: 2051 },
        Open,
        Advance { ms: 1667 },
        DeclareQueue {
            ch: 6,
            queue: 0,
            passive: true,
        },
        Advance { ms: 2486 },
    ];
    passes(387318, &steps);
}

/// The core reported a refused delivery to a consumer nobody waits for:
/// the consume times out, its consume-ok comes late, the core cancels the
/// consumer, and the message already delivered to it has a headers table
/// deeper than this client reads (2). It was rejected, rightly, but an
/// `Event::MessageRefused` named the consumer the application gave up
/// (`amqp-proto/tests/deadlines.rs` has it by hand).
///
/// Seed 1040, abandoned-consumer: MessageRefused for delivery 1 to amq.ctag-1 on channel 1, whose basic.consume (request 3) was given up
#[test]
fn refused_delivery_to_a_timed_out_consume() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 0,
            queue: 1,
            passive: false,
        },
        Publish {
            ch: 6,
            exchange: 0,
            key: 1,
            mandatory: false,
            size: 11,
            depth: 3,
        },
        Consume {
            ch: 1,
            queue: 1,
            tag: 0,
            no_ack: true,
        },
        Deadline {
            request: 5,
            ms: 294,
        },
        Advance { ms: 298 },
    ];
    passes(1040, &steps);
}

/// Recovery: until `Recovered`, commands on a recovered connection fail
/// with `Recovering`, its handshake included (the core said `NotOpen`
/// there, while `publish_readiness` said `Recovering`); fixed in
/// `Connection::check_open`, by hand in `amqp-proto/tests/recovery.rs`.
///
/// Seed 11, used-while-recovering: Open before Recovered was refused with "the connection is not open yet", not Recovering
#[test]
fn recovery_commands_wait_during_the_handshake() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        ServerCloseConnection,
        DeliverAll,
        Open,
    ];
    passes(11, &steps);
}

/// Recovery: with channel-max 2 and the application on channels 1 and 2,
/// the replay opened its declarations channel on id 2, an open channel
/// (RabbitMQ: connection error 504, so every attempt failed alike); the
/// declarations now go first, on a channel closed before the
/// application's reopen.
///
/// Seed 8641, client-protocol: client reopened channel 2
#[test]
fn recovery_declarations_when_the_application_has_every_channel_id() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 0,
            queue: 1,
            passive: false,
        },
        Open,
        DeliverAll,
        Cut,
        Ack {
            delivery: 7,
            multiple: true,
        },
    ];
    passes(8641, &steps);
}

/// A cancel-ok that comes after the consume-ok of a later consume with the
/// same tag (the model defers both; RabbitMQ can too, each from its
/// queue's process) made the new consumer unknown to the core, which then
/// counted its `no_ack` deliveries unsettled. Found by the 400,000-seed
/// campaign after recovery was added; the core on main had it too.
///
/// Seed 458508, unsettled-count: the client counts 2 unsettled, the broker holds 1
#[test]
fn a_late_cancel_ok_keeps_a_new_consumer_of_the_same_tag() {
    let steps = vec![
        DeliverAll,
        DeliverAll,
        DeliverAll,
        Open,
        DeclareQueue {
            ch: 0,
            queue: 1,
            passive: false,
        },
        Open,
        DeclareQueue {
            ch: 3,
            queue: 0,
            passive: false,
        },
        Open,
        Publish {
            ch: 6,
            exchange: 0,
            key: 1,
            mandatory: true,
            size: 9,
            depth: 0,
        },
        Consume {
            ch: 0,
            queue: 0,
            tag: 1,
            no_ack: false,
        },
        Consume {
            ch: 1,
            queue: 6,
            tag: 2,
            no_ack: true,
        },
        DeliverAll,
        SelectConfirms { ch: 7 },
        Publish {
            ch: 7,
            exchange: 0,
            key: 0,
            mandatory: true,
            size: 1180,
            depth: 1,
        },
        Advance { ms: 7064 },
        Open,
        Consume {
            ch: 7,
            queue: 0,
            tag: 1,
            no_ack: true,
        },
        Cancel { consumer: 3 },
        Cancel { consumer: 4 },
        Open,
        Deliver { permille: 690 },
        UnbindQueue {
            ch: 4,
            queue: 0,
            exchange: 1,
            key: 6,
        },
        Consume {
            ch: 4,
            queue: 1,
            tag: 1,
            no_ack: true,
        },
    ];
    passes(458508, &steps);
}
