//! Golden vectors: frames captured from a real RabbitMQ (3.10) by
//! `cargo run -p amqp-tests --bin capture_golden`, which builds what it sends
//! by hand. Every server frame must decode to the values the conversation
//! implies and re-encode to the very bytes RabbitMQ sent; every client frame
//! (which RabbitMQ accepted) must decode and re-encode to the same bytes.

use std::path::{Path, PathBuf};

use amqp_proto::codec::{
    BasicProperties, ContentHeader, DecodeLimits, FieldArray, FieldTable, FieldValue, Frame,
    FrameDecoder, LongString, ShortString,
};
use amqp_proto::spec::constants::{ReplyCode, PROTOCOL_HEADER};
use amqp_proto::spec::{self, Method};

/// The frame-max RabbitMQ proposed and the capture accepted.
const FRAME_MAX: u32 = 131_072;
const BODY_1: &[u8] = b"golden-body-0001";
const BODY_RETURNED: &[u8] = b"unroutable-00002";
const BODY_3: &[u8] = b"delivered-000003";
const UNROUTABLE_KEY: &str = "golden.no-such-queue";

/// One captured file: `<side>-<NN>-<name>.bin`.
struct Capture {
    side: String,
    sequence: usize,
    name: String,
    bytes: Vec<u8>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

/// Every capture, in conversation order.
fn captures() -> Vec<Capture> {
    let dir = golden_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| {
        panic!(
            "cannot read the golden captures in {}: {error}",
            dir.display()
        )
    });
    let mut captures: Vec<Capture> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bin"))
        .map(|path| {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let mut parts = stem.splitn(3, '-');
            let (Some(side), Some(sequence), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            else {
                panic!("unexpected capture name {}", path.display());
            };
            Capture {
                side: side.to_owned(),
                sequence: sequence.parse().expect("two-digit sequence number"),
                name: name.to_owned(),
                bytes: std::fs::read(&path).unwrap(),
            }
        })
        .collect();
    captures.sort_by_key(|capture| capture.sequence);
    for (index, capture) in captures.iter().enumerate() {
        assert_eq!(
            capture.sequence, index,
            "capture numbers have a gap or duplicate"
        );
        assert!(
            capture.side == "server" || capture.side == "client",
            "{}",
            capture.side
        );
    }
    assert_eq!(
        captures.len(),
        45,
        "the capture holds 45 frames (and the protocol header)"
    );
    captures
}

/// The captures of `side` named `name`, in order.
fn named<'a>(captures: &'a [Capture], side: &str, name: &str) -> Vec<&'a Capture> {
    captures
        .iter()
        .filter(|capture| capture.side == side && capture.name == name)
        .collect()
}

/// The one capture of `side` named `name`.
fn the<'a>(captures: &'a [Capture], side: &str, name: &str) -> &'a Capture {
    let found = named(captures, side, name);
    assert_eq!(found.len(), 1, "expected exactly one {side}-NN-{name}.bin");
    found[0]
}

/// Decodes exactly one frame from `bytes`.
fn decode(bytes: &[u8]) -> Frame {
    let mut decoder = FrameDecoder::new(DecodeLimits {
        max_frame_size: FRAME_MAX,
        ..DecodeLimits::default()
    });
    decoder.extend_from_slice(bytes);
    let frame = decoder
        .decode()
        .unwrap_or_else(|error| panic!("{error} decoding {bytes:02x?}"))
        .unwrap_or_else(|| panic!("incomplete frame {bytes:02x?}"));
    assert_eq!(decoder.buffered_len(), 0, "bytes left after one frame");
    frame
}

fn method(captures: &[Capture], side: &str, name: &str) -> (u16, Method) {
    match decode(&the(captures, side, name).bytes) {
        Frame::Method { channel, method } => (channel, method),
        other => panic!("{side} {name} is not a method frame: {other:?}"),
    }
}

fn header(captures: &[Capture], side: &str, name: &str) -> ContentHeader {
    match decode(&the(captures, side, name).bytes) {
        Frame::Header { channel: 1, header } => ContentHeader::clone(&header),
        other => panic!("{side} {name} is not a content header on channel 1: {other:?}"),
    }
}

fn body(captures: &[Capture], side: &str, name: &str) -> Vec<u8> {
    match decode(&the(captures, side, name).bytes) {
        Frame::Body {
            channel: 1,
            payload,
        } => payload.to_vec(),
        other => panic!("{side} {name} is not a body frame on channel 1: {other:?}"),
    }
}

fn long_string(value: &str) -> FieldValue {
    FieldValue::LongString(LongString::from(value))
}

fn table<const N: usize>(entries: [(&str, FieldValue); N]) -> FieldTable {
    entries.into_iter().collect()
}

/// The application headers the capture published with the first message.
fn published_headers() -> FieldTable {
    let nested = table([
        ("inner", long_string("value")),
        ("depth", FieldValue::LongInt(2)),
    ]);
    let array: FieldArray = vec![long_string("a"), long_string("b"), FieldValue::LongInt(7)].into();
    table([
        ("x-string", long_string("hello")),
        ("x-int", FieldValue::LongInt(-42)),
        ("x-long", FieldValue::LongLongInt(1_234_567_890_123)),
        ("x-bool", FieldValue::Boolean(true)),
        ("x-double", FieldValue::Double(1.5)),
        ("x-timestamp", FieldValue::Timestamp(1_700_000_000)),
        ("x-table", FieldValue::Table(nested)),
        ("x-array", FieldValue::Array(array)),
    ])
}

fn published_properties() -> BasicProperties {
    BasicProperties::default()
        .content_type("text/plain")
        .headers(published_headers())
        .delivery_mode(2)
}

/// The properties of the third message: every one but cluster-id.
fn all_properties() -> BasicProperties {
    BasicProperties::default()
        .content_type("application/octet-stream")
        .content_encoding("identity")
        .headers(table([
            ("trace", long_string("golden")),
            ("attempt", FieldValue::LongInt(3)),
        ]))
        .delivery_mode(1)
        .priority(5)
        .correlation_id("corr-3")
        .reply_to("golden.reply")
        .expiration("60000")
        .message_id("msg-3")
        .timestamp(1_700_000_003u64)
        .message_type("golden.type")
        .user_id("guest")
        .app_id("capture_golden")
}

/// Where two byte strings first differ, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let window = |bytes: &[u8]| {
        format!(
            "{:02x?}",
            &bytes[at.saturating_sub(4)..(at + 8).min(bytes.len())]
        )
    };
    format!(
        "first difference at byte {at} (lengths {} vs {}): captured {} re-encoded {}",
        a.len(),
        b.len(),
        window(a),
        window(b)
    )
}

/// The key check: decoding and re-encoding every capture gives back exactly
/// the bytes on the wire, for RabbitMQ's frames and for ours it accepted.
#[test]
fn every_capture_reencodes_byte_for_byte() {
    let captures = captures();
    let mut failures = Vec::new();
    let mut checked = 0;
    for capture in &captures {
        if capture.name == "protocol-header" {
            assert_eq!(capture.bytes, PROTOCOL_HEADER);
            continue;
        }
        let frame = decode(&capture.bytes);
        let mut out = bytes::BytesMut::new();
        frame.encode(&mut out, FRAME_MAX).unwrap();
        checked += 1;
        if out[..] != capture.bytes[..] {
            failures.push(format!(
                "{}-{:02}-{}: {}",
                capture.side,
                capture.sequence,
                capture.name,
                first_difference(&capture.bytes, &out)
            ));
        }
    }
    assert_eq!(checked, 44);
    assert!(
        failures.is_empty(),
        "re-encoding differs from the capture:\n{}",
        failures.join("\n")
    );
}

/// The server's side of the conversation as one stream decodes the same
/// however it is split.
#[test]
fn the_server_stream_decodes_in_any_split() {
    let captures = captures();
    let server: Vec<&Capture> = captures.iter().filter(|c| c.side == "server").collect();
    assert_eq!(server.len(), 22);
    let expected: Vec<Frame> = server.iter().map(|c| decode(&c.bytes)).collect();
    let stream: Vec<u8> = server
        .iter()
        .flat_map(|c| c.bytes.iter().copied())
        .collect();
    for chunk in [1, 3, 7, 8, 64, stream.len()] {
        let mut decoder = FrameDecoder::new(DecodeLimits {
            max_frame_size: FRAME_MAX,
            ..DecodeLimits::default()
        });
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            decoder.extend_from_slice(piece);
            while let Some(frame) = decoder.decode().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(decoder.buffered_len(), 0);
        assert_eq!(frames, expected, "split in chunks of {chunk}");
    }
}

#[test]
fn handshake() {
    let captures = captures();

    let (channel, start) = method(&captures, "server", "connection-start");
    let Method::ConnectionStart(start) = start else {
        panic!("not connection.start: {start:?}");
    };
    assert_eq!(channel, 0);
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms = start.mechanisms.to_str().unwrap();
    assert!(mechanisms.split(' ').any(|m| m == "PLAIN"), "{mechanisms}");
    assert!(start
        .locales
        .to_str()
        .unwrap()
        .split(' ')
        .any(|l| l == "en_US"));
    let properties = &start.server_properties;
    assert_eq!(properties.get("product"), Some(&long_string("RabbitMQ")));
    assert_eq!(properties.get("version"), Some(&long_string("3.10.8")));
    let Some(FieldValue::Table(capabilities)) = properties.get("capabilities") else {
        panic!("no capabilities table in {properties:?}");
    };
    for capability in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(
            capabilities.get(capability),
            Some(&FieldValue::Boolean(true)),
            "capability {capability}"
        );
    }

    let (channel, start_ok) = method(&captures, "client", "connection-start-ok");
    let Method::ConnectionStartOk(start_ok) = start_ok else {
        panic!("not connection.start-ok: {start_ok:?}");
    };
    assert_eq!(channel, 0);
    assert_eq!(start_ok.mechanism, "PLAIN");
    assert_eq!(start_ok.response.as_bytes(), b"\0guest\0guest");
    assert_eq!(start_ok.locale, "en_US");
    assert_eq!(
        start_ok.client_properties.get("product"),
        Some(&long_string("amqp-foundation capture_golden"))
    );
    let Some(FieldValue::Table(capabilities)) = start_ok.client_properties.get("capabilities")
    else {
        panic!("no client capabilities");
    };
    assert_eq!(
        capabilities.get("publisher_confirms"),
        Some(&FieldValue::Boolean(true))
    );

    let tune = spec::ConnectionTune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 60,
    };
    assert_eq!(
        method(&captures, "server", "connection-tune"),
        (0, tune.into())
    );
    let tune_ok = spec::ConnectionTuneOk {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 0,
    };
    assert_eq!(
        method(&captures, "client", "connection-tune-ok"),
        (0, tune_ok.into())
    );

    let open = spec::ConnectionOpen {
        virtual_host: "/".into(),
        ..Default::default()
    };
    assert_eq!(
        method(&captures, "client", "connection-open"),
        (0, open.into())
    );
    let open_ok = spec::ConnectionOpenOk {
        known_hosts: ShortString::EMPTY,
    };
    assert_eq!(
        method(&captures, "server", "connection-open-ok"),
        (0, open_ok.into())
    );

    let channel_open = spec::ChannelOpen::default();
    assert_eq!(
        method(&captures, "client", "channel-open"),
        (1, channel_open.into())
    );
    let channel_open_ok = spec::ChannelOpenOk::default();
    assert_eq!(
        method(&captures, "server", "channel-open-ok"),
        (1, channel_open_ok.into())
    );
}

/// The server-named queue, from declare-ok.
fn queue_name(captures: &[Capture]) -> ShortString {
    let (channel, declare_ok) = method(captures, "server", "queue-declare-ok");
    let Method::QueueDeclareOk(declare_ok) = declare_ok else {
        panic!("not queue.declare-ok: {declare_ok:?}");
    };
    assert_eq!(channel, 1);
    declare_ok.queue
}

#[test]
fn queue_declare_and_confirm_select() {
    let captures = captures();
    let declare = spec::QueueDeclare {
        exclusive: true,
        arguments: table([("x-message-ttl", FieldValue::LongInt(60_000))]),
        ..Default::default()
    };
    assert_eq!(
        method(&captures, "client", "queue-declare"),
        (1, declare.into())
    );

    let queue = queue_name(&captures);
    assert!(queue.to_str().unwrap().starts_with("amq.gen-"), "{queue:?}");
    assert_eq!(queue.len(), "amq.gen-".len() + 22);
    let declare_ok = spec::QueueDeclareOk {
        queue: queue.clone(),
        message_count: 0,
        consumer_count: 0,
    };
    assert_eq!(
        method(&captures, "server", "queue-declare-ok").1,
        declare_ok.into()
    );

    let select = spec::ConfirmSelect { nowait: false };
    assert_eq!(
        method(&captures, "client", "confirm-select"),
        (1, select.into())
    );
    let select_ok = spec::ConfirmSelectOk {};
    assert_eq!(
        method(&captures, "server", "confirm-select-ok"),
        (1, select_ok.into())
    );
}

#[test]
fn publish_and_confirms() {
    let captures = captures();
    let queue = queue_name(&captures);

    let publish = spec::BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    assert_eq!(
        method(&captures, "client", "basic-publish"),
        (1, publish.into())
    );
    let header_1 = header(&captures, "client", "basic-publish-header");
    assert_eq!(header_1, ContentHeader::basic(16, published_properties()));
    assert_eq!(body(&captures, "client", "basic-publish-body"), BODY_1);

    let mandatory = spec::BasicPublish {
        routing_key: UNROUTABLE_KEY.into(),
        mandatory: true,
        ..Default::default()
    };
    assert_eq!(
        method(&captures, "client", "basic-publish-mandatory"),
        (1, mandatory.into())
    );
    let text_plain = BasicProperties::default().content_type("text/plain");
    assert_eq!(
        header(&captures, "client", "basic-publish-mandatory-header"),
        ContentHeader::basic(16, text_plain)
    );

    // One confirm per publish, tags 1, 2, 3, never multiple.
    let acks: Vec<Frame> = named(&captures, "server", "basic-ack")
        .iter()
        .map(|c| decode(&c.bytes))
        .collect();
    let expected: Vec<Frame> = (1..=3)
        .map(|delivery_tag| Frame::Method {
            channel: 1,
            method: spec::BasicAck {
                delivery_tag,
                multiple: false,
            }
            .into(),
        })
        .collect();
    assert_eq!(acks, expected);
}

#[test]
fn unroutable_mandatory_message_is_returned() {
    let captures = captures();
    let (channel, returned) = method(&captures, "server", "basic-return");
    let Method::BasicReturn(returned) = returned else {
        panic!("not basic.return: {returned:?}");
    };
    assert_eq!(channel, 1);
    assert_eq!(ReplyCode(returned.reply_code), ReplyCode::NO_ROUTE);
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text, "NO_ROUTE");
    assert_eq!(returned.exchange, "");
    assert_eq!(returned.routing_key, UNROUTABLE_KEY);
    let text_plain = BasicProperties::default().content_type("text/plain");
    assert_eq!(
        header(&captures, "server", "basic-return-header"),
        ContentHeader::basic(16, text_plain)
    );
    assert_eq!(
        body(&captures, "server", "basic-return-body"),
        BODY_RETURNED
    );
}

#[test]
fn get_returns_the_published_message() {
    let captures = captures();
    let queue = queue_name(&captures);
    let get = spec::BasicGet {
        queue: queue.clone(),
        no_ack: false,
        ..Default::default()
    };
    assert_eq!(method(&captures, "client", "basic-get"), (1, get.into()));

    let get_ok = spec::BasicGetOk {
        delivery_tag: 1,
        redelivered: false,
        exchange: ShortString::EMPTY,
        routing_key: queue,
        message_count: 0,
    };
    assert_eq!(
        method(&captures, "server", "basic-get-ok"),
        (1, get_ok.into())
    );
    let header = header(&captures, "server", "basic-get-ok-header");
    assert_eq!(header.class_id, spec::BASIC_CLASS_ID);
    assert_eq!(header.weight, 0);
    assert_eq!(header.body_size, 16);
    assert_eq!(
        header.properties.content_type.as_ref().unwrap(),
        "text/plain"
    );
    assert_eq!(header.properties.delivery_mode, Some(2));
    let headers = header.properties.headers.as_ref().unwrap();
    assert_eq!(headers.get("x-int"), Some(&FieldValue::LongInt(-42)));
    assert_eq!(headers.get("x-double"), Some(&FieldValue::Double(1.5)));
    assert_eq!(header.properties, published_properties());
    assert_eq!(body(&captures, "server", "basic-get-ok-body"), BODY_1);

    let ack = spec::BasicAck {
        delivery_tag: 1,
        multiple: false,
    };
    assert_eq!(method(&captures, "client", "basic-ack"), (1, ack.into()));
}

#[test]
fn consume_delivers_with_every_property() {
    let captures = captures();
    let queue = queue_name(&captures);
    let consume = spec::BasicConsume {
        queue: queue.clone(),
        no_ack: true,
        ..Default::default()
    };
    assert_eq!(
        method(&captures, "client", "basic-consume"),
        (1, consume.into())
    );

    let (_, consume_ok) = method(&captures, "server", "basic-consume-ok");
    let Method::BasicConsumeOk(consume_ok) = consume_ok else {
        panic!("not basic.consume-ok: {consume_ok:?}");
    };
    assert!(consume_ok
        .consumer_tag
        .to_str()
        .unwrap()
        .starts_with("amq.ctag-"));

    let publish = spec::BasicPublish {
        routing_key: queue.clone(),
        ..Default::default()
    };
    assert_eq!(
        method(&captures, "client", "basic-publish-all-properties"),
        (1, publish.into())
    );
    assert_eq!(
        header(&captures, "client", "basic-publish-all-properties-header"),
        ContentHeader::basic(16, all_properties())
    );

    let deliver = spec::BasicDeliver {
        consumer_tag: consume_ok.consumer_tag,
        delivery_tag: 2,
        redelivered: false,
        exchange: ShortString::EMPTY,
        routing_key: queue,
    };
    assert_eq!(
        method(&captures, "server", "basic-deliver"),
        (1, deliver.into())
    );
    let header = header(&captures, "server", "basic-deliver-header");
    assert_eq!(header, ContentHeader::basic(16, all_properties()));
    assert_eq!(header.properties.cluster_id, None);
    assert_eq!(body(&captures, "server", "basic-deliver-body"), BODY_3);
}

#[test]
fn qos_heartbeat_and_closes() {
    let captures = captures();
    let qos = spec::BasicQos {
        prefetch_size: 0,
        prefetch_count: 10,
        global: false,
    };
    assert_eq!(method(&captures, "client", "basic-qos"), (1, qos.into()));
    assert_eq!(
        method(&captures, "server", "basic-qos-ok"),
        (1, spec::BasicQosOk {}.into())
    );

    assert_eq!(
        decode(&the(&captures, "client", "heartbeat").bytes),
        Frame::Heartbeat
    );

    let close = spec::ChannelClose {
        reply_code: ReplyCode::REPLY_SUCCESS.0,
        reply_text: "Goodbye".into(),
        class_id: 0,
        method_id: 0,
    };
    assert_eq!(
        method(&captures, "client", "channel-close"),
        (1, close.into())
    );
    assert_eq!(
        method(&captures, "server", "channel-close-ok"),
        (1, spec::ChannelCloseOk {}.into())
    );

    let close = spec::ConnectionClose {
        reply_code: 200,
        reply_text: "Goodbye".into(),
        class_id: 0,
        method_id: 0,
    };
    assert_eq!(
        method(&captures, "client", "connection-close"),
        (0, close.into())
    );
    assert_eq!(
        method(&captures, "server", "connection-close-ok"),
        (0, spec::ConnectionCloseOk {}.into())
    );
}
