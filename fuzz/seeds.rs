//! Writes seed corpora for every target into `corpus/<target>/`: the frames
//! captured from RabbitMQ (`amqp-proto/tests/data/golden`), their payloads
//! for the method and header targets, and a few encoded by hand with every
//! field-table type. Run from `fuzz/`: `cargo run --bin seeds`.

use std::fs;
use std::path::Path;

use amqp_proto::codec::{
    encode_content_header, encode_field_table, encode_method, BasicProperties, ContentHeader,
    FieldArray, FieldTable, FieldValue, Frame,
};
use amqp_proto::spec::{self, Method};
use bytes::{Bytes, BytesMut};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn every_type_table() -> FieldTable {
    let mut inner = FieldTable::new();
    inner.insert("publisher_confirms", true);
    let array: FieldArray = [FieldValue::LongInt(-1), FieldValue::Void, FieldValue::from("s")]
        .into_iter()
        .collect();
    [
        ("t", FieldValue::Boolean(true)),
        ("b", FieldValue::ShortShortInt(-1)),
        ("B", FieldValue::ShortShortUInt(1)),
        ("s", FieldValue::ShortInt(-2)),
        ("u", FieldValue::ShortUInt(2)),
        ("I", FieldValue::LongInt(-3)),
        ("i", FieldValue::LongUInt(3)),
        ("l", FieldValue::LongLongInt(-4)),
        ("f", FieldValue::Float(1.5)),
        ("d", FieldValue::Double(2.5)),
        ("D", FieldValue::Decimal { scale: 2, value: 314 }),
        ("S", FieldValue::from("text")),
        ("A", FieldValue::Array(array)),
        ("T", FieldValue::Timestamp(1_700_000_000)),
        ("F", FieldValue::Table(inner)),
        ("V", FieldValue::Void),
        ("x", FieldValue::ByteArray(Bytes::from_static(b"\x00\x01"))),
    ]
    .into_iter()
    .collect()
}

fn main() {
    let mut seeds = 0;
    let golden = Path::new("../amqp-proto/tests/data/golden");
    let mut server_stream = Vec::new();
    if let Ok(entries) = fs::read_dir(golden) {
        let mut paths: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(bytes) = fs::read(&path) else { continue };
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            // A frame: 7-byte header, payload, end octet.
            if bytes.len() < 8 || bytes[0] == b'A' {
                continue;
            }
            write("frame", &name, &[&[0u8][..], &bytes].concat());
            let payload = &bytes[7..bytes.len() - 1];
            match bytes[0] {
                1 => write("method", &name, payload),
                2 => write("content_header", &name, payload),
                _ => {}
            }
            if name.starts_with("server-") && !name.contains("connection") {
                server_stream.extend_from_slice(&bytes);
            }
            seeds += 1;
        }
    }
    // The connection target: server traffic after the handshake, with a
    // leading control byte (chunk size).
    write("connection", "golden-session", &[&[7u8][..], &server_stream].concat());

    let table = every_type_table();
    let mut encoded = BytesMut::new();
    encode_field_table(&table, &mut encoded).expect("seed table");
    write("field_table", "every-type", &encoded);

    let start = Method::ConnectionStart(spec::ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: table.clone(),
        mechanisms: "PLAIN AMQPLAIN".into(),
        locales: "en_US".into(),
    });
    let declare = Method::QueueDeclare(spec::QueueDeclare {
        queue: "q".into(),
        durable: true,
        arguments: table.clone(),
        ..Default::default()
    });
    for (name, method) in [("connection-start", &start), ("queue-declare", &declare)] {
        let mut bytes = BytesMut::new();
        encode_method(method, &mut bytes).expect("seed method");
        write("method", name, &bytes);
        let mut frame = BytesMut::new();
        Frame::Method { channel: 1, method: method.clone() }
            .encode(&mut frame, u32::MAX)
            .expect("seed frame");
        write("frame", name, &[&[3u8][..], &frame].concat());
    }

    let properties = BasicProperties::default()
        .content_type("application/json")
        .headers(table)
        .delivery_mode(2u8)
        .priority(5u8)
        .message_id("id")
        .timestamp(1_700_000_000u64);
    let mut header = BytesMut::new();
    encode_content_header(&ContentHeader::basic(42, properties), &mut header)
        .expect("seed header");
    write("content_header", "all-kinds", &header);
    write("frame_structured", "empty", &[0; 64]);

    // The trace_context target: a length byte, a traceparent to parse,
    // then a headers table carrying one as `S` and one as `x`.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
    let headers: FieldTable = [
        ("traceparent", FieldValue::from(traceparent)),
        ("tracestate", FieldValue::from("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")),
        ("baggage", FieldValue::from("user=42")),
    ]
    .into_iter()
    .collect();
    let bytes_headers: FieldTable =
        [("traceparent", FieldValue::ByteArray(Bytes::from_static(future.as_bytes())))]
            .into_iter()
            .collect();
    let cases = [("long-string", traceparent, &headers), ("byte-array", future, &bytes_headers)];
    for (name, text, table) in cases {
        let mut encoded = BytesMut::new();
        encode_field_table(table, &mut encoded).expect("seed headers");
        let len = u8::try_from(text.len()).expect("short");
        write("trace_context", name, &[&[len][..], text.as_bytes(), &encoded].concat());
    }
    println!("wrote seeds ({seeds} golden frames)");
}
