//! Live codec test against a real RabbitMQ (127.0.0.1:5672 or `AMQP_ADDR`):
//! the handshake, a queue, a confirmed publish, a mandatory return, a get
//! and the closes, every frame encoded by `amqp_proto` and every reply
//! decoded by its `FrameDecoder`.
//!
//! This test needs the broker; it fails (never silently passes) when the
//! broker cannot be reached.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use amqp_proto::codec::{
    body_frame_header, encode_header_frame, encode_heartbeat_frame, encode_method_frame,
    BasicProperties, ContentHeader, DecodeLimits, FieldTable, FieldValue, Frame, FrameDecoder,
    LongString,
};
use amqp_proto::spec::constants::{ReplyCode, FRAME_END, FRAME_MIN_SIZE, PROTOCOL_HEADER};
use amqp_proto::spec::{self, Method};
use bytes::BytesMut;

const TIMEOUT: Duration = Duration::from_secs(5);

fn broker_addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".to_owned())
}

/// Fails loudly when the broker is unreachable: in CI and locally alike,
/// a test that needs RabbitMQ must not pass without it.
fn unreachable(addr: &str, error: &dyn std::fmt::Display) -> ! {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    panic!(
        "RabbitMQ not reachable at {addr}: {error}; scripts/ensure-rabbitmq starts it{}",
        if ci { " (CI=true)" } else { "" }
    );
}

struct Connection {
    stream: TcpStream,
    decoder: FrameDecoder,
    frame_max: u32,
    out: BytesMut,
}

impl Connection {
    fn connect() -> Self {
        let addr = broker_addr();
        let socket: SocketAddr = match addr.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(socket)) => socket,
            Ok(None) => unreachable(&addr, &"no address"),
            Err(error) => unreachable(&addr, &error),
        };
        let stream = TcpStream::connect_timeout(&socket, TIMEOUT)
            .unwrap_or_else(|error| unreachable(&addr, &error));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            decoder: FrameDecoder::new(DecodeLimits::default()),
            frame_max: FRAME_MIN_SIZE,
            out: BytesMut::new(),
        }
    }

    fn method(&mut self, channel: u16, method: impl Into<Method>) -> &mut Self {
        encode_method_frame(channel, &method.into(), self.frame_max, &mut self.out).unwrap();
        self
    }

    fn content(&mut self, channel: u16, properties: BasicProperties, body: &[u8]) -> &mut Self {
        let header = ContentHeader::basic(body.len() as u64, properties);
        encode_header_frame(channel, &header, self.frame_max, &mut self.out).unwrap();
        let frame_header = body_frame_header(channel, body.len(), self.frame_max).unwrap();
        self.out.extend_from_slice(&frame_header);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(&[FRAME_END]);
        self
    }

    fn heartbeat(&mut self) -> &mut Self {
        encode_heartbeat_frame(&mut self.out);
        self
    }

    fn flush(&mut self) {
        self.stream
            .write_all(&self.out)
            .expect("write to the broker");
        self.out.clear();
    }

    /// The next frame from the broker; fails on timeout, EOF, or a close
    /// the test did not ask for.
    fn recv(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.decoder.decode().expect("the broker's bytes decode") {
                if let Frame::Method {
                    method: Method::ConnectionClose(close),
                    ..
                } = &frame
                {
                    panic!("the broker closed the connection: {close:?}");
                }
                if let Frame::Method {
                    method: Method::ChannelClose(close),
                    ..
                } = &frame
                {
                    panic!("the broker closed a channel: {close:?}");
                }
                return frame;
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("the broker closed the socket"),
                Ok(n) => self.decoder.extend_from_slice(&buf[..n]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("no frame from the broker within {TIMEOUT:?}")
                }
                Err(error) => panic!("read from the broker: {error}"),
            }
        }
    }

    fn recv_method(&mut self, channel: u16) -> Method {
        match self.recv() {
            Frame::Method { channel: c, method } if c == channel => method,
            other => panic!("expected a method on channel {channel}, got {other:?}"),
        }
    }

    /// A content header and its (single) body frame.
    fn recv_content(&mut self, channel: u16) -> (ContentHeader, Vec<u8>) {
        let header = match self.recv() {
            Frame::Header { channel: c, header } if c == channel => ContentHeader::clone(&header),
            other => panic!("expected a content header, got {other:?}"),
        };
        let mut body = Vec::new();
        while (body.len() as u64) < header.body_size {
            match self.recv() {
                Frame::Body {
                    channel: c,
                    payload,
                } if c == channel => body.extend_from_slice(&payload),
                other => panic!("expected a body frame, got {other:?}"),
            }
        }
        assert_eq!(body.len() as u64, header.body_size);
        (header, body)
    }
}

fn client_properties() -> FieldTable {
    let capabilities: FieldTable = [
        ("publisher_confirms", true),
        ("basic.nack", true),
        ("consumer_cancel_notify", true),
    ]
    .into_iter()
    .collect();
    let mut properties = FieldTable::new();
    properties.insert("product", "amqp-foundation broker_codec test");
    properties.insert("version", env!("CARGO_PKG_VERSION"));
    properties.insert("capabilities", capabilities);
    properties
}

#[test]
fn handshake_publish_confirm_get_and_close_with_our_codec() {
    let mut conn = Connection::connect();

    // Handshake.
    conn.stream.write_all(&PROTOCOL_HEADER).unwrap();
    let Method::ConnectionStart(start) = conn.recv_method(0) else {
        panic!("expected connection.start");
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert!(start
        .mechanisms
        .to_str()
        .unwrap()
        .split(' ')
        .any(|m| m == "PLAIN"));
    assert_eq!(
        start.server_properties.get("product"),
        Some(&FieldValue::LongString(LongString::from("RabbitMQ")))
    );
    let Some(FieldValue::Table(capabilities)) = start.server_properties.get("capabilities") else {
        panic!("no capabilities in {:?}", start.server_properties);
    };
    assert_eq!(
        capabilities.get("publisher_confirms"),
        Some(&FieldValue::Boolean(true))
    );

    conn.method(
        0,
        spec::ConnectionStartOk {
            client_properties: client_properties(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        },
    )
    .flush();
    let Method::ConnectionTune(tune) = conn.recv_method(0) else {
        panic!("expected connection.tune (wrong credentials close the socket instead)");
    };
    assert!(
        tune.frame_max == 0 || tune.frame_max >= FRAME_MIN_SIZE,
        "{tune:?}"
    );
    let frame_max = if tune.frame_max == 0 {
        131_072
    } else {
        tune.frame_max.min(131_072)
    };
    conn.method(
        0,
        spec::ConnectionTuneOk {
            channel_max: tune.channel_max,
            frame_max,
            heartbeat: 0,
        },
    )
    .method(
        0,
        spec::ConnectionOpen {
            virtual_host: "/".into(),
            ..Default::default()
        },
    )
    .flush();
    conn.frame_max = frame_max;
    conn.decoder.set_max_frame_size(frame_max);
    assert!(matches!(conn.recv_method(0), Method::ConnectionOpenOk(_)));

    // A channel, a server-named exclusive queue, confirms.
    conn.method(1, spec::ChannelOpen::default()).flush();
    assert!(matches!(conn.recv_method(1), Method::ChannelOpenOk(_)));
    let mut arguments = FieldTable::new();
    arguments.insert("x-message-ttl", 60_000i32);
    conn.method(
        1,
        spec::QueueDeclare {
            exclusive: true,
            arguments,
            ..Default::default()
        },
    )
    .flush();
    let Method::QueueDeclareOk(declare_ok) = conn.recv_method(1) else {
        panic!("expected queue.declare-ok");
    };
    let queue = declare_ok.queue;
    assert!(queue.to_str().unwrap().starts_with("amq.gen-"), "{queue:?}");
    assert_eq!(
        (declare_ok.message_count, declare_ok.consumer_count),
        (0, 0)
    );
    conn.method(1, spec::ConfirmSelect { nowait: false })
        .flush();
    assert_eq!(
        conn.recv_method(1),
        Method::ConfirmSelectOk(spec::ConfirmSelectOk {})
    );

    // A confirmed publish to the queue.
    let mut headers = FieldTable::new();
    headers.insert("x-string", "hello");
    headers.insert("x-int", -42i32);
    headers.insert("x-long", 1_234_567_890_123i64);
    headers.insert("x-bool", true);
    let properties = BasicProperties::default()
        .content_type("text/plain")
        .delivery_mode(2)
        .headers(headers)
        .message_id("broker-codec-1")
        .timestamp(1_700_000_000u64);
    let body = b"broker-codec-body";
    conn.method(
        1,
        spec::BasicPublish {
            routing_key: queue.clone(),
            ..Default::default()
        },
    )
    .content(1, properties.clone(), body)
    .flush();
    assert_eq!(
        conn.recv_method(1),
        Method::BasicAck(spec::BasicAck {
            delivery_tag: 1,
            multiple: false
        })
    );

    // A mandatory publish nobody can take comes back, then is confirmed.
    conn.method(
        1,
        spec::BasicPublish {
            routing_key: "broker-codec.no-such-queue".into(),
            mandatory: true,
            ..Default::default()
        },
    )
    .content(
        1,
        BasicProperties::default().content_type("text/plain"),
        b"nobody",
    )
    .flush();
    let Method::BasicReturn(returned) = conn.recv_method(1) else {
        panic!("expected basic.return");
    };
    assert_eq!(ReplyCode(returned.reply_code), ReplyCode::NO_ROUTE);
    assert_eq!(returned.reply_text, "NO_ROUTE");
    assert_eq!(returned.routing_key, "broker-codec.no-such-queue");
    let (_, returned_body) = conn.recv_content(1);
    assert_eq!(returned_body, b"nobody");
    assert_eq!(
        conn.recv_method(1),
        Method::BasicAck(spec::BasicAck {
            delivery_tag: 2,
            multiple: false
        })
    );

    // Get the first message back, then find the queue empty; a heartbeat
    // in between is accepted silently.
    conn.method(
        1,
        spec::BasicGet {
            queue: queue.clone(),
            no_ack: true,
            ..Default::default()
        },
    )
    .flush();
    assert_eq!(
        conn.recv_method(1),
        Method::BasicGetOk(spec::BasicGetOk {
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: queue.clone(),
            message_count: 0,
        })
    );
    let (header, got_body) = conn.recv_content(1);
    assert_eq!(header.class_id, spec::BASIC_CLASS_ID);
    assert_eq!(header.body_size, body.len() as u64);
    assert_eq!(header.properties, properties);
    assert_eq!(got_body, body);
    conn.heartbeat()
        .method(
            1,
            spec::BasicGet {
                queue: queue.clone(),
                no_ack: true,
                ..Default::default()
            },
        )
        .flush();
    assert!(matches!(conn.recv_method(1), Method::BasicGetEmpty(_)));

    // Close the channel, then the connection.
    conn.method(
        1,
        spec::ChannelClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
    )
    .flush();
    assert_eq!(
        conn.recv_method(1),
        Method::ChannelCloseOk(spec::ChannelCloseOk {})
    );
    conn.method(
        0,
        spec::ConnectionClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
    )
    .flush();
    assert_eq!(
        conn.recv_method(0),
        Method::ConnectionCloseOk(spec::ConnectionCloseOk {})
    );
    assert_eq!(conn.decoder.buffered_len(), 0);
    // After close-ok the client closes the socket (spec 4.2.2).
    conn.stream.shutdown(std::net::Shutdown::Both).unwrap();
}
