//! Channel and connection life cycles, flow control and the remaining
//! hostile-input classes, against the scripted broker on simulated time.

mod support;

use std::time::Duration;

use amqp_proto::codec::{BasicProperties, Frame};
use amqp_proto::spec::constants::ReplyCode;
use amqp_proto::spec::{self, Method};
use amqp_proto::{
    Config, ConfirmOutcome, ConnectionError, Event, Failure, Initiator, Readiness, UsageError,
};
use support::Peer;

fn open_peer(config: Config) -> Peer {
    let mut peer = Peer::new(config);
    peer.handshake(0);
    peer
}

fn close_code(peer: &mut Peer) -> u16 {
    let sent = peer.expect_methods(&["connection.close"]);
    let Method::ConnectionClose(close) = &sent[0].1 else {
        unreachable!()
    };
    close.reply_code
}

#[test]
fn access_refused_at_open_is_typed() {
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
    peer.send(
        0,
        spec::ConnectionTune {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        },
    );
    peer.client_frames();
    peer.send(
        0,
        spec::ConnectionClose {
            reply_code: 530,
            reply_text: "NOT_ALLOWED - vhost not found".into(),
            ..Default::default()
        },
    );
    peer.expect_methods(&["connection.close-ok"]);
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Closed(ConnectionError::AccessRefused(text))] if text.contains("vhost")
    ));
}

#[test]
fn the_handshake_deadline_fires_at_its_exact_time() {
    let mut config = Config::default();
    config.handshake_timeout = Duration::from_millis(2_500);
    let mut peer = Peer::new(config);
    peer.advance(Duration::from_millis(2_499));
    assert!(peer.events().is_empty());
    peer.advance(Duration::from_millis(1));
    assert_eq!(
        peer.events(),
        vec![Event::Closed(ConnectionError::HandshakeTimeout)]
    );
    assert_eq!(peer.elapsed_ms(), 2_500);
}

#[test]
fn an_unanswered_close_times_out_at_the_close_deadline() {
    let mut config = Config::default();
    config.close_timeout = Duration::from_secs(3);
    let mut peer = open_peer(config);
    let channel = peer.open_channel();
    let declare = peer
        .connection
        .channel(channel)
        .unwrap()
        .request(spec::ExchangeDeclare {
            exchange: "x".into(),
            exchange_type: "fanout".into(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let now = peer.now;
    peer.connection
        .close(ReplyCode::REPLY_SUCCESS, "bye", now)
        .unwrap();
    // The pending request fails at once, not when the close completes.
    let events = peer.events();
    assert!(matches!(
        events.as_slice(),
        [Event::RequestFailed { request, failure: Failure::Connection(ConnectionError::Closed(reason)), .. }]
            if *request == declare && reason.initiator == Initiator::Client
    ));
    peer.expect_methods(&["exchange.declare", "connection.close"]);
    assert_eq!(
        peer.connection.open_channel(),
        Err(UsageError::ConnectionClosed)
    );
    peer.advance(Duration::from_millis(2_999));
    assert!(peer.events().is_empty());
    peer.advance(Duration::from_millis(1));
    assert_eq!(
        peer.events(),
        vec![Event::Closed(ConnectionError::CloseTimeout)]
    );
}

#[test]
fn channel_ids_are_reused_only_after_close_ok() {
    let mut config = Config::default();
    config.channel_max = 2;
    let mut peer = open_peer(config);
    let first = peer.open_channel();
    let second = peer.open_channel();
    assert_eq!((first, second), (1, 2));
    assert_eq!(
        peer.connection.open_channel(),
        Err(UsageError::NoFreeChannel(2))
    );
    peer.connection
        .channel(first)
        .unwrap()
        .close(ReplyCode::REPLY_SUCCESS, "done")
        .unwrap();
    peer.expect_methods(&["channel.close"]);
    // Until close-ok, the id stays taken and the channel refuses commands.
    assert_eq!(
        peer.connection.open_channel(),
        Err(UsageError::NoFreeChannel(2))
    );
    assert!(matches!(
        peer.connection.channel(first),
        Err(UsageError::ChannelNotOpen(1))
    ));
    // A delivery racing the close is dropped.
    peer.send_content(
        first,
        spec::BasicDeliver {
            consumer_tag: "late".into(),
            delivery_tag: 1,
            ..Default::default()
        },
        BasicProperties::default(),
        b"late",
    );
    assert!(peer.events().is_empty());
    peer.send(first, spec::ChannelCloseOk::default());
    assert!(matches!(
        peer.events().as_slice(),
        [Event::ChannelClosed { channel: 1, reason }] if reason.initiator == Initiator::Client
    ));
    assert_eq!(
        peer.connection
            .open_channel()
            .map(amqp_proto::ChannelHandle::id),
        Ok(1)
    );
}

#[test]
fn flow_blocked_and_the_confirm_window_fold_into_one_readiness() {
    let mut config = Config::default();
    config.max_unconfirmed = 2;
    let mut peer = open_peer(config);
    let channel = peer.open_channel();
    assert_eq!(peer.connection.publish_readiness(channel), Readiness::Ready);
    peer.send(channel, spec::ChannelFlow { active: false });
    let sent = peer.expect_methods(&["channel.flow-ok"]);
    assert_eq!(
        sent[0].1,
        Method::ChannelFlowOk(spec::ChannelFlowOk { active: false })
    );
    assert_eq!(
        peer.events(),
        vec![Event::Flow {
            channel,
            active: false
        }]
    );
    assert_eq!(
        peer.connection.publish_readiness(channel),
        Readiness::FlowPaused
    );
    peer.send(channel, spec::ChannelFlow { active: true });
    peer.send(
        0,
        spec::ConnectionBlocked {
            reason: "low on memory".into(),
        },
    );
    assert_eq!(
        peer.connection.publish_readiness(channel),
        Readiness::Blocked
    );
    peer.send(0, spec::ConnectionUnblocked::default());
    assert_eq!(
        peer.events()[1..],
        [
            Event::Blocked {
                reason: "low on memory".into()
            },
            Event::Unblocked
        ]
    );
    let mut handle = peer.connection.channel(channel).unwrap();
    handle.request(spec::ConfirmSelect::default()).unwrap();
    for _ in 0..2 {
        handle
            .publish(
                &spec::BasicPublish::default(),
                &BasicProperties::default(),
                &b""[..],
            )
            .unwrap();
    }
    assert_eq!(
        peer.connection.publish_readiness(channel),
        Readiness::ConfirmWindowFull
    );
    assert_eq!(peer.connection.publish_readiness(9), Readiness::Closed);
}

#[test]
fn large_bodies_are_split_at_frame_max_and_empty_ones_send_no_body_frame() {
    let mut config = Config::default();
    config.frame_max = 4096;
    let mut peer = open_peer(config);
    let channel = peer.open_channel();
    let body: Vec<u8> = (0..10_000u32).map(|n| n as u8).collect();
    let mut handle = peer.connection.channel(channel).unwrap();
    handle
        .publish(
            &spec::BasicPublish::default(),
            &BasicProperties::default(),
            body.clone(),
        )
        .unwrap();
    handle
        .publish(
            &spec::BasicPublish::default(),
            &BasicProperties::default(),
            &b""[..],
        )
        .unwrap();
    let frames = peer.client_frames();
    let sizes: Vec<usize> = frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Body { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![4088, 4088, 1824]);
    let joined: Vec<u8> = frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Body { payload, .. } => Some(payload.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(joined, body);
    assert!(matches!(frames.last(), Some(Frame::Header { header, .. }) if header.body_size == 0));
    assert_eq!(frames.len(), 2 + 3 + 2);
}

#[test]
fn basic_get_answers_with_a_message_or_empty() {
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    let mut handle = peer.connection.channel(channel).unwrap();
    let first = handle
        .request(spec::BasicGet {
            queue: "q".into(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let second = handle
        .request(spec::BasicGet {
            queue: "q".into(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    peer.client_frames();
    peer.send_content(
        channel,
        spec::BasicGetOk {
            delivery_tag: 5,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
            message_count: 0,
        },
        BasicProperties::default(),
        b"got",
    );
    peer.send(channel, spec::BasicGetEmpty::default());
    let events = peer.events();
    assert!(
        matches!(&events[0], Event::GetOk { request, message, .. } if *request == first && message.content.body == b"got"[..] && message.delivery_tag == 5)
    );
    assert!(
        matches!(&events[1], Event::Reply { request, method: Method::BasicGetEmpty(_), .. } if *request == second)
    );
}

#[test]
fn update_secret_is_answered_on_channel_zero() {
    let mut peer = open_peer(Config::default());
    let request = peer
        .connection
        .update_secret("new-token", "refresh")
        .unwrap();
    peer.expect_methods(&["connection.update-secret"]);
    peer.send(0, spec::ConnectionUpdateSecretOk::default());
    assert!(matches!(
        peer.events().as_slice(),
        [Event::Reply { channel: 0, request: answered, .. }] if *answered == request
    ));
}

#[test]
fn usage_errors_send_nothing() {
    let mut peer = Peer::new(Config::default());
    assert_eq!(peer.connection.open_channel(), Err(UsageError::NotOpen));
    peer.handshake(0);
    let channel = peer.open_channel();
    let mut handle = peer.connection.channel(channel).unwrap();
    assert!(matches!(
        handle.request(spec::BasicPublish::default()),
        Err(UsageError::NotForChannel("basic.publish", _))
    ));
    assert!(matches!(
        handle.request(spec::BasicDeliver::default()),
        Err(UsageError::NotForChannel(..))
    ));
    assert_eq!(
        handle.request(spec::BasicConsume {
            nowait: true,
            ..Default::default()
        }),
        Err(UsageError::NowaitNeedsName("a consumer tag"))
    );
    handle.request(spec::TxSelect::default()).unwrap();
    assert_eq!(
        handle.request(spec::ConfirmSelect::default()),
        Err(UsageError::ConfirmAndTransaction)
    );
    let long = "q".repeat(256);
    assert!(matches!(
        handle.request(spec::QueueDeclare {
            queue: long.as_str().into(),
            ..Default::default()
        }),
        Err(UsageError::Encode(_))
    ));
    peer.expect_methods(&["tx.select"]);
}

#[test]
fn the_remaining_hostile_classes_get_their_codes() {
    // 502: property flags naming no property.
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    peer.send(
        channel,
        spec::BasicDeliver {
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    peer.feed(&[
        2, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xCE,
    ]);
    assert_eq!(close_code(&mut peer), 502);

    // A body over the configured maximum, refused at its header: only that
    // message (issue #13: it is rejected, the connection goes on).
    let mut config = Config::default();
    config.max_body_size = 1_000;
    let mut peer = open_peer(config);
    let channel = peer.open_channel();
    peer.send(
        channel,
        spec::BasicDeliver {
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    let header = amqp_proto::codec::ContentHeader::basic(1_001, BasicProperties::default());
    let mut bytes = bytes::BytesMut::new();
    amqp_proto::codec::encode_header_frame(channel, &header, u32::MAX, &mut bytes).unwrap();
    peer.feed(&bytes);
    let body = amqp_proto::codec::Frame::Body {
        channel,
        payload: vec![7; 1_001].into(),
    };
    let mut bytes = bytes::BytesMut::new();
    body.encode(&mut bytes, u32::MAX).unwrap();
    peer.feed(&bytes);
    peer.expect_methods(&["basic.reject"]);
    assert!(matches!(
        peer.events().as_slice(),
        [Event::MessageRefused(refused)] if refused.rejected
    ));
    assert!(peer.connection.is_open());

    // 501: more body than the header announced.
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    peer.send(
        channel,
        spec::BasicDeliver {
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    let header = amqp_proto::codec::ContentHeader::basic(2, BasicProperties::default());
    let mut bytes = bytes::BytesMut::new();
    amqp_proto::codec::encode_header_frame(channel, &header, u32::MAX, &mut bytes).unwrap();
    peer.feed(&bytes);
    peer.feed(&[3, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c', 0xCE]);
    assert_eq!(close_code(&mut peer), 501);

    // 505: a method in the middle of a content.
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    peer.send(
        channel,
        spec::BasicDeliver {
            consumer_tag: "c".into(),
            ..Default::default()
        },
    );
    let header = amqp_proto::codec::ContentHeader::basic(2, BasicProperties::default());
    let mut bytes = bytes::BytesMut::new();
    amqp_proto::codec::encode_header_frame(channel, &header, u32::MAX, &mut bytes).unwrap();
    peer.feed(&bytes);
    peer.send(channel, spec::BasicAck::default());
    assert_eq!(close_code(&mut peer), 505);

    // 503: an ack for a publish never made, and a reply nobody asked for.
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    peer.connection
        .channel(channel)
        .unwrap()
        .request(spec::ConfirmSelect::default())
        .unwrap();
    peer.client_frames();
    peer.send(channel, spec::ConfirmSelectOk::default());
    peer.send(
        channel,
        spec::BasicAck {
            delivery_tag: 7,
            multiple: false,
        },
    );
    assert_eq!(close_code(&mut peer), 503);
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    peer.send(channel, spec::QueueDeclareOk::default());
    assert_eq!(close_code(&mut peer), 503);

    // After any of these, nothing but close-ok is ever sent.
    assert!(peer.connection.channel(channel).is_err());
    peer.send(
        0,
        spec::ConnectionClose {
            reply_code: 320,
            ..Default::default()
        },
    );
    peer.expect_methods(&["connection.close-ok"]);
    assert!(matches!(peer.events().last(), Some(Event::Closed(_))));
}

#[test]
fn a_transport_loss_resolves_everything() {
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    let mut handle = peer.connection.channel(channel).unwrap();
    handle.request(spec::ConfirmSelect::default()).unwrap();
    handle
        .publish(
            &spec::BasicPublish::default(),
            &BasicProperties::default(),
            &b"x"[..],
        )
        .unwrap();
    peer.client_frames();
    peer.connection
        .handle_transport_closed("connection reset by peer");
    let events = peer.events();
    assert!(matches!(
        &events[0],
        Event::RequestFailed {
            failure: Failure::Connection(_),
            ..
        }
    ));
    assert!(matches!(
        &events[1],
        Event::Confirm {
            sequence: 1,
            outcome: ConfirmOutcome::Failed(Failure::Connection(_)),
            ..
        }
    ));
    assert!(
        matches!(&events[2], Event::Closed(ConnectionError::TransportClosed(reason)) if reason.contains("reset"))
    );
    assert_eq!(events.len(), 3);
    assert!(peer.client_frames().is_empty());
}

#[test]
fn silence_while_the_adapter_is_told_not_to_read_is_not_death() {
    let mut config = Config::default();
    config.max_buffered_events = 1;
    let mut peer = Peer::new(config);
    peer.handshake(10);
    peer.send(0, spec::ConnectionBlocked { reason: "r".into() });
    assert!(!peer.connection.wants_input());
    // Three intervals pass with the event unpolled: heartbeats go out (one
    // every half interval), the server is not declared dead.
    peer.advance(Duration::from_secs(30));
    let heartbeats = peer
        .client_frames()
        .into_iter()
        .filter(|frame| *frame == Frame::Heartbeat)
        .count();
    assert_eq!(heartbeats, 6);
    assert!(!peer.connection.is_closed());
    // Once drained, silence counts again: dead two intervals later.
    assert_eq!(peer.events().len(), 1);
    peer.advance(Duration::from_secs(20));
    assert_eq!(
        peer.events(),
        vec![Event::Closed(ConnectionError::HeartbeatTimeout)]
    );
}

/// RabbitMQ sends consume-ok and cancel-ok from the queue process, so with
/// pipelined requests they can come after later replies (seen against
/// RabbitMQ 3.10: a cancel-ok behind the declare-ok of a passive declare
/// sent after it). Replies still reach the right requests.
#[test]
fn consume_ok_and_cancel_ok_may_lag_behind_later_replies() {
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    let mut handle = peer.connection.channel(channel).unwrap();
    let consume_a = handle
        .request(spec::BasicConsume {
            queue: "a".into(),
            consumer_tag: "tag-a".into(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let consume_b = handle
        .request(spec::BasicConsume {
            queue: "b".into(),
            consumer_tag: "tag-b".into(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let declare = handle
        .request(spec::QueueDeclare {
            queue: "c".into(),
            passive: true,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    peer.client_frames();
    let declare_ok = spec::QueueDeclareOk {
        queue: "c".into(),
        message_count: 0,
        consumer_count: 0,
    };
    peer.send(channel, declare_ok);
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "tag-b".into(),
        },
    );
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: "tag-a".into(),
        },
    );
    let answered: Vec<_> = peer
        .events()
        .into_iter()
        .map(|event| match event {
            Event::Reply {
                request, method, ..
            } => (request, method.name()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        answered,
        vec![
            (declare, "queue.declare-ok"),
            (consume_b, "basic.consume-ok"),
            (consume_a, "basic.consume-ok"),
        ]
    );

    // Other replies keep their order: a declare-ok cannot answer a
    // purge that was sent first.
    let mut handle = peer.connection.channel(channel).unwrap();
    handle
        .request(spec::QueuePurge {
            queue: "c".into(),
            ..Default::default()
        })
        .unwrap();
    handle
        .request(spec::QueueDeclare {
            queue: "c".into(),
            ..Default::default()
        })
        .unwrap();
    peer.client_frames();
    peer.send(
        channel,
        spec::QueueDeclareOk {
            queue: "c".into(),
            message_count: 0,
            consumer_count: 0,
        },
    );
    assert_eq!(close_code(&mut peer), ReplyCode::COMMAND_INVALID.0);
}

/// A cancel-ok may come after the consume-ok of a consume sent after the
/// cancel, with the same tag (RabbitMQ answers a cancel of a consumer from
/// its queue's process, and a second cancel of the tag, then unknown, at
/// once: the first cancel's reply can be the late one). The late
/// cancel-ok is about the consumer before, and must not make the new one
/// unknown (its `no_ack` deliveries were counted unsettled). Found by the
/// simulation, seed 458508 (`unsettled-count`).
#[test]
fn a_cancel_ok_overtaken_by_a_consume_ok_of_the_same_tag_keeps_the_new_consumer() {
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    let consume = |queue: &str, no_ack: bool| spec::BasicConsume {
        queue: queue.into(),
        consumer_tag: "c1".into(),
        no_ack,
        ..Default::default()
    };
    let consume_ok = || spec::BasicConsumeOk {
        consumer_tag: "c1".into(),
    };
    let cancel = || spec::BasicCancel {
        consumer_tag: "c1".into(),
        nowait: false,
    };
    let cancel_ok = || spec::BasicCancelOk {
        consumer_tag: "c1".into(),
    };
    let mut handle = peer.connection.channel(channel).unwrap();
    handle.request(consume("a", false)).unwrap();
    peer.client_frames();
    peer.send(channel, consume_ok());
    peer.events();
    let mut handle = peer.connection.channel(channel).unwrap();
    let first = handle.request(cancel()).unwrap().unwrap();
    let second = handle.request(cancel()).unwrap().unwrap();
    peer.client_frames();
    peer.send(channel, cancel_ok());
    let events = peer.events();
    assert!(
        matches!(events.as_slice(), [Event::Reply { request, .. }] if *request == first),
        "{events:?}"
    );
    let mut handle = peer.connection.channel(channel).unwrap();
    let again = handle.request(consume("b", true)).unwrap().unwrap();
    peer.client_frames();
    peer.send(channel, consume_ok());
    peer.send(channel, cancel_ok());
    let deliver = spec::BasicDeliver {
        consumer_tag: "c1".into(),
        delivery_tag: 1,
        redelivered: false,
        exchange: "".into(),
        routing_key: "b".into(),
    };
    peer.send_content(channel, deliver, BasicProperties::default(), b"m");
    let events = peer.events();
    let answered: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            Event::Reply { request, .. } => Some(*request),
            _ => None,
        })
        .collect();
    assert_eq!(answered, vec![again, second]);
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Event::Delivery(d) if d.consumer_tag == "c1")),
        "{events:?}"
    );
    assert_eq!(
        peer.connection.stats().unsettled,
        0,
        "the delivery went to the new consumer, which needs no ack"
    );
}

#[test]
fn consume_names_an_unnamed_consumer_and_matches_its_reply_by_that_name() {
    let mut peer = open_peer(Config::default());
    let channel = peer.open_channel();
    let mut handle = peer.connection.channel(channel).unwrap();
    let (first, first_request) = handle
        .consume(spec::BasicConsume {
            queue: "a".into(),
            ..Default::default()
        })
        .unwrap();
    let (second, second_request) = handle
        .consume(spec::BasicConsume {
            queue: "b".into(),
            ..Default::default()
        })
        .unwrap();
    assert_ne!(first, second);
    assert!(first.to_string().starts_with(&format!("ctag-{channel}.")));
    // Named, so nowait is allowed too.
    let (third, none) = handle
        .consume(spec::BasicConsume {
            queue: "c".into(),
            nowait: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(none, None);
    let sent = peer.expect_methods(&["basic.consume", "basic.consume", "basic.consume"]);
    let tags: Vec<_> = sent
        .iter()
        .map(|(_, method)| match method {
            Method::BasicConsume(consume) => consume.consumer_tag.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(tags, vec![first.clone(), second.clone(), third]);
    // The second queue answers first; each reply finds its own consume.
    for tag in [&second, &first] {
        peer.send(
            channel,
            spec::BasicConsumeOk {
                consumer_tag: tag.clone(),
            },
        );
    }
    let answered: Vec<_> = peer
        .events()
        .into_iter()
        .map(|event| match event {
            Event::Reply { request, .. } => request,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        answered,
        vec![second_request.unwrap(), first_request.unwrap()]
    );
}
