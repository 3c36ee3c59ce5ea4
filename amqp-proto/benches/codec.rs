//! Codec throughput: parsing a long buffer of deliveries (basic.deliver,
//! content header with content-type and delivery-mode, body) and encoding
//! basic.publish frames, beside a plain memcpy of the same bytes.
//!
//! Criterion reports each benchmark; the summary printed first gives
//! messages/s, frames/s and bytes/s for parse and memcpy from one run, and
//! the ratio of parse throughput to memcpy throughput.
//!
//! Run: `cargo bench -p amqp-proto --bench codec`

use std::hint::black_box;
use std::time::{Duration, Instant};

use amqp_proto::codec::{
    body_frame_header, encode_header_frame, encode_method_frame, BasicProperties, ContentHeader,
    DecodeLimits, Frame, FrameDecoder,
};
use amqp_proto::spec::{BasicDeliver, BasicPublish, Method};
use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};

const MESSAGES: usize = 1_000;
const FRAME_MAX: u32 = 131_072;

fn properties() -> BasicProperties {
    BasicProperties::default()
        .content_type("application/octet-stream")
        .delivery_mode(2u8)
}

/// The bytes a broker sends for `MESSAGES` deliveries of `body_size` bytes.
fn deliveries(body_size: usize) -> Bytes {
    let body = vec![0x5a; body_size];
    let mut wire = BytesMut::new();
    for tag in 1..=MESSAGES as u64 {
        let deliver = Method::BasicDeliver(BasicDeliver {
            consumer_tag: "amq.ctag-Xq1bQ9nP2sT7vW4yZ0aB3c".into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: "bench-queue".into(),
        });
        encode_method_frame(1, &deliver, FRAME_MAX, &mut wire).unwrap();
        let header = ContentHeader::basic(body_size as u64, properties());
        encode_header_frame(1, &header, FRAME_MAX, &mut wire).unwrap();
        Frame::Body {
            channel: 1,
            payload: Bytes::from(body.clone()),
        }
        .encode(&mut wire, FRAME_MAX)
        .unwrap();
    }
    wire.freeze()
}

fn loaded_decoder(wire: &[u8]) -> FrameDecoder {
    let mut decoder = FrameDecoder::new(DecodeLimits {
        max_frame_size: FRAME_MAX,
        ..DecodeLimits::default()
    });
    decoder.buffer_mut().reserve(wire.len());
    decoder.buffer_mut().extend_from_slice(wire);
    decoder
}

fn parse_all(decoder: &mut FrameDecoder) -> usize {
    let mut frames = 0;
    while let Ok(Some(frame)) = decoder.decode() {
        black_box(&frame);
        frames += 1;
    }
    frames
}

/// Encodes `MESSAGES` publishes the way the core sends them: method and
/// header frames into the output buffer, the body as its own chunk.
fn encode_publishes(out: &mut BytesMut, chunks: &mut Vec<Bytes>, body: &Bytes) {
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "".into(),
        routing_key: "bench-queue".into(),
        ..Default::default()
    });
    let header = ContentHeader::basic(body.len() as u64, properties());
    for _ in 0..MESSAGES {
        encode_method_frame(1, &publish, FRAME_MAX, out).unwrap();
        encode_header_frame(1, &header, FRAME_MAX, out).unwrap();
        out.put_slice(&body_frame_header(1, body.len(), FRAME_MAX).unwrap());
        chunks.push(body.clone());
        out.put_u8(amqp_proto::spec::constants::FRAME_END);
    }
}

/// Median time of `rounds` runs of `run`, each preceded by an untimed `setup`.
fn median<S>(rounds: usize, mut setup: impl FnMut() -> S, mut run: impl FnMut(&mut S)) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let mut state = setup();
            let start = Instant::now();
            run(&mut state);
            let elapsed = start.elapsed();
            drop(state);
            elapsed
        })
        .collect();
    times.sort();
    times[rounds / 2]
}

fn rate(count: usize, time: Duration) -> f64 {
    count as f64 / time.as_secs_f64()
}

fn summary() {
    println!("codec summary: {MESSAGES} deliveries per buffer, medians of 301 runs");
    println!(
        "{:>6} {:>9} {:>12} {:>12} {:>12} {:>10} {:>12} {:>8}",
        "body",
        "bytes/msg",
        "parse msg/s",
        "frames/s",
        "parse MB/s",
        "ns/msg",
        "memcpy MB/s",
        "ratio"
    );
    for body_size in [16usize, 4096] {
        let wire = deliveries(body_size);
        let parse = median(
            301,
            || loaded_decoder(&wire),
            |decoder| {
                black_box(parse_all(decoder));
            },
        );
        let mut destination = vec![0u8; wire.len()];
        let copy = median(
            301,
            || (),
            |()| {
                destination.copy_from_slice(black_box(&wire));
                black_box(&destination);
            },
        );
        let parse_bytes = rate(wire.len(), parse);
        let copy_bytes = rate(wire.len(), copy);
        println!(
            "{:>6} {:>9} {:>12.0} {:>12.0} {:>12.1} {:>10.1} {:>12.1} {:>8.3}",
            body_size,
            wire.len() / MESSAGES,
            rate(MESSAGES, parse),
            rate(MESSAGES * 3, parse),
            parse_bytes / 1e6,
            parse.as_nanos() as f64 / MESSAGES as f64,
            copy_bytes / 1e6,
            parse_bytes / copy_bytes,
        );
    }
    for body_size in [16usize, 4096] {
        let body = Bytes::from(vec![0x5a; body_size]);
        let encode = median(
            301,
            || {
                (
                    BytesMut::with_capacity(256 * MESSAGES),
                    Vec::with_capacity(MESSAGES),
                )
            },
            |(out, chunks)| encode_publishes(out, chunks, &body),
        );
        println!(
            "encode basic.publish + header + body-frame header, {body_size} B body: {:.0} msg/s, {:.1} ns/msg (body not copied)",
            rate(MESSAGES, encode),
            encode.as_nanos() as f64 / MESSAGES as f64
        );
    }
}

fn criterion_benches(c: &mut Criterion) {
    for body_size in [16usize, 4096] {
        let wire = deliveries(body_size);
        let mut group = c.benchmark_group(format!("deliveries-{body_size}B"));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function("parse", |b| {
            b.iter_batched_ref(|| loaded_decoder(&wire), parse_all, BatchSize::LargeInput);
        });
        let mut destination = vec![0u8; wire.len()];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                destination.copy_from_slice(black_box(&wire));
                black_box(&destination);
            });
        });
        group.finish();

        let body = Bytes::from(vec![0x5a; body_size]);
        let mut group = c.benchmark_group(format!("publish-{body_size}B"));
        group.throughput(Throughput::Elements(MESSAGES as u64));
        group.bench_function("encode", |b| {
            b.iter_batched_ref(
                || {
                    (
                        BytesMut::with_capacity(256 * MESSAGES),
                        Vec::with_capacity(MESSAGES),
                    )
                },
                |(out, chunks)| encode_publishes(out, chunks, &body),
                BatchSize::LargeInput,
            );
        });
        group.finish();
    }
}

criterion_group!(benches, criterion_benches);

fn main() {
    summary();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
