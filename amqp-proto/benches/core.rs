//! The state machine's own cost per message, with no sockets: publishing
//! (with and without confirms) and receiving deliveries, driven by bytes a
//! scripted broker would send.
//!
//! Run: `cargo bench -p amqp-proto --bench core`

use std::hint::black_box;
use std::time::{Duration, Instant};

use amqp_proto::codec::{
    body_frame_header, encode_header_frame, encode_method_frame, BasicProperties, ContentHeader,
};
use amqp_proto::spec::constants::FRAME_END;
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Connection, Event};
use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};

const MESSAGES: usize = 1_000;
const FRAME_MAX: u32 = 131_072;

fn server_method(channel: u16, method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method_frame(channel, &method.into(), FRAME_MAX, &mut out).unwrap();
    out
}

/// A connection past the handshake with channel 1 open (in confirm mode
/// when asked) and its consumer `ctag` registered.
fn open_connection(confirms: bool) -> Connection {
    let now = Instant::now();
    let mut connection = Connection::new(Config::default(), now);
    let feed = |connection: &mut Connection, bytes: BytesMut| {
        connection.handle_input(&bytes, now);
        while connection.poll_transmit(now).is_some() {}
        while connection.poll_event().is_some() {}
    };
    feed(
        &mut connection,
        server_method(
            0,
            spec::ConnectionStart {
                version_major: 0,
                version_minor: 9,
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
                ..Default::default()
            },
        ),
    );
    feed(
        &mut connection,
        server_method(
            0,
            spec::ConnectionTune {
                channel_max: 2047,
                frame_max: FRAME_MAX,
                heartbeat: 60,
            },
        ),
    );
    feed(
        &mut connection,
        server_method(0, spec::ConnectionOpenOk::default()),
    );
    let channel = connection.open_channel().unwrap().id();
    feed(
        &mut connection,
        server_method(channel, spec::ChannelOpenOk::default()),
    );
    if confirms {
        connection
            .channel(channel)
            .unwrap()
            .request(spec::ConfirmSelect::default())
            .unwrap();
        feed(
            &mut connection,
            server_method(channel, spec::ConfirmSelectOk::default()),
        );
    }
    connection
        .channel(channel)
        .unwrap()
        .request(spec::BasicConsume {
            queue: "bench".into(),
            consumer_tag: "ctag".into(),
            ..Default::default()
        })
        .unwrap();
    feed(
        &mut connection,
        server_method(
            channel,
            spec::BasicConsumeOk {
                consumer_tag: "ctag".into(),
            },
        ),
    );
    connection
}

fn properties() -> BasicProperties {
    BasicProperties::default()
        .content_type("application/octet-stream")
        .delivery_mode(2u8)
}

/// Publishes `MESSAGES` bodies and drains the transmits; with confirms, the
/// broker's single multiple-ack is fed back and the confirm events drained.
fn publish_all(connection: &mut Connection, body: &Bytes, ack: Option<&[u8]>) {
    let publish = spec::BasicPublish {
        routing_key: "bench".into(),
        ..Default::default()
    };
    let properties = properties();
    for _ in 0..MESSAGES {
        connection
            .channel(1)
            .unwrap()
            .publish(&publish, &properties, body.clone())
            .unwrap();
    }
    // One clock reading for the whole drain, as an adapter's write pass
    // takes: reading it per chunk would measure the clock, not the core.
    let now = Instant::now();
    while let Some(chunk) = connection.poll_transmit(now) {
        black_box(chunk);
    }
    if let Some(ack) = ack {
        connection.handle_input(ack, Instant::now());
        while let Some(event) = connection.poll_event() {
            black_box(event);
        }
    }
}

/// The bytes of `MESSAGES` deliveries to consumer `ctag` on channel 1.
fn deliveries(body_size: usize) -> Bytes {
    let body = vec![0x5a; body_size];
    let mut wire = BytesMut::new();
    for tag in 1..=MESSAGES as u64 {
        let deliver = Method::BasicDeliver(spec::BasicDeliver {
            consumer_tag: "ctag".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "bench".into(),
        });
        encode_method_frame(1, &deliver, FRAME_MAX, &mut wire).unwrap();
        let header = ContentHeader::basic(body_size as u64, properties());
        encode_header_frame(1, &header, FRAME_MAX, &mut wire).unwrap();
        wire.put_slice(&body_frame_header(1, body_size, FRAME_MAX).unwrap());
        wire.put_slice(&body);
        wire.put_u8(FRAME_END);
    }
    wire.freeze()
}

fn receive_all(connection: &mut Connection, wire: &[u8]) -> usize {
    connection.input_buffer().extend_from_slice(wire);
    connection.handle_buffered_input(Instant::now());
    let mut deliveries = 0;
    while let Some(event) = connection.poll_event() {
        deliveries += usize::from(matches!(event, Event::Delivery(_)));
        black_box(event);
    }
    deliveries
}

fn median(rounds: usize, mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..rounds).map(|_| run()).collect();
    times.sort();
    times[rounds / 2]
}

/// The broker's multiple-ack settling every publish up to `tag`.
fn ack_up_to(tag: u64) -> BytesMut {
    server_method(
        1,
        spec::BasicAck {
            delivery_tag: tag,
            multiple: true,
        },
    )
}

fn summary() {
    println!("core cost per message ({MESSAGES} per round, median of 201 rounds, no sockets)");
    for body_size in [16usize, 4096] {
        let body = Bytes::from(vec![0x5a; body_size]);
        // One long-lived connection per measurement, as in an application:
        // its buffers reach their working size in the first rounds.
        let mut connection = open_connection(false);
        let publish = median(201, || {
            let start = Instant::now();
            publish_all(&mut connection, &body, None);
            start.elapsed()
        });
        let mut connection = open_connection(true);
        let mut round = 0u64;
        let confirmed = median(201, || {
            round += 1;
            let ack = ack_up_to(round * MESSAGES as u64);
            let start = Instant::now();
            publish_all(&mut connection, &body, Some(&ack));
            start.elapsed()
        });
        let wire = deliveries(body_size);
        let mut connection = open_connection(false);
        let receive = median(201, || {
            let start = Instant::now();
            assert_eq!(receive_all(&mut connection, &wire), MESSAGES);
            start.elapsed()
        });
        let per = |time: Duration| time.as_nanos() as f64 / MESSAGES as f64;
        println!(
            "{body_size:>5} B body: publish {:.0} ns, publish+confirm {:.0} ns, delivery {:.0} ns",
            per(publish),
            per(confirmed),
            per(receive)
        );
    }
}

fn criterion_benches(c: &mut Criterion) {
    let body = Bytes::from_static(&[0x5a; 16]);
    let wire = deliveries(16);
    let mut group = c.benchmark_group("core-16B");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let mut connection = open_connection(false);
    group.bench_function("publish", |b| {
        b.iter(|| publish_all(&mut connection, &body, None));
    });
    let mut connection = open_connection(true);
    let mut round = 0u64;
    group.bench_function("publish-confirm", |b| {
        b.iter(|| {
            round += 1;
            let ack = ack_up_to(round * MESSAGES as u64);
            publish_all(&mut connection, &body, Some(&ack));
        });
    });
    let mut connection = open_connection(false);
    group.bench_function("delivery", |b| {
        b.iter(|| receive_all(&mut connection, &wire));
    });
    group.finish();
}

criterion_group!(benches, criterion_benches);

fn main() {
    summary();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
