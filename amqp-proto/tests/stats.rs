//! `Connection::stats` against the scripted broker on simulated time: each
//! counter and gauge after the traffic that moves it, with exact numbers.

mod support;

use std::time::Duration;

use amqp_proto::codec::{BasicProperties, DecodeLimits, Frame, FrameDecoder};
use amqp_proto::spec::constants::{ReplyCode, PROTOCOL_HEADER};
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Event, Stats, UsageError};
use support::Peer;

fn open_peer() -> Peer {
    let mut peer = Peer::new(Config::default());
    peer.handshake(0);
    peer
}

fn stats(peer: &Peer) -> Stats {
    peer.connection.stats()
}

fn publish(peer: &mut Peer, channel: u16, mandatory: bool, body: &[u8]) -> Option<u64> {
    let publish = spec::BasicPublish {
        routing_key: "jobs".into(),
        mandatory,
        ..Default::default()
    };
    peer.connection
        .channel(channel)
        .unwrap()
        .publish(&publish, &BasicProperties::default(), body.to_vec())
        .unwrap()
}

fn confirming_channel(peer: &mut Peer) -> u16 {
    let channel = peer.open_channel();
    peer.connection
        .channel(channel)
        .unwrap()
        .request(spec::ConfirmSelect::default())
        .unwrap();
    peer.expect_methods(&["confirm.select"]);
    peer.send(channel, spec::ConfirmSelectOk {});
    peer.events();
    channel
}

/// Starts consumer `tag` on `channel` and answers it.
fn consume(peer: &mut Peer, channel: u16, tag: &str, no_ack: bool) {
    peer.connection
        .channel(channel)
        .unwrap()
        .consume(spec::BasicConsume {
            queue: "jobs".into(),
            consumer_tag: tag.into(),
            no_ack,
            ..Default::default()
        })
        .unwrap();
    peer.expect_methods(&["basic.consume"]);
    peer.send(
        channel,
        spec::BasicConsumeOk {
            consumer_tag: tag.into(),
        },
    );
    peer.events();
}

fn deliver(peer: &mut Peer, channel: u16, consumer_tag: &str, delivery_tag: u64) {
    let deliver = spec::BasicDeliver {
        consumer_tag: consumer_tag.into(),
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
    };
    peer.send_content(channel, deliver, BasicProperties::default(), b"job");
}

/// A channel with a manual-ack consumer `c` given deliveries 1 to `n`.
fn delivered(peer: &mut Peer, n: u64) -> u16 {
    let channel = peer.open_channel();
    consume(peer, channel, "c", false);
    for tag in 1..=n {
        deliver(peer, channel, "c", tag);
    }
    assert_eq!(peer.events().len() as u64, n);
    channel
}

fn confirm(peer: &mut Peer, channel: u16, tag: u64, multiple: bool, ack: bool) {
    if ack {
        peer.send(
            channel,
            spec::BasicAck {
                delivery_tag: tag,
                multiple,
            },
        );
    } else {
        peer.send(
            channel,
            spec::BasicNack {
                delivery_tag: tag,
                multiple,
                requeue: false,
            },
        );
    }
    peer.events();
}

#[test]
fn a_multiple_ack_confirms_every_publish_up_to_it() {
    let mut peer = open_peer();
    let channel = confirming_channel(&mut peer);
    for _ in 0..7 {
        publish(&mut peer, channel, false, b"job");
    }
    peer.client_frames();
    let before = stats(&peer);
    assert_eq!((before.publishes, before.unconfirmed), (7, 7));
    confirm(&mut peer, channel, 5, true, true);
    let after = stats(&peer);
    assert_eq!(after.confirms_acked, 5);
    assert_eq!(after.unconfirmed, 2);
    confirm(&mut peer, channel, 0, true, true);
    let after = stats(&peer);
    assert_eq!((after.confirms_acked, after.unconfirmed), (7, 0));
    assert_eq!(after.confirms_nacked, 0);
}

#[test]
fn nacks_count_each_publish_refused() {
    let mut peer = open_peer();
    let channel = confirming_channel(&mut peer);
    for _ in 0..4 {
        publish(&mut peer, channel, false, b"job");
    }
    peer.client_frames();
    confirm(&mut peer, channel, 2, false, false);
    assert_eq!(stats(&peer).confirms_nacked, 1);
    // 1 and 3; 2 was settled already.
    confirm(&mut peer, channel, 3, true, false);
    confirm(&mut peer, channel, 4, false, true);
    let after = stats(&peer);
    assert_eq!((after.confirms_nacked, after.confirms_acked), (3, 1));
    assert_eq!(after.unconfirmed, 0);
}

#[test]
fn a_mandatory_publish_returned_is_counted() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    publish(&mut peer, channel, true, b"lost");
    peer.client_frames();
    let returned = spec::BasicReturn {
        reply_code: 312,
        reply_text: "NO_ROUTE".into(),
        exchange: "".into(),
        routing_key: "jobs".into(),
    };
    peer.send_content(channel, returned, BasicProperties::default(), b"lost");
    assert!(matches!(peer.events().as_slice(), [Event::Returned(_)]));
    let after = stats(&peer);
    assert_eq!((after.publishes, after.returned), (1, 1));
    assert_eq!(after.deliveries, 0);
}

#[test]
fn acks_count_messages_with_multiple_expanded() {
    let mut peer = open_peer();
    let channel = delivered(&mut peer, 5);
    let before = stats(&peer);
    assert_eq!((before.deliveries, before.unsettled), (5, 5));
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(2, false)
        .unwrap();
    assert_eq!((stats(&peer).acked, stats(&peer).unsettled), (1, 4));
    // 1, 3 and 4: 2 was settled already.
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(4, true)
        .unwrap();
    let after = stats(&peer);
    assert_eq!((after.acked, after.unsettled), (4, 1));
    let sent = peer.expect_methods(&["basic.ack", "basic.ack"]);
    assert!(matches!(&sent[1].1, Method::BasicAck(a) if a.delivery_tag == 4 && a.multiple));
    // Tag 0 with multiple: all that is left.
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(0, true)
        .unwrap();
    let after = stats(&peer);
    assert_eq!((after.acked, after.unsettled), (5, 0));
    assert_eq!((after.nacked, after.rejected, after.requeued), (0, 0, 0));
}

#[test]
fn settling_a_tag_not_awaiting_settlement_is_refused_and_sends_nothing() {
    let mut peer = open_peer();
    let channel = delivered(&mut peer, 3);
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(2, false)
        .unwrap();
    peer.expect_methods(&["basic.ack"]);
    let before = stats(&peer);
    let mut ch = peer.connection.channel(channel).unwrap();
    // Settled already, never delivered, or (with multiple) not itself
    // outstanding: RabbitMQ would close the channel with 406 for each.
    assert_eq!(ch.ack(2, false), Err(UsageError::UnknownDeliveryTag(2)));
    assert_eq!(
        ch.nack(2, true, true),
        Err(UsageError::UnknownDeliveryTag(2))
    );
    assert_eq!(ch.reject(9, false), Err(UsageError::UnknownDeliveryTag(9)));
    assert_eq!(ch.ack(0, false), Err(UsageError::UnknownDeliveryTag(0)));
    assert!(peer.client_frames().is_empty());
    assert_eq!(stats(&peer), before);
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(3, true)
        .unwrap();
    assert_eq!(stats(&peer).acked, 3);
}

#[test]
fn nacks_and_rejects_with_requeue_count_requeued() {
    let mut peer = open_peer();
    let channel = delivered(&mut peer, 5);
    let mut ch = peer.connection.channel(channel).unwrap();
    ch.nack(2, true, true).unwrap();
    ch.reject(3, false).unwrap();
    ch.reject(4, true).unwrap();
    ch.nack(5, false, false).unwrap();
    peer.expect_methods(&["basic.nack", "basic.reject", "basic.reject", "basic.nack"]);
    let after = stats(&peer);
    assert_eq!(after.nacked, 3);
    assert_eq!(after.rejected, 2);
    assert_eq!(after.requeued, 3);
    assert_eq!((after.acked, after.unsettled), (0, 0));
}

#[test]
fn no_ack_deliveries_count_as_acknowledged_and_are_never_unsettled() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    consume(&mut peer, channel, "auto", true);
    consume(&mut peer, channel, "manual", false);
    deliver(&mut peer, channel, "auto", 1);
    deliver(&mut peer, channel, "manual", 2);
    deliver(&mut peer, channel, "auto", 3);
    peer.events();
    let after = stats(&peer);
    assert_eq!((after.deliveries, after.acked, after.unsettled), (3, 2, 1));
    let mut ch = peer.connection.channel(channel).unwrap();
    assert_eq!(ch.ack(1, false), Err(UsageError::UnknownDeliveryTag(1)));
    ch.ack(3, true).unwrap_err();
    ch.ack(2, true).unwrap();
    assert_eq!((stats(&peer).acked, stats(&peer).unsettled), (3, 0));
}

#[test]
fn gets_count_messages_and_empties() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    let get = |no_ack| spec::BasicGet {
        queue: "jobs".into(),
        no_ack,
        ..Default::default()
    };
    let get_ok = |delivery_tag| spec::BasicGetOk {
        delivery_tag,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
        message_count: 0,
    };
    for no_ack in [false, true, false] {
        let mut ch = peer.connection.channel(channel).unwrap();
        ch.request(get(no_ack)).unwrap();
    }
    peer.expect_methods(&["basic.get", "basic.get", "basic.get"]);
    peer.send_content(channel, get_ok(1), BasicProperties::default(), b"a");
    peer.send_content(channel, get_ok(2), BasicProperties::default(), b"b");
    peer.send(channel, spec::BasicGetEmpty::default());
    assert_eq!(peer.events().len(), 3);
    let after = stats(&peer);
    assert_eq!((after.gets_ok, after.gets_empty), (2, 1));
    assert_eq!((after.unsettled, after.acked), (1, 1), "the no_ack one");
    assert_eq!(after.deliveries, 0);
    peer.connection
        .channel(channel)
        .unwrap()
        .ack(1, false)
        .unwrap();
    assert_eq!((stats(&peer).unsettled, stats(&peer).acked), (0, 2));
}

#[test]
fn blocked_time_adds_up_the_spells_by_the_times_given() {
    let mut peer = open_peer();
    let blocked = || spec::ConnectionBlocked {
        reason: "low on memory".into(),
    };
    peer.advance(Duration::from_millis(1_000));
    peer.send(0, blocked());
    peer.advance(Duration::from_millis(3_250));
    // A second blocked in the same spell is not a new one.
    peer.send(0, blocked());
    peer.advance(Duration::from_millis(750));
    peer.send(0, spec::ConnectionUnblocked {});
    let after = stats(&peer);
    assert_eq!(after.blocked_count, 1);
    assert_eq!(after.blocked_time, Duration::from_millis(4_000));

    peer.advance(Duration::from_secs(10));
    peer.send(0, blocked());
    peer.advance(Duration::from_millis(2_500));
    // Nothing reached the core since: the spell counts up to its clock.
    assert_eq!(stats(&peer).blocked_time, Duration::from_millis(4_000));
    peer.feed(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    let running = stats(&peer);
    assert_eq!(running.blocked_count, 2);
    assert_eq!(running.blocked_time, Duration::from_millis(6_500));
    // The end of the connection ends the spell, at the last time the core
    // was given (a transport failure comes with none).
    peer.advance(Duration::from_millis(500));
    peer.connection.handle_transport_closed("reset");
    peer.advance(Duration::from_secs(60));
    peer.connection.handle_timeout(peer.now);
    let ended = stats(&peer);
    assert_eq!(ended.blocked_time, Duration::from_millis(6_500));
    peer.events();
}

#[test]
fn flow_pauses_count_each_pause() {
    let mut peer = open_peer();
    let channel = peer.open_channel();
    for active in [false, false, true, false, true] {
        peer.send(channel, spec::ChannelFlow { active });
    }
    assert_eq!(stats(&peer).flow_pauses, 2);
}

#[test]
fn server_closes_and_cancels_are_counted_and_the_gauges_follow() {
    let mut peer = open_peer();
    let first = peer.open_channel();
    let second = peer.open_channel();
    let third = peer.open_channel();
    consume(&mut peer, first, "a", false);
    consume(&mut peer, first, "b", false);
    consume(&mut peer, second, "c", true);
    deliver(&mut peer, first, "a", 1);
    deliver(&mut peer, first, "b", 2);
    peer.events();
    let before = stats(&peer);
    assert_eq!((before.channels_open, before.consumers), (3, 3));
    assert_eq!(before.unsettled, 2);

    peer.send(
        first,
        spec::BasicCancel {
            consumer_tag: "a".into(),
            nowait: true,
        },
    );
    let after = stats(&peer);
    assert_eq!(after.server_consumer_cancels, 1);
    assert_eq!(after.consumers, 2);
    assert_eq!(
        after.unsettled, 2,
        "a cancel leaves the deliveries to settle"
    );

    peer.send(
        first,
        spec::ChannelClose {
            reply_code: 406,
            reply_text: "PRECONDITION_FAILED - unknown delivery tag 7".into(),
            class_id: 60,
            method_id: 80,
        },
    );
    let after = stats(&peer);
    assert_eq!(after.server_channel_closes, 1);
    assert_eq!((after.channels_open, after.consumers), (2, 1));
    assert_eq!(after.unsettled, 0, "the broker requeues them itself");
    assert_eq!(after.requeued, 0);

    // A close of ours: the channel no longer counts as open at once.
    let ch = peer.connection.channel(third).unwrap();
    ch.close(ReplyCode::REPLY_SUCCESS, "done").unwrap();
    assert_eq!(stats(&peer).channels_open, 1);
    peer.client_frames();
    peer.send(third, spec::ChannelCloseOk {});
    assert_eq!(stats(&peer).server_channel_closes, 1);

    peer.connection.handle_transport_closed("reset");
    let ended = stats(&peer);
    assert_eq!((ended.channels_open, ended.consumers), (0, 0));
    assert_eq!((ended.unsettled, ended.unconfirmed), (0, 0));
    assert_eq!(ended.server_consumer_cancels, 1);
}

#[test]
fn bytes_and_frames_sent_are_what_was_transmitted() {
    let mut config = Config::default();
    config.copy_bodies_up_to = 1024;
    let mut peer = Peer::new(config);
    peer.handshake(10);
    let channel = peer.open_channel();
    // Three body frames at the negotiated 128 KiB, one not copied.
    publish(&mut peer, channel, false, &[7; 300_000]);
    publish(&mut peer, channel, false, b"small");
    publish(&mut peer, channel, false, b"");
    peer.client_frames();
    // Nothing written for half the interval: a heartbeat.
    peer.advance(Duration::from_secs(5));
    peer.connection
        .channel(channel)
        .unwrap()
        .close(ReplyCode::REPLY_SUCCESS, "bye")
        .unwrap();
    peer.client_frames();

    let written = peer.written.clone();
    assert_eq!(&written[..8], &PROTOCOL_HEADER);
    let mut decoder = FrameDecoder::new(DecodeLimits {
        max_frame_size: u32::MAX,
        ..DecodeLimits::default()
    });
    decoder.extend_from_slice(&written[8..]);
    let mut frames = 0u64;
    let mut heartbeats = 0u64;
    while let Some(frame) = decoder.decode().unwrap() {
        frames += 1;
        heartbeats += u64::from(matches!(frame, Frame::Heartbeat));
    }
    assert_eq!(decoder.buffered_len(), 0);
    let sent = stats(&peer);
    assert_eq!(sent.bytes_sent, written.len() as u64);
    assert_eq!(heartbeats, 1);
    assert_eq!(sent.heartbeats_sent, heartbeats);
    // start-ok, tune-ok, open, channel.open; the publishes' methods and
    // headers (2 each) and 3 + 1 + 0 body frames; the heartbeat; the close.
    assert_eq!(frames, 4 + 6 + 4 + 1 + 1);
    assert_eq!(sent.frames_sent, frames);
    assert_eq!(sent.publishes, 3);
}

#[test]
fn messages_the_core_gives_back_count_as_rejected() {
    let mut config = Config::default();
    config.max_body_size = 8;
    let mut peer = Peer::new(config);
    peer.handshake(0);
    let channel = peer.open_channel();
    consume(&mut peer, channel, "c", false);
    let deliver = spec::BasicDeliver {
        consumer_tag: "c".into(),
        delivery_tag: 1,
        redelivered: false,
        exchange: "".into(),
        routing_key: "jobs".into(),
    };
    peer.send_content(channel, deliver, BasicProperties::default(), &[0; 64]);
    assert!(matches!(
        peer.events().as_slice(),
        [Event::MessageRefused(_)]
    ));
    peer.expect_methods(&["basic.reject"]);
    let after = stats(&peer);
    assert_eq!(
        (after.deliveries, after.rejected, after.requeued),
        (1, 1, 0)
    );
    assert_eq!(after.unsettled, 0);
    let mut ch = peer.connection.channel(channel).unwrap();
    assert_eq!(ch.ack(1, false), Err(UsageError::UnknownDeliveryTag(1)));
}
