//! The output paths side by side: the cost per publish of taking the
//! core's output, and the write calls it takes, for 16,384 publishes.
//!
//! - `chunks, bodies apart`: `poll_transmit` with `copy_bodies_up_to = 0`,
//!   the layout before 2026-12-02 (every body its own chunk);
//! - `chunks`: `poll_transmit` with the default `copy_bodies_up_to`;
//! - `batches`: `poll_transmit_into` with at most 64 KiB per batch into one
//!   reused buffer;
//! - `write_to`: one vectored write per call into a writer that takes at
//!   most 64 KiB per call (a socket with a 64 KiB send buffer).
//!
//! A "write" is a call into a sink that looks at the bytes and drops them:
//! no sockets, so what is measured is the core and the copying the path
//! itself does.
//!
//! Run: `cargo bench -p amqp-proto --bench output`

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant};

use amqp_proto::codec::{encode_method_frame, BasicProperties};
use amqp_proto::spec::{self, Method};
use amqp_proto::{Config, Connection};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};

const PUBLISHES: usize = 16_384;
const FRAME_MAX: u32 = 131_072;
const WRITE_MAX: usize = 64 * 1024;

fn server_method(channel: u16, method: impl Into<Method>) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method_frame(channel, &method.into(), FRAME_MAX, &mut out).unwrap();
    out
}

/// A connection past the handshake with channel 1 open.
fn open_connection(config: Config) -> Connection {
    let now = Instant::now();
    let mut connection = Connection::new(config, now);
    let start = spec::ConnectionStart {
        version_major: 0,
        version_minor: 9,
        mechanisms: "PLAIN".into(),
        locales: "en_US".into(),
        ..Default::default()
    };
    let tune = spec::ConnectionTune {
        channel_max: 2047,
        frame_max: FRAME_MAX,
        heartbeat: 60,
    };
    connection.handle_input(&server_method(0, start), now);
    connection.handle_input(&server_method(0, tune), now);
    connection.handle_input(&server_method(0, spec::ConnectionOpenOk::default()), now);
    let channel = connection.open_channel().unwrap();
    connection.handle_input(
        &server_method(channel.id(), spec::ChannelOpenOk::default()),
        now,
    );
    while connection.poll_transmit(now).is_some() {}
    while connection.poll_event().is_some() {}
    connection
}

#[derive(Clone, Copy, Debug)]
enum Path {
    ChunksBodiesApart,
    Chunks,
    Batches,
    WriteTo,
}

impl Path {
    const ALL: [Self; 4] = [
        Self::ChunksBodiesApart,
        Self::Chunks,
        Self::Batches,
        Self::WriteTo,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::ChunksBodiesApart => "chunks, bodies apart (before)",
            Self::Chunks => "chunks (poll_transmit)",
            Self::Batches => "batches (poll_transmit_into, 64 KiB)",
            Self::WriteTo => "write_to (vectored, 64 KiB per call)",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Self::ChunksBodiesApart => "chunks-bodies-apart",
            Self::Chunks => "chunks",
            Self::Batches => "batches-64k",
            Self::WriteTo => "write_to-64k",
        }
    }

    fn config(self) -> Config {
        match self {
            Self::ChunksBodiesApart => Config::default().with_copy_bodies_up_to(0),
            _ => Config::default(),
        }
    }
}

/// A socket stand-in: takes at most `WRITE_MAX` bytes per call, looks at
/// them and drops them.
struct Sink {
    calls: usize,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        let mut taken = 0;
        for buf in bufs {
            let n = buf.len().min(WRITE_MAX - taken);
            black_box(&buf[..n]);
            taken += n;
            if taken == WRITE_MAX {
                break;
            }
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One adapter's output side: the path and what it keeps between writes.
struct Writer {
    path: Path,
    batch: Vec<u8>,
    sink: Sink,
}

impl Writer {
    fn new(path: Path) -> Self {
        Self {
            path,
            batch: Vec::with_capacity(WRITE_MAX),
            sink: Sink { calls: 0 },
        }
    }

    /// Writes everything queued; returns the write calls it took.
    fn drain(&mut self, connection: &mut Connection, now: Instant) -> usize {
        let before = self.sink.calls;
        match self.path {
            Path::ChunksBodiesApart | Path::Chunks => {
                while let Some(chunk) = connection.poll_transmit(now) {
                    self.sink.write_all(&chunk).unwrap();
                }
            }
            Path::Batches => loop {
                self.batch.clear();
                if connection.poll_transmit_into(now, WRITE_MAX, &mut self.batch) == 0 {
                    break;
                }
                self.sink.write_all(&self.batch).unwrap();
            },
            Path::WriteTo => {
                while connection.wants_write() {
                    connection.write_to(&mut self.sink, now).unwrap();
                }
            }
        }
        self.sink.calls - before
    }
}

/// Publishes `PUBLISHES` bodies, writing everything after every `burst`
/// publishes; returns the write calls.
fn publish_all(
    connection: &mut Connection,
    writer: &mut Writer,
    body: &Bytes,
    burst: usize,
) -> usize {
    let publish = spec::BasicPublish {
        routing_key: "bench".into(),
        ..Default::default()
    };
    let properties = BasicProperties::default();
    let now = Instant::now();
    let mut calls = 0;
    for n in 1..=PUBLISHES {
        connection
            .channel(1)
            .unwrap()
            .publish(&publish, &properties, body.clone())
            .unwrap();
        if n % burst == 0 {
            calls += writer.drain(connection, now);
        }
    }
    calls + writer.drain(connection, now)
}

fn median(rounds: usize, mut run: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..rounds).map(|_| run()).collect();
    times.sort();
    times[rounds / 2]
}

fn summary() {
    println!("output paths: {PUBLISHES} publishes per round, median of 51 rounds, no sockets");
    for body_size in [16usize, 4096] {
        let body = Bytes::from(vec![0x5a; body_size]);
        for path in Path::ALL {
            let mut connection = open_connection(path.config());
            let mut writer = Writer::new(path);
            let calls_queued = publish_all(&mut connection, &mut writer, &body, PUBLISHES);
            let calls_each = publish_all(&mut connection, &mut writer, &body, 1);
            let time = median(51, || {
                let start = Instant::now();
                black_box(publish_all(&mut connection, &mut writer, &body, PUBLISHES));
                start.elapsed()
            });
            let per = time.as_nanos() as f64 / PUBLISHES as f64;
            println!(
                "{body_size:>5} B {:<38} {per:>6.1} ns/publish, write calls: {calls_queued:>6} all queued, {calls_each:>6} written after each",
                path.name()
            );
        }
    }
}

/// Where copying a body with its frames stops paying: `write_to` with the
/// body copied in (`copy_bodies_up_to` at the body's size) and apart (0).
fn threshold() {
    println!("write_to, body copied with its frames or apart (copy_bodies_up_to = size or 0)");
    for body_size in [256usize, 1024, 2048, 4096, 16_384] {
        let body = Bytes::from(vec![0x5a; body_size]);
        let mut per = [0.0; 2];
        for (slot, copy) in per.iter_mut().zip([body_size, 0]) {
            let config = Config::default().with_copy_bodies_up_to(copy);
            let mut connection = open_connection(config);
            let mut writer = Writer::new(Path::WriteTo);
            let time = median(51, || {
                let start = Instant::now();
                black_box(publish_all(&mut connection, &mut writer, &body, 64));
                start.elapsed()
            });
            *slot = time.as_nanos() as f64 / PUBLISHES as f64;
        }
        println!(
            "{body_size:>6} B: copied {:>6.1} ns/publish, apart {:>6.1} ns/publish",
            per[0], per[1]
        );
    }
}

fn criterion_benches(c: &mut Criterion) {
    let body = Bytes::from_static(&[0x5a; 16]);
    let mut group = c.benchmark_group("output-16B");
    group.throughput(Throughput::Elements(PUBLISHES as u64));
    for path in Path::ALL {
        let mut connection = open_connection(path.config());
        let mut writer = Writer::new(path);
        group.bench_function(path.id(), |b| {
            b.iter(|| publish_all(&mut connection, &mut writer, &body, PUBLISHES));
        });
    }
    group.finish();
}

criterion_group!(benches, criterion_benches);

fn main() {
    summary();
    threshold();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
