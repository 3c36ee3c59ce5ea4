//! The connection state machine against a scripted broker on simulated time.

mod support;

use std::time::Duration;

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{self, Method};
use amqp_proto::{
    Config, ConfirmOutcome, ConnectionError, Event, Failure, Initiator, ProtocolViolation,
};
use support::Peer;

fn open_peer(heartbeat: u16) -> Peer {
    let mut peer = Peer::new(Config::default());
    peer.handshake(heartbeat);
    peer
}

#[test]
fn handshake_sends_plain_credentials_and_negotiated_tuning() {
    let mut config = Config::default();
    config.channel_max = 100;
    config.frame_max = 65_536;
    config.heartbeat = 30;
    let mut peer = Peer::new(config);
    assert!(peer.client_frames().is_empty());
    peer.send(
        0,
        spec::ConnectionStart {
            version_major: 0,
            version_minor: 9,
            mechanisms: "AMQPLAIN PLAIN".into(),
            locales: "en_US".into(),
            ..Default::default()
        },
    );
    let sent = peer.expect_methods(&["connection.start-ok"]);
    let Method::ConnectionStartOk(start_ok) = &sent[0].1 else {
        unreachable!()
    };
    assert_eq!(start_ok.mechanism, "PLAIN");
    assert_eq!(start_ok.response, "\0guest\0guest");
    assert_eq!(start_ok.locale, "en_US");
    assert!(start_ok.client_properties.get("capabilities").is_some());

    peer.send(
        0,
        spec::ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        },
    );
    let sent = peer.expect_methods(&["connection.tune-ok", "connection.open"]);
    assert_eq!(
        sent[0].1,
        Method::ConnectionTuneOk(spec::ConnectionTuneOk {
            channel_max: 100,
            frame_max: 65_536,
            heartbeat: 30
        })
    );
    let Method::ConnectionOpen(open) = &sent[1].1 else {
        unreachable!()
    };
    assert_eq!(open.virtual_host, "/");
    peer.send(0, spec::ConnectionOpenOk::default());
    let events = peer.events();
    let [Event::Opened { tuning, .. }] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(tuning.heartbeat, 30);
    assert!(peer.connection.is_open());
}

#[test]
fn refused_credentials_are_an_authentication_failure() {
    let mut peer = Peer::new(Config::default());
    peer.send(
        0,
        spec::ConnectionStart {
            version_major: 0,
            version_minor: 9,
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
            ..Default::default()
        },
    );
    peer.client_frames();
    peer.send(
        0,
        spec::ConnectionClose {
            reply_code: 403,
            reply_text: "ACCESS_REFUSED - Login was refused".into(),
            ..Default::default()
        },
    );
    peer.expect_methods(&["connection.close-ok"]);
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::Closed(ConnectionError::AuthenticationFailed(text))] if text.contains("Login")),
        "{events:?}"
    );
}

#[test]
fn stats_count_bytes_frames_and_heartbeats_both_ways() {
    let mut peer = Peer::new(Config::default());
    let fed_before = peer.connection.stats().bytes_received;
    assert_eq!(fed_before, 0);
    peer.handshake(10);
    let stats = peer.connection.stats();
    // start, tune, open-ok.
    assert_eq!(stats.frames_received, 3);
    assert_eq!(stats.heartbeats_received, 0);
    assert_eq!(stats.bytes_sent, peer.written.len() as u64);
    let received = stats.bytes_received;
    assert!(received > 0);

    let heartbeat = [8, 0, 0, 0, 0, 0, 0, 0xCE];
    peer.feed(&heartbeat[..3]);
    assert_eq!(peer.connection.stats().frames_received, 3, "not whole yet");
    // Bytes appended to the input buffer count once they are handled.
    peer.connection
        .input_buffer()
        .extend_from_slice(&heartbeat[3..]);
    peer.connection.handle_buffered_input(peer.now);
    peer.feed(&heartbeat);
    let stats = peer.connection.stats();
    assert_eq!(stats.heartbeats_received, 2);
    assert_eq!(stats.frames_received, 5);
    assert_eq!(stats.bytes_received, received + 16);

    peer.advance(Duration::from_secs(5));
    assert_eq!(
        peer.client_frames(),
        vec![amqp_proto::codec::Frame::Heartbeat]
    );
    let stats = peer.connection.stats();
    assert_eq!(stats.heartbeats_sent, 1);
    assert_eq!(stats.bytes_sent, peer.written.len() as u64);
}

#[test]
fn handling_input_again_without_new_bytes_is_no_sign_of_life() {
    let mut peer = open_peer(10);
    // Half a heartbeat frame arrives at 0 s, then nothing more.
    peer.feed(&[8, 0, 0]);
    peer.advance(Duration::from_secs(15));
    // A spurious wake-up: the adapter handles input with nothing new.
    peer.feed(&[]);
    peer.connection.handle_buffered_input(peer.now);
    peer.advance(Duration::from_secs(5));
    assert_eq!(peer.elapsed_ms(), 20_000);
    assert_eq!(
        peer.events(),
        vec![Event::Closed(ConnectionError::HeartbeatTimeout)],
        "dead two intervals after the last byte that arrived"
    );
}

#[test]
fn no_heartbeat_is_queued_behind_output_waiting_to_be_written() {
    let mut peer = open_peer(10);
    let channel = peer.connection.open_channel().unwrap();
    let queued = peer.connection.queued_output();
    assert!(queued > 0);
    // The adapter cannot write (its socket is full): the channel.open is
    // still queued when the heartbeat falls due.
    let due = peer.connection.poll_timeout().unwrap();
    assert_eq!(due, peer.start + Duration::from_secs(5));
    peer.connection.handle_timeout(due);
    assert_eq!(peer.connection.queued_output(), queued);
    assert_eq!(peer.connection.stats().heartbeats_sent, 0);
    // The next check comes half an interval later, not at once.
    assert_eq!(
        peer.connection.poll_timeout(),
        Some(due + Duration::from_secs(5))
    );
    peer.expect_methods(&["channel.open"]);
    let _ = channel;
}

#[test]
fn heartbeats_are_sent_after_half_an_idle_interval_and_silence_kills() {
    let mut peer = open_peer(10);
    // Nothing sent since the handshake: a heartbeat is due at 5 s, half the
    // interval, as RabbitMQ sends them.
    peer.advance(Duration::from_millis(4_999));
    assert!(peer.client_frames().is_empty());
    peer.advance(Duration::from_millis(1));
    assert_eq!(
        peer.client_frames(),
        vec![amqp_proto::codec::Frame::Heartbeat]
    );
    assert_eq!(peer.elapsed_ms(), 5_000);
    // And every 5 s after it while nothing else is written.
    peer.advance(Duration::from_millis(4_999));
    assert!(peer.client_frames().is_empty());
    peer.advance(Duration::from_millis(1));
    assert_eq!(
        peer.client_frames(),
        vec![amqp_proto::codec::Frame::Heartbeat]
    );
    // The server stays silent: dead at two whole intervals, 20 s after the
    // last bytes it sent, with nothing more sent.
    peer.advance(Duration::from_millis(9_999));
    assert_eq!(
        peer.client_frames(),
        vec![amqp_proto::codec::Frame::Heartbeat],
        "the one at 15 s"
    );
    assert!(peer.events().is_empty());
    peer.advance(Duration::from_millis(1));
    assert_eq!(peer.elapsed_ms(), 20_000);
    let events = peer.events();
    assert_eq!(
        events,
        vec![Event::Closed(ConnectionError::HeartbeatTimeout)]
    );
    assert!(
        peer.client_frames().is_empty(),
        "nothing is sent to a dead peer"
    );
    assert_eq!(peer.connection.stats().heartbeats_sent, 3);
    assert!(peer.connection.poll_timeout().is_none());
}

#[test]
fn confirms_resolve_exactly_with_multiple_acks_and_nacks() {
    let mut peer = open_peer(0);
    let channel = peer.open_channel();
    let select = peer
        .connection
        .channel(channel)
        .unwrap()
        .request(spec::ConfirmSelect::default())
        .unwrap()
        .expect("select-ok is awaited");
    let mut sequences = Vec::new();
    for _ in 0..5 {
        let publish = spec::BasicPublish {
            routing_key: "q".into(),
            ..Default::default()
        };
        let sequence = peer
            .connection
            .channel(channel)
            .unwrap()
            .publish(&publish, &BasicProperties::default(), &b"body"[..])
            .unwrap();
        sequences.push(sequence.expect("confirm mode numbers publishes"));
    }
    assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
    let frames = peer.client_frames();
    assert_eq!(
        frames.len(),
        1 + 5 * 3,
        "select, then method+header+body each"
    );
    peer.send(channel, spec::ConfirmSelectOk::default());
    peer.send(
        channel,
        spec::BasicAck {
            delivery_tag: 2,
            multiple: false,
        },
    );
    peer.send(
        channel,
        spec::BasicNack {
            delivery_tag: 3,
            multiple: true,
            requeue: false,
        },
    );
    peer.send(
        channel,
        spec::BasicAck {
            delivery_tag: 5,
            multiple: true,
        },
    );
    let events = peer.events();
    let confirms: Vec<(u64, ConfirmOutcome)> = events
        .iter()
        .filter_map(|event| match event {
            Event::Confirm {
                sequence, outcome, ..
            } => Some((*sequence, outcome.clone())),
            _ => None,
        })
        .collect();
    assert!(matches!(&events[0], Event::Reply { request, .. } if *request == select));
    assert_eq!(
        confirms,
        vec![
            (2, ConfirmOutcome::Ack),
            (1, ConfirmOutcome::Nack),
            (3, ConfirmOutcome::Nack),
            (4, ConfirmOutcome::Ack),
            (5, ConfirmOutcome::Ack),
        ]
    );
    assert_eq!(peer.connection.channel(channel).unwrap().unconfirmed(), 0);
}

#[test]
fn return_comes_before_the_ack_of_the_same_publish() {
    let mut peer = open_peer(0);
    let channel = peer.open_channel();
    peer.connection
        .channel(channel)
        .unwrap()
        .request(spec::ConfirmSelect::default())
        .unwrap();
    let publish = spec::BasicPublish {
        routing_key: "nowhere".into(),
        mandatory: true,
        ..Default::default()
    };
    peer.connection
        .channel(channel)
        .unwrap()
        .publish(&publish, &BasicProperties::default(), &b"lost"[..])
        .unwrap();
    peer.client_frames();
    peer.send(channel, spec::ConfirmSelectOk::default());
    peer.send_content(
        channel,
        spec::BasicReturn {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "".into(),
            routing_key: "nowhere".into(),
        },
        BasicProperties::default(),
        b"lost",
    );
    peer.send(
        channel,
        spec::BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    );
    let events = peer.events();
    assert!(
        matches!(&events[1], Event::Returned(returned) if returned.reply_code == 312 && returned.content.body == b"lost"[..])
    );
    assert!(matches!(
        &events[2],
        Event::Confirm {
            sequence: 1,
            outcome: ConfirmOutcome::Ack,
            ..
        }
    ));
}

#[test]
fn a_channel_closed_by_the_server_fails_what_is_outstanding() {
    let mut peer = open_peer(0);
    let channel = peer.open_channel();
    let mut ch = peer.connection.channel(channel).unwrap();
    ch.request(spec::ConfirmSelect::default()).unwrap();
    ch.publish(
        &spec::BasicPublish::default(),
        &BasicProperties::default(),
        &b"x"[..],
    )
    .unwrap();
    let declare = ch
        .request(spec::QueueDeclare {
            queue: "q".into(),
            passive: true,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    peer.client_frames();
    peer.send(channel, spec::ConfirmSelectOk::default());
    peer.send(
        channel,
        spec::ChannelClose {
            reply_code: 404,
            reply_text: "NOT_FOUND - no queue 'q'".into(),
            class_id: 50,
            method_id: 10,
        },
    );
    peer.expect_methods(&["channel.close-ok"]);
    let events = peer.events();
    assert_eq!(events.len(), 4, "{events:?}");
    let Event::RequestFailed {
        request,
        failure: Failure::Channel(reason),
        ..
    } = &events[1]
    else {
        panic!("{events:?}");
    };
    assert_eq!(*request, declare);
    assert_eq!(reason.code, ReplyCode::NOT_FOUND);
    assert_eq!(reason.initiator, Initiator::Server);
    assert!(matches!(
        &events[2],
        Event::Confirm {
            sequence: 1,
            outcome: ConfirmOutcome::Failed(_),
            ..
        }
    ));
    assert!(matches!(&events[3], Event::ChannelClosed { channel: id, .. } if *id == channel));
    // The id is free again.
    let reopened = peer.connection.open_channel().expect("the id is free");
    assert_eq!(reopened.id(), channel);
}

#[test]
fn a_handle_of_a_closed_opening_names_nothing_once_its_id_is_reused() {
    let mut peer = Peer::new(Config::default());
    peer.handshake(0);
    peer.events();
    let first = peer.connection.open_channel().expect("opens");
    peer.expect_methods(&["channel.open"]);
    peer.send(first.id(), spec::ChannelOpenOk::default());
    peer.events();
    peer.connection
        .channel(first)
        .expect("open")
        .close(ReplyCode::REPLY_SUCCESS, "done")
        .expect("closes");
    peer.expect_methods(&["channel.close"]);
    peer.send(first.id(), spec::ChannelCloseOk::default());
    peer.events();

    let second = peer.connection.open_channel().expect("the id is free");
    assert_eq!(second.id(), first.id());
    assert_ne!(second, first);
    assert_eq!(peer.connection.channel_handle(first.id()), Some(second));
    // The old handle must not reach the new channel: an ack of an old
    // delivery tag would settle another message.
    assert!(matches!(
        peer.connection.channel(first),
        Err(amqp_proto::UsageError::ChannelNotOpen(id)) if id == first.id()
    ));
    assert_eq!(
        peer.connection.publish_readiness(first),
        amqp_proto::Readiness::Closed
    );
    assert!(peer.connection.channel(second).is_ok());
    // A bare id names whatever is open on it now.
    assert!(peer.connection.channel(first.id()).is_ok());
}

#[test]
fn a_delivery_is_assembled_from_its_frames() {
    let mut peer = open_peer(0);
    let channel = peer.open_channel();
    let consume = peer
        .connection
        .channel(channel)
        .unwrap()
        .request(spec::BasicConsume {
            queue: "q".into(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    peer.client_frames();
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "ctag".into(),
        },
    );
    peer.send_content(
        channel,
        spec::BasicDeliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        },
        BasicProperties::default().content_type("text/plain"),
        b"hello",
    );
    let events = peer.events();
    assert!(matches!(&events[0], Event::Reply { request, .. } if *request == consume));
    let Event::Delivery(delivery) = &events[1] else {
        panic!("{events:?}");
    };
    assert_eq!(delivery.consumer_tag, "ctag");
    assert_eq!(delivery.body(), &b"hello"[..]);
    assert_eq!(
        delivery.properties().content_type.as_ref().unwrap(),
        "text/plain"
    );
    // The server cancels the consumer (queue deleted).
    peer.send(
        channel,
        spec::BasicCancel {
            consumer_tag: "ctag".into(),
            nowait: true,
        },
    );
    assert_eq!(
        peer.events(),
        vec![Event::ConsumerCancelled {
            channel,
            consumer_tag: "ctag".into()
        }]
    );
    assert!(
        peer.client_frames().is_empty(),
        "nowait cancel needs no reply"
    );
}

#[test]
fn hostile_frames_close_the_connection_with_the_prescribed_code() {
    let cases: Vec<(&str, Vec<u8>, ReplyCode)> = vec![
        (
            "unknown frame type",
            vec![9, 0, 0, 0, 0, 0, 0, 0xCE],
            ReplyCode::FRAME_ERROR,
        ),
        (
            "oversize frame",
            vec![1, 0, 0, 0x10, 0, 0, 0],
            ReplyCode::FRAME_ERROR,
        ),
        (
            "unknown method",
            vec![1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 99, 0xCE],
            ReplyCode::NOT_IMPLEMENTED,
        ),
        (
            "frame on a channel never opened",
            vec![1, 0, 7, 0, 0, 0, 4, 0, 20, 0, 41, 0xCE],
            ReplyCode::CHANNEL_ERROR,
        ),
        (
            "body without a header",
            vec![3, 0, 1, 0, 0, 0, 1, b'x', 0xCE],
            ReplyCode::UNEXPECTED_FRAME,
        ),
        (
            "client-only method",
            vec![1, 0, 1, 0, 0, 0, 4, 0, 90, 0, 10, 0xCE],
            ReplyCode::COMMAND_INVALID,
        ),
        // connection.start whose server-properties table holds tag `Z`.
        (
            "unknown field tag",
            vec![
                1, 0, 0, 0, 0, 0, 13, 0, 10, 0, 10, 0, 9, 0, 0, 0, 3, 1, b'k', b'Z', 0xCE,
            ],
            ReplyCode::SYNTAX_ERROR,
        ),
    ];
    for (name, bytes, code) in cases {
        let mut peer = open_peer(0);
        peer.open_channel();
        peer.feed(&bytes);
        let sent = peer.expect_methods(&["connection.close"]);
        let Method::ConnectionClose(close) = &sent[0].1 else {
            unreachable!()
        };
        assert_eq!(ReplyCode(close.reply_code), code, "{name}: {close:?}");
        // Nothing but close-ok matters now; commands are refused.
        assert!(peer.connection.open_channel().is_err(), "{name}");
        peer.send(0, spec::ConnectionCloseOk::default());
        let events = peer.events();
        assert!(
            matches!(events.last(), Some(Event::Closed(ConnectionError::ProtocolViolation { error })) if error.reply_code() == code),
            "{name}: {events:?}"
        );
        assert!(
            peer.client_frames().is_empty(),
            "{name}: nothing after close"
        );
    }
}

#[test]
fn a_bad_frame_end_drops_the_connection_without_a_word() {
    let mut peer = open_peer(0);
    peer.feed(&[8, 0, 0, 0, 0, 0, 0, 0xCD]);
    assert!(peer.client_frames().is_empty());
    let events = peer.events();
    assert!(matches!(
        events.as_slice(),
        [Event::Closed(ConnectionError::ProtocolViolation {
            error: ProtocolViolation::Decode(_)
        })]
    ));
}

#[test]
fn both_sides_closing_at_once_completes() {
    let mut peer = open_peer(0);
    let now = peer.now;
    peer.connection
        .close(ReplyCode::REPLY_SUCCESS, "bye", now)
        .unwrap();
    peer.expect_methods(&["connection.close"]);
    peer.send(
        0,
        spec::ConnectionClose {
            reply_code: 320,
            reply_text: "CONNECTION_FORCED".into(),
            ..Default::default()
        },
    );
    peer.expect_methods(&["connection.close-ok"]);
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::Closed(ConnectionError::Closed(reason))] if reason.initiator == Initiator::Client)
    );
    assert!(peer.connection.is_closed());
}

#[test]
fn a_typed_call_recognises_its_own_reply_and_its_failure() {
    let mut peer = Peer::new(Config::default());
    peer.handshake(0);
    peer.events();
    let channel = peer.open_channel();
    let declare = peer
        .connection
        .channel(channel)
        .unwrap()
        .call(spec::QueueDeclare {
            queue: "jobs".into(),
            ..Default::default()
        })
        .unwrap();
    let purge = peer
        .connection
        .channel(channel)
        .unwrap()
        .call(spec::QueuePurge {
            queue: "jobs".into(),
            ..Default::default()
        })
        .unwrap();
    let nowait = peer
        .connection
        .channel(channel)
        .unwrap()
        .call(spec::QueueBind {
            nowait: true,
            ..Default::default()
        });
    assert!(
        matches!(
            nowait,
            Err(amqp_proto::UsageError::NotForChannel("queue.bind", _))
        ),
        "a nowait call has no reply to wait for: {nowait:?}"
    );
    peer.client_frames();
    peer.send(
        channel,
        spec::QueueDeclareOk {
            queue: "jobs".into(),
            message_count: 3,
            consumer_count: 0,
        },
    );
    let events = peer.events();
    let [event] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert!(purge.answer(event).is_none(), "not the purge's reply");
    let declared = declare.answer(event).expect("the declare's reply").unwrap();
    assert_eq!(declared.queue, "jobs");
    assert_eq!(declared.message_count, 3);

    // The channel closes before the purge is answered: its failure.
    peer.send(
        channel,
        spec::ChannelClose {
            reply_code: 404,
            reply_text: "NOT_FOUND".into(),
            class_id: 50,
            method_id: 30,
        },
    );
    let outcome = peer
        .events()
        .iter()
        .find_map(|event| purge.answer(event))
        .expect("the purge is answered");
    assert!(
        matches!(outcome, Err(Failure::Channel(reason)) if reason.code == ReplyCode::NOT_FOUND)
    );
}
