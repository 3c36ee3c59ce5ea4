//! A fault-injecting TCP proxy on loopback. It forwards both directions
//! and, on command: stalls (stops forwarding but keeps both sockets open,
//! as a hung peer or a black-holed network does), cuts every connection
//! it carries, splits the traffic into 1-byte writes, or holds each chunk
//! for a while before passing it on (a slow link).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often a forwarding thread looks at the flags.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Faults {
    stalled: AtomicBool,
    fragmented: AtomicBool,
    /// New connections are closed at once, as by a broker that is down.
    refusing: AtomicBool,
    /// How long each chunk is held before it is written, in nanoseconds;
    /// 0 for no delay.
    delay_nanos: AtomicU64,
    /// Bumped by [`Proxy::cut`]: connections of an older generation end.
    generation: AtomicU64,
}

/// A running proxy; it forwards every connection it accepts to the target.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    faults: Arc<Faults>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `target`.
    pub fn start(target: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let target = target.to_owned();
        let shared = Arc::clone(&faults);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if shared.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(client_reader), Ok(server_reader)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let generation = shared.generation.load(Ordering::SeqCst);
                let (up, down) = (Arc::clone(&shared), Arc::clone(&shared));
                thread::spawn(move || forward(client_reader, server, &up, generation));
                thread::spawn(move || forward(server_reader, client, &down, generation));
            }
        });
        Ok(Self { address, faults })
    }

    /// Where to connect to go through the proxy.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops (or resumes) forwarding in both directions; the sockets stay
    /// open.
    pub fn stall(&self, stalled: bool) {
        self.faults.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Forwards byte by byte, one write each (or back to whole reads).
    pub fn fragment(&self, fragmented: bool) {
        self.faults.fragmented.store(fragmented, Ordering::SeqCst);
    }

    /// Holds each chunk read, in both directions, for `delay` before
    /// writing it on (`None`, or a zero delay, forwards at once again), as
    /// a slow link does: a request and its reply each take at least
    /// `delay` longer. Each direction forwards one chunk at a time, in
    /// order: a chunk that arrives while an earlier one is held is read,
    /// and its own delay starts, only once that one is written (so a
    /// stream of chunks is slowed, not just shifted). A chunk held when
    /// the connection is [cut](Self::cut) is dropped.
    pub fn delay(&self, delay: Option<Duration>) {
        let nanos = delay.map_or(0, |delay| {
            u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX)
        });
        self.faults.delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Closes each new connection as soon as it is accepted (or, with
    /// `false`, forwards them again), as a broker that is down or still
    /// booting does; connections already carried are not affected.
    pub fn refuse(&self, refusing: bool) {
        self.faults.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Closes every connection carried so far, both sides, as a broken
    /// network or a restarted broker does. New connections go through.
    pub fn cut(&self) {
        self.faults.generation.fetch_add(1, Ordering::SeqCst);
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream, faults: &Faults, generation: u64) {
    let mut buffer = vec![0u8; 64 * 1024];
    if from.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    loop {
        if faults.generation.load(Ordering::SeqCst) != generation {
            break;
        }
        if faults.stalled.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                let delay = faults.delay_nanos.load(Ordering::SeqCst);
                if delay > 0 {
                    thread::sleep(Duration::from_nanos(delay));
                    if faults.generation.load(Ordering::SeqCst) != generation {
                        break;
                    }
                }
                let chunk = &buffer[..read];
                let written = if faults.fragmented.load(Ordering::SeqCst) {
                    chunk.chunks(1).try_for_each(|byte| to.write_all(byte))
                } else {
                    to.write_all(chunk)
                };
                if written.is_err() {
                    break;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
