//! Captures golden frames from a real RabbitMQ.
//!
//! Speaks AMQP 0-9-1 over a raw TCP connection with every byte it sends
//! built by hand (not by `amqp_proto`'s encoder, so that the captures are
//! independent of it), and saves each frame RabbitMQ sent and each frame we
//! sent that RabbitMQ accepted, whole (7-byte header, payload, `0xCE`), into
//! `amqp-proto/tests/data/golden/{server,client}-<NN>-<name>.bin`, where
//! `NN` numbers the frames in conversation order.
//!
//! Usage: `cargo run -p amqp-tests --bin capture_golden` with RabbitMQ on
//! 127.0.0.1:5672 (guest/guest), or `AMQP_ADDR=host:port`.

use std::error::Error;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// The body of the first published message: 16 bytes.
const BODY_1: &[u8; 16] = b"golden-body-0001";
const BODY_RETURNED: &[u8; 16] = b"unroutable-00002";
const BODY_3: &[u8; 16] = b"delivered-000003";
const UNROUTABLE_KEY: &str = "golden.no-such-queue";

/// Big-endian byte building, by hand.
#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn octet(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }
    fn short(&mut self, value: u16) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn long(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn longlong(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn shortstr(&mut self, value: &str) -> &mut Self {
        let len = u8::try_from(value.len()).expect("short string under 256 bytes");
        self.octet(len).raw(value.as_bytes())
    }
    fn longstr(&mut self, value: &[u8]) -> &mut Self {
        let len = u32::try_from(value.len()).expect("long string under 4 GiB");
        self.long(len).raw(value)
    }
    /// A field table whose entries were built in `entries`.
    fn table(&mut self, entries: &Self) -> &mut Self {
        self.longstr(&entries.0)
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// Builds field-table entries: name, type tag, value.
#[derive(Default)]
struct Table(Buf);

impl Table {
    fn entry(&mut self, name: &str, tag: u8) -> &mut Buf {
        self.0.shortstr(name).octet(tag)
    }
    fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.entry(name, b'S').longstr(value.as_bytes());
        self
    }
    fn boolean(&mut self, name: &str, value: bool) -> &mut Self {
        self.entry(name, b't').octet(u8::from(value));
        self
    }
    fn int(&mut self, name: &str, value: i32) -> &mut Self {
        self.entry(name, b'I').raw(&value.to_be_bytes());
        self
    }
    fn long_long(&mut self, name: &str, value: i64) -> &mut Self {
        self.entry(name, b'l').raw(&value.to_be_bytes());
        self
    }
    fn double(&mut self, name: &str, value: f64) -> &mut Self {
        self.entry(name, b'd').raw(&value.to_be_bytes());
        self
    }
    fn timestamp(&mut self, name: &str, value: u64) -> &mut Self {
        self.entry(name, b'T').longlong(value);
        self
    }
    fn table(&mut self, name: &str, value: &Self) -> &mut Self {
        self.entry(name, b'F').table(&value.0);
        self
    }
    /// An array of long strings and a signed int, tagged element by element.
    fn array(&mut self, name: &str, strings: &[&str], int: i32) -> &mut Self {
        let mut items = Buf::default();
        for item in strings {
            items.octet(b'S').longstr(item.as_bytes());
        }
        items.octet(b'I').raw(&int.to_be_bytes());
        self.entry(name, b'A').longstr(&items.0);
        self
    }
}

/// A whole frame: type, channel, size, payload, frame end.
fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Buf::default();
    out.octet(frame_type)
        .short(channel)
        .long(u32::try_from(payload.len()).expect("payload under 4 GiB"))
        .raw(payload)
        .octet(FRAME_END);
    out.bytes()
}

/// A method frame: class id, method id, then the fields in `fields`.
fn method(channel: u16, class_id: u16, method_id: u16, fields: &Buf) -> Vec<u8> {
    let mut payload = Buf::default();
    payload.short(class_id).short(method_id).raw(&fields.0);
    frame(FRAME_METHOD, channel, &payload.0)
}

/// A basic content header frame: class 60, weight 0, body size, flags, then
/// the property values already laid out in flag order.
fn content_header(channel: u16, body_size: u64, flags: u16, values: &Buf) -> Vec<u8> {
    let mut payload = Buf::default();
    payload
        .short(60)
        .short(0)
        .longlong(body_size)
        .short(flags)
        .raw(&values.0);
    frame(FRAME_HEADER, channel, &payload.0)
}

fn empty() -> Buf {
    Buf::default()
}

/// One frame as read: its type, channel and whole bytes.
struct RawFrame {
    frame_type: u8,
    channel: u16,
    bytes: Vec<u8>,
}

impl RawFrame {
    fn payload(&self) -> &[u8] {
        &self.bytes[7..self.bytes.len() - 1]
    }

    fn method_id(&self) -> Option<(u16, u16)> {
        let payload = self.payload();
        (self.frame_type == FRAME_METHOD && payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            )
        })
    }
}

/// Hand-written names for the methods this program expects from the server.
fn method_name(class_id: u16, method_id: u16) -> String {
    let name = match (class_id, method_id) {
        (10, 10) => "connection-start",
        (10, 30) => "connection-tune",
        (10, 41) => "connection-open-ok",
        (10, 50) => "connection-close",
        (10, 51) => "connection-close-ok",
        (20, 11) => "channel-open-ok",
        (20, 40) => "channel-close",
        (20, 41) => "channel-close-ok",
        (50, 11) => "queue-declare-ok",
        (60, 11) => "basic-qos-ok",
        (60, 21) => "basic-consume-ok",
        (60, 50) => "basic-return",
        (60, 60) => "basic-deliver",
        (60, 71) => "basic-get-ok",
        (60, 72) => "basic-get-empty",
        (60, 80) => "basic-ack",
        (60, 120) => "basic-nack",
        (85, 11) => "confirm-select-ok",
        _ => return format!("method-{class_id}-{method_id}"),
    };
    name.to_owned()
}

struct Capture {
    stream: TcpStream,
    dir: PathBuf,
    sequence: usize,
    /// Name of the last content-carrying method received, to name the
    /// header and body frames that follow it.
    last_content_method: String,
}

impl Capture {
    fn save(&mut self, side: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self
            .dir
            .join(format!("{side}-{:02}-{name}.bin", self.sequence));
        self.sequence += 1;
        fs::write(&path, bytes)?;
        println!("{:>6} bytes  {}", bytes.len(), path.display());
        Ok(())
    }

    /// Sends bytes and records them as a client capture.
    fn send(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        self.save("client", name, bytes)
    }

    fn read_frame(&mut self) -> Result<RawFrame> {
        let mut header = [0u8; 7];
        self.stream.read_exact(&mut header)?;
        if &header[..4] == b"AMQP" {
            return Err(format!("server refused the protocol header: {header:?}").into());
        }
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        if size > 1 << 20 {
            return Err(format!("implausible frame size {size}").into());
        }
        let mut bytes = vec![0u8; 7 + size + 1];
        bytes[..7].copy_from_slice(&header);
        self.stream.read_exact(&mut bytes[7..])?;
        if bytes[7 + size] != FRAME_END {
            return Err(format!("bad frame end {:#04x}", bytes[7 + size]).into());
        }
        Ok(RawFrame {
            frame_type: header[0],
            channel: u16::from_be_bytes([header[1], header[2]]),
            bytes,
        })
    }

    /// Reads one frame, saves it under a name derived from its contents,
    /// and returns it with that name.
    fn receive(&mut self) -> Result<(String, RawFrame)> {
        let frame = self.read_frame()?;
        let name = match frame.frame_type {
            FRAME_METHOD => {
                let (class_id, method_id) = frame
                    .method_id()
                    .ok_or("method frame shorter than its ids")?;
                let name = method_name(class_id, method_id);
                if matches!((class_id, method_id), (60, 50 | 60 | 71)) {
                    self.last_content_method.clone_from(&name);
                }
                name
            }
            FRAME_HEADER => format!("{}-header", self.last_content_method),
            FRAME_BODY => format!("{}-body", self.last_content_method),
            FRAME_HEARTBEAT => "heartbeat".to_owned(),
            other => format!("frame-type-{other}"),
        };
        self.save("server", &name, &frame.bytes)?;
        if name == "connection-close" || name == "channel-close" {
            let payload = frame.payload();
            let text_len = usize::from(payload[6]);
            return Err(format!(
                "the broker closed {} on channel {}: {} {}",
                if name == "connection-close" {
                    "the connection"
                } else {
                    "a channel"
                },
                frame.channel,
                u16::from_be_bytes([payload[4], payload[5]]),
                String::from_utf8_lossy(&payload[7..7 + text_len])
            )
            .into());
        }
        Ok((name, frame))
    }

    /// Reads one frame and checks that it is `expected`.
    fn expect(&mut self, expected: &str) -> Result<RawFrame> {
        let (name, frame) = self.receive()?;
        if name != expected {
            return Err(format!("expected {expected}, received {name}").into());
        }
        Ok(frame)
    }

    /// Reads frames until every name in `expected` has arrived, in any order
    /// (a confirm and a delivery race each other).
    fn expect_all(&mut self, expected: &[&str]) -> Result<()> {
        let mut missing: Vec<&str> = expected.to_vec();
        while !missing.is_empty() {
            let (name, _) = self.receive()?;
            let Some(index) = missing.iter().position(|m| *m == name) else {
                return Err(format!("unexpected {name} while waiting for {missing:?}").into());
            };
            missing.remove(index);
        }
        Ok(())
    }
}

/// Application headers with a few typed values.
fn headers_table() -> Table {
    let mut nested = Table::default();
    nested.string("inner", "value").int("depth", 2);
    let mut table = Table::default();
    table
        .string("x-string", "hello")
        .int("x-int", -42)
        .long_long("x-long", 1_234_567_890_123)
        .boolean("x-bool", true)
        .double("x-double", 1.5)
        .timestamp("x-timestamp", 1_700_000_000)
        .table("x-table", &nested)
        .array("x-array", &["a", "b"], 7);
    table
}

fn run(addr: &str, dir: &Path) -> Result<()> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    let mut c = Capture {
        stream,
        dir: dir.to_owned(),
        sequence: 0,
        last_content_method: String::new(),
    };

    // Handshake.
    c.send("protocol-header", b"AMQP\x00\x00\x09\x01")?;
    c.expect("connection-start")?;

    let mut capabilities = Table::default();
    capabilities
        .boolean("publisher_confirms", true)
        .boolean("consumer_cancel_notify", true)
        .boolean("exchange_exchange_bindings", true)
        .boolean("basic.nack", true)
        .boolean("connection.blocked", true)
        .boolean("authentication_failure_close", true);
    let mut client_properties = Table::default();
    client_properties
        .string("product", "amqp-foundation capture_golden")
        .string("version", "0.1.0")
        .string("platform", "Rust")
        .table("capabilities", &capabilities)
        .string("connection_name", "capture_golden");
    let mut start_ok = Buf::default();
    start_ok
        .table(&client_properties.0)
        .shortstr("PLAIN")
        .longstr(b"\0guest\0guest")
        .shortstr("en_US");
    c.send("connection-start-ok", &method(0, 10, 11, &start_ok))?;

    let tune = c.expect("connection-tune")?;
    let fields = &tune.payload()[4..];
    let channel_max = u16::from_be_bytes([fields[0], fields[1]]);
    let frame_max = u32::from_be_bytes([fields[2], fields[3], fields[4], fields[5]]);
    // Heartbeats off, so that no heartbeat from the server lands at an
    // unpredictable place in the capture; we send one ourselves below.
    let mut tune_ok = Buf::default();
    tune_ok.short(channel_max).long(frame_max).short(0);
    c.send("connection-tune-ok", &method(0, 10, 31, &tune_ok))?;

    let mut open = Buf::default();
    open.shortstr("/").shortstr("").octet(0);
    c.send("connection-open", &method(0, 10, 40, &open))?;
    c.expect("connection-open-ok")?;

    // Channel 1, a server-named exclusive queue, confirms.
    let mut channel_open = Buf::default();
    channel_open.shortstr("");
    c.send("channel-open", &method(1, 20, 10, &channel_open))?;
    c.expect("channel-open-ok")?;

    let mut arguments = Table::default();
    arguments.int("x-message-ttl", 60_000);
    let mut declare = Buf::default();
    // ticket, queue "", bits: passive 0, durable 0, exclusive 1, auto-delete 0, nowait 0
    declare
        .short(0)
        .shortstr("")
        .octet(0b0000_0100)
        .table(&arguments.0);
    c.send("queue-declare", &method(1, 50, 10, &declare))?;
    let declare_ok = c.expect("queue-declare-ok")?;
    let fields = &declare_ok.payload()[4..];
    let queue = String::from_utf8(fields[1..1 + usize::from(fields[0])].to_vec())?;
    println!("queue: {queue}");

    let mut select = Buf::default();
    select.octet(0);
    c.send("confirm-select", &method(1, 85, 10, &select))?;
    c.expect("confirm-select-ok")?;

    // Publish 1: to the queue, persistent, with typed headers; confirmed.
    let mut publish = Buf::default();
    publish.short(0).shortstr("").shortstr(&queue).octet(0);
    c.send("basic-publish", &method(1, 60, 40, &publish))?;
    let mut properties = Buf::default();
    properties
        .shortstr("text/plain")
        .table(&headers_table().0)
        .octet(2);
    // content-type (bit 15), headers (bit 13), delivery-mode (bit 12)
    let flags = 0x8000 | 0x2000 | 0x1000;
    c.send(
        "basic-publish-header",
        &content_header(1, 16, flags, &properties),
    )?;
    c.send("basic-publish-body", &frame(FRAME_BODY, 1, BODY_1))?;
    c.expect("basic-ack")?;

    // Publish 2: mandatory, unroutable: returned, then confirmed.
    let mut publish = Buf::default();
    publish
        .short(0)
        .shortstr("")
        .shortstr(UNROUTABLE_KEY)
        .octet(0b01);
    c.send("basic-publish-mandatory", &method(1, 60, 40, &publish))?;
    let mut properties = Buf::default();
    properties.shortstr("text/plain");
    c.send(
        "basic-publish-mandatory-header",
        &content_header(1, 16, 0x8000, &properties),
    )?;
    c.send(
        "basic-publish-mandatory-body",
        &frame(FRAME_BODY, 1, BODY_RETURNED),
    )?;
    c.expect("basic-return")?;
    c.expect("basic-return-header")?;
    c.expect("basic-return-body")?;
    c.expect("basic-ack")?;

    // Get publish 1 back, then acknowledge it.
    let mut get = Buf::default();
    get.short(0).shortstr(&queue).octet(0);
    c.send("basic-get", &method(1, 60, 70, &get))?;
    c.expect("basic-get-ok")?;
    c.expect("basic-get-ok-header")?;
    c.expect("basic-get-ok-body")?;
    let mut ack = Buf::default();
    ack.longlong(1).octet(0);
    c.send("basic-ack", &method(1, 60, 80, &ack))?;

    // Consume, and publish 3 with every property set to trigger a delivery.
    let mut consume = Buf::default();
    // ticket, queue, consumer tag "" (server-generated),
    // bits: no-local 0, no-ack 1, exclusive 0, nowait 0; arguments {}
    consume
        .short(0)
        .shortstr(&queue)
        .shortstr("")
        .octet(0b0000_0010)
        .table(&empty());
    c.send("basic-consume", &method(1, 60, 20, &consume))?;
    c.expect("basic-consume-ok")?;

    let mut publish = Buf::default();
    publish.short(0).shortstr("").shortstr(&queue).octet(0);
    c.send("basic-publish-all-properties", &method(1, 60, 40, &publish))?;
    let mut small_headers = Table::default();
    small_headers.string("trace", "golden").int("attempt", 3);
    let mut properties = Buf::default();
    properties
        .shortstr("application/octet-stream") // content-type
        .shortstr("identity") // content-encoding
        .table(&small_headers.0) // headers
        .octet(1) // delivery-mode
        .octet(5) // priority
        .shortstr("corr-3") // correlation-id
        .shortstr("golden.reply") // reply-to
        .shortstr("60000") // expiration
        .shortstr("msg-3") // message-id
        .longlong(1_700_000_003) // timestamp
        .shortstr("golden.type") // type
        .shortstr("guest") // user-id
        .shortstr("capture_golden"); // app-id
                                     // every flag from bit 15 down to bit 3; cluster-id (bit 2) unset
    let flags = 0xFFF8;
    c.send(
        "basic-publish-all-properties-header",
        &content_header(1, 16, flags, &properties),
    )?;
    c.send(
        "basic-publish-all-properties-body",
        &frame(FRAME_BODY, 1, BODY_3),
    )?;
    c.expect_all(&[
        "basic-deliver",
        "basic-deliver-header",
        "basic-deliver-body",
        "basic-ack",
    ])?;

    let mut qos = Buf::default();
    // prefetch-size 0, prefetch-count 10, global 0
    qos.long(0).short(10).octet(0);
    c.send("basic-qos", &method(1, 60, 10, &qos))?;
    c.expect("basic-qos-ok")?;

    c.send("heartbeat", &frame(FRAME_HEARTBEAT, 0, &[]))?;

    let mut close = Buf::default();
    close.short(200).shortstr("Goodbye").short(0).short(0);
    c.send("channel-close", &method(1, 20, 40, &close))?;
    c.expect("channel-close-ok")?;

    c.send("connection-close", &method(0, 10, 50, &close))?;
    c.expect("connection-close-ok")?;
    Ok(())
}

fn main() {
    let addr = std::env::var("AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".to_owned());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../amqp-proto/tests/data/golden");
    if let Err(error) = fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {error}", dir.display());
        std::process::exit(1);
    }
    // Start from a clean directory so no capture of an older run lingers.
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "bin") {
                let _ = fs::remove_file(path);
            }
        }
    }
    if let Err(error) = run(&addr, &dir) {
        eprintln!("capture failed: {error}");
        std::process::exit(1);
    }
}
