//! Sequences that once broke the core's own promises ("every outstanding
//! request is resolved", "the prescribed close code", "the same outcome
//! whatever the split of the input"), each on the scripted broker and the
//! simulated clock. Every test here failed before its fix (issue #13).

mod support;

use std::time::Duration;

use amqp_proto::codec::{
    encode_header_frame, encode_method_frame, BasicProperties, ContentHeader, FieldTable,
    FieldValue, Frame,
};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, ConfirmOutcome, ConnectionError, Event, Failure, Initiator, Topology};
use bytes::{BufMut, BytesMut};
use support::Peer;

fn open_peer(config: Config, heartbeat: u16) -> Peer {
    let mut peer = Peer::new(config);
    peer.handshake(heartbeat);
    peer
}

/// The reply code of the one `connection.close` the client sent.
fn close_code(peer: &mut Peer) -> u16 {
    let sent = peer.expect_methods(&["connection.close"]);
    match &sent[0].1 {
        Method::ConnectionClose(close) => close.reply_code,
        other => panic!("expected connection.close, got {other:?}"),
    }
}

fn deliver(consumer_tag: &str, delivery_tag: u64) -> spec::BasicDeliver {
    spec::BasicDeliver {
        consumer_tag: consumer_tag.into(),
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
    }
}

fn get_ok(delivery_tag: u64) -> spec::BasicGetOk {
    spec::BasicGetOk {
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
        message_count: 0,
    }
}

fn method_bytes(channel: u16, method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method_frame(channel, &method.into(), u32::MAX, &mut out).unwrap();
    out
}

fn header_bytes(channel: u16, body_size: u64) -> BytesMut {
    let mut out = BytesMut::new();
    let header = ContentHeader::basic(body_size, BasicProperties::default());
    encode_header_frame(channel, &header, u32::MAX, &mut out).unwrap();
    out
}

fn body_bytes(channel: u16, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    Frame::Body {
        channel,
        payload: bytes::Bytes::copy_from_slice(body),
    }
    .encode(&mut out, u32::MAX)
    .unwrap();
    out
}

fn request(peer: &mut Peer, channel: u16, method: impl Into<Method>) -> amqp_proto::RequestId {
    peer.connection
        .channel(channel)
        .unwrap()
        .request(method)
        .unwrap()
        .expect("a request with a reply")
}

// 1. A channel closed by the application while a message is half received.
#[test]
fn closing_a_channel_mid_content_closes_only_the_channel() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    peer.feed(&method_bytes(channel, deliver("c1", 1)));
    peer.feed(&header_bytes(channel, 10));
    peer.connection
        .channel(channel)
        .unwrap()
        .close(ReplyCode::REPLY_SUCCESS, "done")
        .unwrap();
    peer.expect_methods(&["channel.close"]);
    // The server had sent the body before it read our close.
    peer.feed(&body_bytes(channel, b"0123456789"));
    peer.send(channel, spec::ChannelCloseOk {});
    assert!(peer.client_frames().is_empty(), "nothing more is sent");
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::ChannelClosed { channel: id, .. }] if *id == channel),
        "events: {events:?}"
    );
    assert!(peer.connection.is_open(), "the connection is intact");
    // The id is free and usable again.
    assert_eq!(peer.open_channel(), channel);
}

// 1, the other order: the close crosses a deliver whose header and body
// arrive after our close was sent.
#[test]
fn a_content_arriving_after_our_channel_close_is_discarded_whole() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    peer.connection
        .channel(channel)
        .unwrap()
        .close(ReplyCode::REPLY_SUCCESS, "done")
        .unwrap();
    peer.expect_methods(&["channel.close"]);
    peer.send_content(
        channel,
        deliver("c1", 1),
        BasicProperties::default(),
        b"late",
    );
    peer.send(channel, spec::ChannelCloseOk {});
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::ChannelClosed { .. }]),
        "events: {events:?}"
    );
    assert!(peer.connection.is_open());
}

// 2. A method between a content-carrying method and its content header.
#[test]
fn a_method_where_a_content_header_is_due_is_an_unexpected_frame() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    let get = request(&mut peer, channel, spec::BasicGet::default());
    peer.expect_methods(&["basic.get"]);
    peer.feed(&method_bytes(channel, get_ok(1)));
    // A deliver where the get-ok's header is due.
    peer.feed(&method_bytes(channel, deliver("c1", 2)));
    assert_eq!(close_code(&mut peer), ReplyCode::UNEXPECTED_FRAME.0);
    let events = peer.events();
    assert!(
        events.iter().any(|event| matches!(
            event,
            Event::RequestFailed { request, failure: Failure::Connection(_), .. } if *request == get
        )),
        "the basic.get is resolved: {events:?}"
    );
    peer.send(0, spec::ConnectionCloseOk {});
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Closed(ConnectionError::ProtocolViolation { .. })]
    ));
}

// 2, and the header of the wrong class (spec 4.2.6: 505 as well).
#[test]
fn a_content_header_of_another_class_is_an_unexpected_frame() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    peer.feed(&method_bytes(channel, deliver("c1", 1)));
    let mut header = header_bytes(channel, 0);
    // Class id sits right after the 7-byte frame header: make it 50 (queue).
    header[7] = 0;
    header[8] = 50;
    peer.feed(&header);
    let code = close_code(&mut peer);
    assert_eq!(code, ReplyCode::UNEXPECTED_FRAME.0);
}

// 3. `close` takes the current time: its deadline runs from the call.
#[test]
fn the_close_deadline_runs_from_the_close_call() {
    let mut config = Config::default();
    config.close_timeout = Duration::from_secs(5);
    let mut peer = open_peer(config, 60);
    peer.advance(Duration::from_secs(30));
    let now = peer.now;
    peer.connection
        .close(ReplyCode::REPLY_SUCCESS, "bye", now)
        .unwrap();
    peer.expect_methods(&["connection.close"]);
    assert_eq!(
        peer.connection.poll_timeout(),
        Some(now + Duration::from_secs(5))
    );
    peer.advance(Duration::from_millis(4_999));
    assert!(peer.events().is_empty(), "still waiting for close-ok");
    peer.send(0, spec::ConnectionCloseOk {});
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Closed(ConnectionError::Closed(_))]
    ));
}

// 3. What is written is stamped with the time it was taken for writing,
// not with the time of the last input.
#[test]
fn a_write_after_an_idle_spell_postpones_the_next_heartbeat() {
    let mut peer = open_peer(Config::default(), 60);
    peer.advance(Duration::from_secs(50));
    let channel = peer.connection.open_channel().unwrap();
    let now = peer.now;
    let mut written = 0;
    while let Some(chunk) = peer.connection.poll_transmit(now) {
        written += chunk.len();
    }
    assert!(written > 0);
    // Next heartbeat: half an interval after that write (not after the
    // heartbeat at 30 s); the server is dead two intervals after the last
    // thing it sent (at time zero).
    assert_eq!(
        peer.connection.poll_timeout(),
        Some(peer.start + Duration::from_secs(80))
    );
    let _ = channel;
}

// 4. The server's protocol header, in any split.
#[test]
fn a_protocol_header_reply_is_recognised_in_any_split() {
    let reply = *b"AMQP\x01\x01\x00\x0a";
    let outcome = |splits: &[usize]| {
        let mut peer = Peer::new(Config::default());
        peer.client_frames();
        let mut at = 0;
        for &end in splits.iter().chain(std::iter::once(&reply.len())) {
            peer.feed(&reply[at..end]);
            at = end;
        }
        (peer.events(), peer.transmitted())
    };
    let whole = outcome(&[]);
    assert!(
        matches!(
            whole.0.as_slice(),
            [Event::Closed(ConnectionError::ProtocolViolation {
                error: amqp_proto::ProtocolViolation::Decode(
                    amqp_proto::DecodeError::UnsupportedProtocol { .. }
                )
            })]
        ),
        "{whole:?}"
    );
    for split in 1..reply.len() {
        assert_eq!(outcome(&[split]), whole, "split at {split}");
    }
    assert_eq!(outcome(&[1, 2, 3, 4, 5, 6, 7]), whole);
}

/// A topology with channel 1 (confirm mode) and one queue: enough for a
/// replay that has requests of its own.
fn recorded() -> Topology {
    let mut config = Config::default();
    config.record_topology = true;
    let mut peer = open_peer(config, 0);
    let channel = peer.open_channel();
    request(&mut peer, channel, spec::ConfirmSelect::default());
    peer.expect_methods(&["confirm.select"]);
    peer.send(channel, spec::ConfirmSelectOk {});
    request(
        &mut peer,
        channel,
        spec::QueueDeclare {
            queue: "jobs".into(),
            ..Default::default()
        },
    );
    peer.expect_methods(&["queue.declare"]);
    peer.send(
        channel,
        spec::QueueDeclareOk {
            queue: "jobs".into(),
            message_count: 0,
            consumer_count: 0,
        },
    );
    peer.events();
    peer.connection.handle_transport_closed("cut");
    peer.events();
    peer.connection.topology().cloned().unwrap()
}

// 5. Closing during a replay reports nothing the application did not ask.
#[test]
fn closing_during_a_replay_fails_none_of_the_replays_own_requests() {
    let start = std::time::Instant::now();
    let mut peer = Peer::new(Config::default());
    peer.connection = amqp_proto::Connection::recover(Config::default(), recorded(), start);
    peer.handshake(0);
    // The replay reopened channel 1 and waits for its open-ok.
    peer.expect_methods(&["channel.open"]);
    let now = peer.now;
    peer.connection
        .close(ReplyCode::REPLY_SUCCESS, "bye", now)
        .unwrap();
    peer.expect_methods(&["connection.close"]);
    peer.send(0, spec::ConnectionCloseOk {});
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Closed(ConnectionError::Closed(_))]
        ),
        "events: {events:?}"
    );
}

// 5, the same for a protocol violation during the replay.
#[test]
fn a_violation_during_a_replay_fails_none_of_the_replays_own_requests() {
    let start = std::time::Instant::now();
    let mut peer = Peer::new(Config::default());
    peer.connection = amqp_proto::Connection::recover(Config::default(), recorded(), start);
    peer.handshake(0);
    peer.expect_methods(&["channel.open"]);
    peer.send(7, spec::ChannelOpenOk::default());
    assert_eq!(close_code(&mut peer), ReplyCode::CHANNEL_ERROR.0);
    let events = peer.events();
    assert!(events.is_empty(), "events: {events:?}");
}

// 6. consume-ok is matched by its exact tag before an unnamed consume.
#[test]
fn a_named_consume_ok_never_answers_an_unnamed_consume() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    let consume = |queue: &str, tag: &str| spec::BasicConsume {
        queue: queue.into(),
        consumer_tag: tag.into(),
        ..Default::default()
    };
    let unnamed = request(&mut peer, channel, consume("a", ""));
    let named = request(&mut peer, channel, consume("b", "mine"));
    peer.expect_methods(&["basic.consume", "basic.consume"]);
    // RabbitMQ sends consume-ok from the queue's process: the second
    // queue answered first.
    let ok = |tag: &str| spec::BasicConsumeOk {
        consumer_tag: tag.into(),
    };
    peer.send(channel, ok("mine"));
    peer.send(channel, ok("amq.ctag-1"));
    let replies: Vec<_> = peer
        .events()
        .into_iter()
        .map(|event| match event {
            Event::Reply {
                request,
                method: Method::BasicConsumeOk(ok),
                ..
            } => (request, ok.consumer_tag.to_string()),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        replies,
        vec![
            (named, "mine".to_owned()),
            (unnamed, "amq.ctag-1".to_owned())
        ]
    );
    assert!(peer.connection.is_open());
}

// 8. "" names the channel's last declared queue; recovery must not replay
// it on another channel.
#[test]
fn an_unnamed_queue_in_bind_and_consume_is_recorded_by_its_name() {
    let mut config = Config::default();
    config.record_topology = true;
    let mut peer = open_peer(config, 0);
    let channel = peer.open_channel();
    request(&mut peer, channel, spec::QueueDeclare::default());
    request(
        &mut peer,
        channel,
        spec::QueueBind {
            exchange: "amq.fanout".into(),
            ..Default::default()
        },
    );
    request(&mut peer, channel, spec::BasicConsume::default());
    peer.expect_methods(&["queue.declare", "queue.bind", "basic.consume"]);
    peer.send(
        channel,
        spec::QueueDeclareOk {
            queue: "amq.gen-1".into(),
            message_count: 0,
            consumer_count: 0,
        },
    );
    peer.send(channel, spec::QueueBindOk {});
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "amq.ctag-1".into(),
        },
    );
    let topology = peer.connection.topology().unwrap();
    let bound: Vec<String> = topology
        .bindings()
        .iter()
        .map(|binding| match binding {
            amqp_proto::recovery::Binding::Queue(bind) => bind.queue.to_string(),
            amqp_proto::recovery::Binding::Exchange(bind) => bind.destination.to_string(),
        })
        .collect();
    assert_eq!(bound, vec!["amq.gen-1".to_owned()]);
    let consumed: Vec<String> = topology.channels()[0]
        .consumers
        .iter()
        .map(|consume| consume.queue.to_string())
        .collect();
    assert_eq!(consumed, vec!["amq.gen-1".to_owned()]);
}

// 9. frame-max 0 on both sides: a 7-byte header reserves no gigabytes.
#[test]
fn an_unbounded_frame_max_reserves_only_what_arrives() {
    let mut config = Config::default();
    config.frame_max = 0;
    let mut peer = Peer::new(config);
    peer.client_frames();
    peer.open_with_tune(0, 0, 0);
    peer.events();
    let mut header = BytesMut::new();
    header.put_u8(3);
    header.put_u16(1);
    header.put_u32(u32::MAX - 8);
    peer.feed(&header);
    assert!(
        peer.connection.input_buffer().capacity() < 4 << 20,
        "reserved {} bytes for a frame that has not arrived",
        peer.connection.input_buffer().capacity()
    );
}

// Confirms are failed once each when a close interrupts them (the
// simulation's invariant, pinned here for a plain close).
#[test]
fn a_close_fails_each_unconfirmed_publish_once() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    request(&mut peer, channel, spec::ConfirmSelect::default());
    peer.expect_methods(&["confirm.select"]);
    peer.send(channel, spec::ConfirmSelectOk {});
    peer.events();
    for _ in 0..3 {
        peer.connection
            .channel(channel)
            .unwrap()
            .publish(
                &spec::BasicPublish::default(),
                &BasicProperties::default(),
                &b"x"[..],
            )
            .unwrap();
    }
    let now = peer.now;
    peer.connection
        .close(ReplyCode::REPLY_SUCCESS, "bye", now)
        .unwrap();
    let failed = peer
        .events()
        .into_iter()
        .filter(|event| {
            matches!(
                event,
                Event::Confirm {
                    outcome: ConfirmOutcome::Failed(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, 3);
}

/// A confirming channel with three publishes awaiting their confirms.
fn three_unconfirmed() -> (Peer, u16) {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    request(&mut peer, channel, spec::ConfirmSelect::default());
    peer.expect_methods(&["confirm.select"]);
    peer.send(channel, spec::ConfirmSelectOk {});
    peer.events();
    for _ in 0..3 {
        peer.connection
            .channel(channel)
            .unwrap()
            .publish(
                &spec::BasicPublish::default(),
                &BasicProperties::default(),
                &b"x"[..],
            )
            .unwrap();
    }
    peer.client_frames();
    (peer, channel)
}

fn ack(delivery_tag: u64, multiple: bool) -> spec::BasicAck {
    spec::BasicAck {
        delivery_tag,
        multiple,
    }
}

#[test]
fn a_graceful_close_waits_for_every_confirm_then_closes() {
    let (mut peer, channel) = three_unconfirmed();
    let now = peer.now;
    peer.connection
        .close_when_confirmed(
            ReplyCode::REPLY_SUCCESS,
            "done",
            now + Duration::from_secs(5),
            now,
        )
        .unwrap();
    let refused = peer.connection.channel(channel).unwrap().publish(
        &spec::BasicPublish::default(),
        &BasicProperties::default(),
        &b"late"[..],
    );
    assert_eq!(refused, Err(amqp_proto::UsageError::ConnectionClosed));
    assert!(peer.connection.open_channel().is_err());
    assert!(peer.client_frames().is_empty(), "nothing sent yet");

    peer.send(channel, ack(2, true));
    assert!(peer.client_frames().is_empty(), "one confirm still out");
    peer.send(channel, ack(3, false));
    assert_eq!(close_code(&mut peer), 200);
    let acked = peer
        .events()
        .into_iter()
        .filter(|event| {
            matches!(
                event,
                Event::Confirm {
                    outcome: ConfirmOutcome::Ack,
                    ..
                }
            )
        })
        .count();
    assert_eq!(acked, 3, "every publish confirmed, none failed");
    peer.send(0, spec::ConnectionCloseOk {});
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Closed(ConnectionError::Closed(reason))] if reason.initiator == Initiator::Client
    ));
}

#[test]
fn a_graceful_close_gives_up_waiting_at_its_deadline() {
    let (mut peer, channel) = three_unconfirmed();
    let now = peer.now;
    let deadline = now + Duration::from_secs(5);
    peer.connection
        .close_when_confirmed(ReplyCode::REPLY_SUCCESS, "done", deadline, now)
        .unwrap();
    assert_eq!(peer.connection.poll_timeout(), Some(deadline));
    peer.send(channel, ack(1, false));
    peer.advance(Duration::from_secs(5));
    assert_eq!(close_code(&mut peer), 200);
    let failed = peer
        .events()
        .into_iter()
        .filter(|event| {
            matches!(
                event,
                Event::Confirm {
                    outcome: ConfirmOutcome::Failed(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, 2, "what the deadline caught unconfirmed fails once");
}

/// A field table nested `depth` levels deep, as wire bytes (the encoder
/// refuses to write one deeper than a decoder accepts).
fn nested_table(depth: usize) -> Vec<u8> {
    let mut table = vec![0, 0, 0, 0];
    for _ in 1..depth {
        let mut entry = vec![1, b'a', b'F'];
        entry.extend_from_slice(&table);
        table = (entry.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&entry);
    }
    table
}

/// A content header frame whose `headers` property is nested `depth` deep.
fn deep_header_bytes(channel: u16, body_size: u64, depth: usize) -> BytesMut {
    let mut payload = Vec::new();
    payload.extend_from_slice(&60u16.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.extend_from_slice(&body_size.to_be_bytes());
    payload.extend_from_slice(&0x2000u16.to_be_bytes());
    payload.extend_from_slice(&nested_table(depth));
    let mut out = BytesMut::new();
    out.put_u8(2);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out.put_u8(0xCE);
    out
}

fn consume(peer: &mut Peer, channel: u16, tag: &str, no_ack: bool) {
    request(
        peer,
        channel,
        spec::BasicConsume {
            queue: "jobs".into(),
            consumer_tag: tag.into(),
            no_ack,
            ..Default::default()
        },
    );
    peer.expect_methods(&["basic.consume"]);
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: tag.into(),
        },
    );
    peer.events();
}

// 7. One over-deep header refuses that message, not the connection.
#[test]
fn an_over_deep_message_header_refuses_only_that_message() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    consume(&mut peer, channel, "c1", false);
    peer.feed(&method_bytes(channel, deliver("c1", 1)));
    peer.feed(&deep_header_bytes(channel, 4, 33));
    peer.feed(&body_bytes(channel, b"body"));
    let sent = peer.expect_methods(&["basic.reject"]);
    assert_eq!(
        sent[0].1,
        Method::BasicReject(spec::BasicReject {
            delivery_tag: 1,
            requeue: false
        }),
        "rejected without requeue, so no other consumer gets it"
    );
    let events = peer.events();
    match events.as_slice() {
        [Event::MessageRefused(refused)] => {
            assert!(refused.rejected);
            assert_eq!(
                refused.error,
                amqp_proto::DecodeError::TableTooDeep { max: 32 }
            );
            assert!(matches!(
                refused.origin,
                amqp_proto::RefusedOrigin::Delivery {
                    delivery_tag: 1,
                    ..
                }
            ));
        }
        other => panic!("events: {other:?}"),
    }
    // The next message is delivered as usual.
    peer.send_content(channel, deliver("c1", 2), BasicProperties::default(), b"ok");
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Delivery(delivery)] if delivery.delivery_tag == 2
    ));
    assert!(peer.connection.is_open());
    // A header at the limit is still accepted.
    peer.feed(&method_bytes(channel, deliver("c1", 3)));
    peer.feed(&deep_header_bytes(channel, 0, 32));
    assert!(matches!(peer.events().as_slice(), [Event::Delivery(_)]));
}

// 7. A body over the configured maximum: the same, and with no_ack nothing
// is rejected.
#[test]
fn an_over_large_body_refuses_only_that_message() {
    let mut config = Config::default();
    config.max_body_size = 8;
    let mut peer = open_peer(config, 0);
    let channel = peer.open_channel();
    consume(&mut peer, channel, "auto", true);
    peer.send_content(
        channel,
        deliver("auto", 1),
        BasicProperties::default(),
        b"twelve bytes",
    );
    assert!(peer.client_frames().is_empty(), "no_ack: nothing to reject");
    match peer.events().as_slice() {
        [Event::MessageRefused(refused)] => {
            assert!(!refused.rejected);
            assert_eq!(
                refused.error,
                amqp_proto::DecodeError::BodyTooLarge { size: 12, max: 8 }
            );
        }
        other => panic!("events: {other:?}"),
    }
    assert!(peer.connection.is_open());
}

// 7. A basic.get answered with such a message is resolved, not lost.
#[test]
fn a_refused_get_ok_resolves_the_get() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    let get = request(&mut peer, channel, spec::BasicGet::default());
    peer.expect_methods(&["basic.get"]);
    peer.feed(&method_bytes(channel, get_ok(7)));
    peer.feed(&deep_header_bytes(channel, 0, 40));
    peer.expect_methods(&["basic.reject"]);
    assert!(matches!(
        peer.events().as_slice(),
        [Event::RequestFailed { request, failure: Failure::MessageRefused(_), .. }] if *request == get
    ));
}

// 7. The encoder caps depth where the decoder does.
#[test]
fn a_table_deeper_than_a_decoder_accepts_is_not_sent() {
    let mut peer = open_peer(Config::default(), 0);
    let channel = peer.open_channel();
    let mut table = FieldTable::new();
    for _ in 0..32 {
        let mut outer = FieldTable::new();
        outer.insert("a", table);
        table = outer;
    }
    // 33 levels with the headers table itself.
    let properties = BasicProperties::default().headers(table);
    let refused = peer.connection.channel(channel).unwrap().publish(
        &spec::BasicPublish::default(),
        &properties,
        &b"x"[..],
    );
    assert_eq!(
        refused,
        Err(amqp_proto::UsageError::Encode(
            amqp_proto::EncodeError::TableTooDeep { max: 32 }
        ))
    );
    assert!(peer.client_frames().is_empty(), "nothing was queued");
}

// Hardening: what buffered events hold bounds reading, not only how many
// there are (a field table decodes to many times its wire size).
#[test]
fn buffered_bytes_bound_reading_as_well_as_the_event_count() {
    let mut config = Config::default();
    config.max_buffered_bytes = 64 * 1024;
    let mut peer = open_peer(config, 0);
    let channel = peer.open_channel();
    let mut headers = FieldTable::new();
    for index in 0..300 {
        headers.insert(format!("h{index}").as_str(), FieldValue::Void);
    }
    let properties = BasicProperties::default().headers(headers);
    let mut deliveries = 0;
    while peer.connection.wants_input() {
        deliveries += 1;
        peer.send_content(
            channel,
            deliver("c1", deliveries),
            properties.clone(),
            b"tiny",
        );
        assert!(deliveries < 1_000, "reading never stopped");
    }
    // About 1.2 KiB on the wire each, but far more once decoded.
    assert!(deliveries < 20, "stopped after {deliveries} deliveries");
    peer.events();
    assert!(
        peer.connection.wants_input(),
        "reading resumes once drained"
    );
}

// Hardening: partial bodies on many channels have a connection-wide cap.
#[test]
fn bodies_in_progress_are_capped_across_channels() {
    let mut config = Config::default();
    config.max_bodies_in_progress = 1_000;
    let mut peer = open_peer(config, 0);
    let first = peer.open_channel();
    let second = peer.open_channel();
    peer.feed(&method_bytes(first, deliver("c1", 1)));
    peer.feed(&header_bytes(first, 600));
    peer.feed(&method_bytes(second, deliver("c2", 1)));
    peer.feed(&header_bytes(second, 600));
    peer.feed(&body_bytes(second, &[0; 600]));
    peer.feed(&body_bytes(first, &[1; 600]));
    peer.expect_methods(&["basic.reject"]);
    let events = peer.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::MessageRefused(refused), Event::Delivery(kept)]
                if refused.channel == second
                    && matches!(refused.error, amqp_proto::DecodeError::BodiesInProgressTooLarge { .. })
                    && kept.channel == first
        ),
        "events: {events:?}"
    );
    // Both finished: the whole allowance is free again.
    peer.feed(&method_bytes(second, deliver("c2", 2)));
    peer.feed(&header_bytes(second, 1_000));
    peer.feed(&body_bytes(second, &[2; 1_000]));
    assert!(matches!(peer.events().as_slice(), [Event::Delivery(_)]));
}

// Hardening: a recovery on a server with a lower channel-max.
#[test]
fn a_replay_closes_the_channels_a_new_server_does_not_allow() {
    let mut config = Config::default();
    config.record_topology = true;
    let mut peer = open_peer(config.clone(), 0);
    peer.open_channel();
    peer.open_channel();
    peer.connection.handle_transport_closed("cut");
    peer.events();
    let topology = peer.connection.topology().cloned().unwrap();
    assert_eq!(topology.channels().len(), 2);

    let mut peer = Peer::new(Config::default());
    peer.connection = amqp_proto::Connection::recover(config, topology, peer.now);
    peer.client_frames();
    peer.open_with_tune(1, 131_072, 0);
    let sent = peer.expect_methods(&[
        "connection.start-ok",
        "connection.tune-ok",
        "connection.open",
        "channel.open",
    ]);
    assert_eq!(sent[3].0, 1, "only channel 1 is reopened");
    peer.send(1, spec::ChannelOpenOk::default());
    let events = peer.events();
    let closed: Vec<u16> = events
        .iter()
        .filter_map(|event| match event {
            Event::ChannelClosed { channel, .. } => Some(*channel),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![2]);
    match events.last() {
        Some(Event::Recovered { failures, .. }) => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].channel, 2);
        }
        other => panic!("last event: {other:?}"),
    }
    assert!(peer.connection.channel(1).is_ok());
}

// Hardening: configured durations never overflow the clock.
#[test]
fn unbounded_timeouts_do_not_overflow() {
    let mut config = Config::default();
    config.handshake_timeout = Duration::MAX;
    config.close_timeout = Duration::MAX;
    let mut peer = Peer::new(config);
    assert!(peer.connection.poll_timeout().is_some());
    peer.handshake(0);
    let now = peer.now;
    peer.connection
        .close(ReplyCode::REPLY_SUCCESS, "bye", now)
        .unwrap();
    assert!(peer.connection.poll_timeout().unwrap() > now);
    peer.advance(Duration::from_secs(3600));
    assert!(peer.events().is_empty(), "still waiting for close-ok");
}
