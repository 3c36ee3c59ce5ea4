//! A TCP proxy on loopback for fault tests: it forwards both directions
//! until told to stall, then stops forwarding while keeping both sockets
//! open, as a hung peer or a black-holed network does.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often a forwarding thread looks at the stall flag.
const POLL: Duration = Duration::from_millis(20);

/// A running proxy; it forwards every connection it accepts to the target.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    stalled: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `target`.
    pub fn start(target: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let stalled = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let flag = Arc::clone(&stalled);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (Ok(client_reader), Ok(server_reader)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let upstream = Arc::clone(&flag);
                let downstream = Arc::clone(&flag);
                thread::spawn(move || forward(client_reader, server, &upstream));
                thread::spawn(move || forward(server_reader, client, &downstream));
            }
        });
        Ok(Self { address, stalled })
    }

    /// Where to connect to go through the proxy.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops (or resumes) forwarding in both directions; the sockets stay
    /// open.
    pub fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool) {
    let mut buffer = vec![0u8; 64 * 1024];
    if from.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    loop {
        if stalled.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
