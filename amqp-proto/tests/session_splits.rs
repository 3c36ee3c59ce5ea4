//! Property: a whole session's server bytes, fed in any chunking, give the
//! same events and the same transmitted bytes as fed in one piece.

mod support;

use amqp_proto::codec::BasicProperties;
use amqp_proto::spec;
use amqp_proto::{Config, Event};
use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use support::Peer;

/// Everything a broker says in one session after the client opened
/// channel 1 and asked for confirms, a consumer and a queue declare:
/// replies, deliveries of several sizes (one split over three body frames),
/// a return, acks and nacks, a blocked notice, and a channel close.
fn server_script(body_sizes: &[usize]) -> BytesMut {
    let mut out = BytesMut::new();
    let method = |out: &mut BytesMut, channel: u16, method: spec::Method| {
        amqp_proto::codec::encode_method_frame(channel, &method, u32::MAX, out).unwrap();
    };
    method(&mut out, 1, spec::ChannelOpenOk::default().into());
    method(&mut out, 1, spec::ConfirmSelectOk::default().into());
    method(
        &mut out,
        1,
        spec::BasicConsumeOk {
            consumer_tag: "ctag".into(),
        }
        .into(),
    );
    method(
        &mut out,
        1,
        spec::QueueDeclareOk {
            queue: "q".into(),
            message_count: 3,
            consumer_count: 1,
        }
        .into(),
    );
    for (tag, size) in body_sizes.iter().enumerate() {
        let body: Vec<u8> = (0..*size).map(|byte| byte as u8).collect();
        let deliver = spec::BasicDeliver {
            consumer_tag: "ctag".into(),
            delivery_tag: tag as u64 + 1,
            redelivered: tag % 2 == 1,
            exchange: "".into(),
            routing_key: "q".into(),
        };
        out.put_slice(&Peer::content_bytes(
            1,
            deliver,
            BasicProperties::default().content_type("text/plain"),
            &body,
        ));
    }
    // A delivery whose body comes in three frames.
    let mut deliver = BytesMut::new();
    method(
        &mut deliver,
        1,
        spec::BasicDeliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 99,
            ..Default::default()
        }
        .into(),
    );
    let header = amqp_proto::codec::ContentHeader::basic(9, BasicProperties::default());
    amqp_proto::codec::encode_header_frame(1, &header, u32::MAX, &mut deliver).unwrap();
    for piece in [b"abc", b"def", b"ghi"] {
        amqp_proto::codec::Frame::Body {
            channel: 1,
            payload: bytes::Bytes::copy_from_slice(piece),
        }
        .encode(&mut deliver, u32::MAX)
        .unwrap();
    }
    out.put_slice(&deliver);
    out.put_slice(&Peer::content_bytes(
        1,
        spec::BasicReturn {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "".into(),
            routing_key: "nowhere".into(),
        },
        BasicProperties::default(),
        b"lost",
    ));
    method(
        &mut out,
        1,
        spec::BasicAck {
            delivery_tag: 1,
            multiple: false,
        }
        .into(),
    );
    method(
        &mut out,
        1,
        spec::BasicNack {
            delivery_tag: 2,
            multiple: true,
            requeue: false,
        }
        .into(),
    );
    method(
        &mut out,
        0,
        spec::ConnectionBlocked {
            reason: "low on memory".into(),
        }
        .into(),
    );
    amqp_proto::codec::encode_heartbeat_frame(&mut out);
    method(&mut out, 0, spec::ConnectionUnblocked::default().into());
    method(
        &mut out,
        1,
        spec::ChannelClose {
            reply_code: 406,
            reply_text: "PRECONDITION_FAILED".into(),
            class_id: 60,
            method_id: 80,
        }
        .into(),
    );
    out
}

/// Runs the session with the server's bytes cut at `cuts`; returns every
/// event and every byte the client wrote after the handshake.
fn run(script: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let mut peer = Peer::new(Config::default());
    peer.handshake(30);
    let channel = peer.connection.open_channel().unwrap();
    let mut handle = peer.connection.channel(channel).unwrap();
    handle.request(spec::ConfirmSelect::default()).unwrap();
    handle
        .request(spec::BasicConsume {
            queue: "q".into(),
            consumer_tag: "ctag".into(),
            ..Default::default()
        })
        .unwrap();
    handle
        .request(spec::QueueDeclare {
            queue: "q".into(),
            passive: true,
            ..Default::default()
        })
        .unwrap();
    for _ in 0..3 {
        handle
            .publish(
                &spec::BasicPublish::default(),
                &BasicProperties::default(),
                &b"m"[..],
            )
            .unwrap();
    }
    let before = peer.transmitted();
    let mut rest = script;
    for cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*cut).min(rest.len()));
        rest = tail;
        peer.feed(piece);
    }
    let events = peer.events();
    let after = peer.transmitted();
    (events, [before.to_vec(), after.to_vec()].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_chunking_gives_the_same_session(
        body_sizes in proptest::collection::vec(0usize..300, 0..6),
        cuts in proptest::collection::vec(1usize..97, 1..40),
    ) {
        let script = server_script(&body_sizes);
        let (events, written) = run(&script, &[script.len()]);
        let (split_events, split_written) = run(&script, &cuts);
        prop_assert_eq!(&split_events, &events);
        prop_assert_eq!(split_written, written);
        // The session really happened: every delivery, the return, three
        // confirms, blocked/unblocked and the channel close.
        let deliveries = events.iter().filter(|event| matches!(event, Event::Delivery(_))).count();
        prop_assert_eq!(deliveries, body_sizes.len() + 1);
        let confirms = events.iter().filter(|event| matches!(event, Event::Confirm { .. })).count();
        prop_assert_eq!(confirms, 3);
        prop_assert!(events.iter().any(|event| matches!(event, Event::Returned(_))));
        let closed_last = matches!(events.last(), Some(Event::ChannelClosed { channel: 1, .. }));
        prop_assert!(closed_last, "the channel close is the last event: {:?}", events.last());
    }
}

/// What a server may say first instead of `connection.start`: its own
/// protocol header (another version, AMQP 1.0, or ours echoed back), bytes
/// that merely start like one, and a real start.
fn first_words() -> Vec<Vec<u8>> {
    let mut start = BytesMut::new();
    amqp_proto::codec::encode_method_frame(
        0,
        &spec::ConnectionStart {
            version_major: 0,
            version_minor: 9,
            mechanisms: "PLAIN".into(),
            locales: "en_US".into(),
            ..Default::default()
        }
        .into(),
        u32::MAX,
        &mut start,
    )
    .unwrap();
    vec![
        b"AMQP\x01\x01\x00\x0a".to_vec(),
        b"AMQP\x00\x00\x09\x01".to_vec(),
        b"AMQP\x03\x01\x00\x00".to_vec(),
        b"AMQX\x00\x00\x09\x01".to_vec(),
        b"AM\x00\x00\x00\x00\x00\x00".to_vec(),
        start.to_vec(),
    ]
}

/// A fresh connection fed `bytes` cut at `cuts`: its events and output.
fn first_contact(bytes: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let mut peer = Peer::new(Config::default());
    let mut rest = bytes;
    for cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*cut).min(rest.len()));
        rest = tail;
        peer.feed(piece);
    }
    (peer.events(), peer.transmitted().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_servers_first_words_mean_the_same_in_any_split(
        which in 0usize..6,
        cuts in proptest::collection::vec(1usize..9, 1..8),
    ) {
        let bytes = first_words().swap_remove(which);
        let whole = first_contact(&bytes, &[bytes.len()]);
        prop_assert_eq!(first_contact(&bytes, &cuts), whole);
    }
}
