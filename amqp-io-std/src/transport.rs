//! The socket: connecting, and the two halves the adapter reads and writes
//! through.
//!
//! The socket is split with `try_clone` so that one thread can block in a
//! read while others write (publish, ack) under the connection lock.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use amqp_io_common::{Error, Result};

/// Bytes one read may take from the socket.
const READ_CHUNK: usize = 64 * 1024;

/// Connects to the first address of `host:port` that accepts within
/// `timeout`, with Nagle's algorithm off: the core already coalesces frames.
pub(crate) fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let address = format!("{host}:{port}");
    let failed = |source| Error::Connect {
        address: address.clone(),
        source,
    };
    let mut last_error =
        io::Error::new(io::ErrorKind::NotFound, "the host name resolved to nothing");
    let addresses = (host, port).to_socket_addrs().map_err(failed)?;
    for candidate in addresses {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(socket) => {
                socket.set_nodelay(true).map_err(failed)?;
                return Ok(socket);
            }
            Err(error) => last_error = error,
        }
    }
    Err(failed(last_error))
}

/// The reading half and its buffer. Only the thread holding it reads, so
/// bytes reach the core in the order they arrived.
#[derive(Debug)]
pub(crate) struct Reader {
    socket: TcpStream,
    buffer: Box<[u8]>,
}

/// What one read produced.
pub(crate) enum ReadOutcome<'a> {
    Data(&'a [u8]),
    /// The deadline passed with nothing to read.
    Idle,
    /// End of stream or a socket error.
    Closed(String),
}

impl Reader {
    pub(crate) fn new(socket: TcpStream) -> Self {
        Self {
            socket,
            buffer: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// Reads once, blocking until data arrives or `until` passes.
    pub(crate) fn read(&mut self, until: Instant) -> ReadOutcome<'_> {
        // A zero timeout means "block forever" to the socket.
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if let Err(error) = self.socket.set_read_timeout(Some(wait)) {
            return ReadOutcome::Closed(error.to_string());
        }
        loop {
            match self.socket.read(&mut self.buffer) {
                Ok(0) => return ReadOutcome::Closed("the server closed the socket".into()),
                Ok(read) => return ReadOutcome::Data(self.buffer.get(..read).unwrap_or_default()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return ReadOutcome::Idle
                }
                Err(error) => return ReadOutcome::Closed(error.to_string()),
            }
        }
    }
}

/// The writing half. It keeps nothing: the core's queue is the only one
/// (`Connection::write_to` takes from it what the socket accepted), so
/// nothing is copied here and what is unwritten stays where
/// `publish_readiness` can see it.
#[derive(Debug)]
pub(crate) struct Writer {
    socket: TcpStream,
    shut: bool,
}

impl Writer {
    pub(crate) fn new(socket: TcpStream) -> Self {
        Self {
            socket,
            shut: false,
        }
    }

    /// Bounds how long one write may block (a broker that stopped reading).
    pub(crate) fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.socket.set_write_timeout(Some(timeout))
    }

    pub(crate) fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }

    /// Shuts the socket, which also wakes a thread blocked reading it.
    pub(crate) fn shutdown(&mut self) {
        if !self.shut {
            self.shut = true;
            // The socket may already be gone; there is nothing to report.
            let _ = self.socket.shutdown(Shutdown::Both);
        }
    }
}

impl Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.socket.write(bytes)
    }

    fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        self.socket.write_vectored(slices)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// Makes write calls until `write_once` says nothing is left (`None`);
/// each call is one write (the core's `write_to`, rustls's `write_tls`).
/// An interrupted call is made again; a call that takes nothing from a
/// blocking socket is an error.
pub(crate) fn write_until_empty(
    mut write_once: impl FnMut() -> Option<io::Result<usize>>,
) -> io::Result<()> {
    while let Some(written) = write_once() {
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
