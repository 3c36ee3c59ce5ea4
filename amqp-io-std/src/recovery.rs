//! Automatic recovery for the blocking adapter: after a recoverable
//! failure, whichever thread pumps the connection next (a blocking call, a
//! consumer's `recv_timeout`, `drain_events`, or the heartbeat keeper)
//! waits out the backoff, opens a new socket and hands it to the session,
//! whose supervisor decides when to try and when to give up and whose core
//! declares the topology again. Channel handles, consumers and their
//! callbacks stay as they were.

use std::net::TcpStream;
use std::sync::MutexGuard;
use std::time::Instant;

use amqp_io_common::failover::AddressAttempts;
use amqp_io_common::{Address, ConnectOptions, Error, Result};
use amqp_proto::ConnectionError;

use crate::shared::{Inner, Shared};
use crate::transport::{self, Reader, Writer};

/// What a new socket brings.
pub(crate) struct Transport {
    pub(crate) writer: Writer,
    pub(crate) reader: Reader,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::Session>,
}

/// Opens a socket to `address` (TCP, then TLS when the options ask).
pub(crate) fn open_transport(options: &ConnectOptions, address: &Address) -> Result<Transport> {
    let socket: TcpStream =
        transport::connect(&address.host, address.port, options.connection_timeout)?;
    let reader_socket = socket.try_clone().map_err(|source| Error::Connect {
        address: address.to_string(),
        source,
    })?;
    Ok(Transport {
        writer: Writer::new(socket),
        reader: Reader::new(reader_socket),
        #[cfg(feature = "tls")]
        tls: options
            .tls
            .as_ref()
            .map(|settings| crate::tls::Session::start(&settings.for_address(address)))
            .transpose()?,
    })
}

/// Opens a socket to the first of `attempts` that accepts; its index too.
fn open_any(
    options: &ConnectOptions,
    mut attempts: AddressAttempts<'_>,
) -> Result<(usize, Transport)> {
    while let Some((index, address)) = attempts.next() {
        match open_transport(options, address) {
            Ok(transport) => return Ok((index, transport)),
            Err(error) => attempts.failed(address, error),
        }
    }
    Err(attempts.into_error())
}

impl Shared {
    /// Makes the due reconnection attempt. Called with the lock held;
    /// returns with the lock held again.
    pub(crate) fn reconnect<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> MutexGuard<'a, Inner> {
        if !inner.start_attempt(Instant::now()) {
            return inner;
        }
        let Some(options) = inner.options().cloned() else {
            return inner;
        };
        let lost = inner.address();
        drop(inner);
        // The node it lost is tried last: after a crash its port refuses
        // at once, but a node that vanished from the network would cost a
        // whole connect timeout first.
        let opened = open_any(&options, AddressAttempts::recovering(&options, lost));
        // Nobody reads between sockets, so this waits at most for a read
        // that started before the failure was noticed.
        let mut reader = self.lock_reader();
        let mut inner = self.lock();
        if inner.is_shut_down() {
            return inner;
        }
        match opened {
            Ok((index, transport)) => {
                *reader = transport.reader;
                #[cfg(feature = "tls")]
                inner.replace_transport(transport.writer, transport.tls);
                #[cfg(not(feature = "tls"))]
                inner.replace_transport(transport.writer);
                inner.set_address(index);
                inner.reconnected(Instant::now());
                // As at the first open: a broker that stops reading must
                // not block a writer for ever.
                let timeout = inner.write_timeout();
                let _ = inner.set_write_timeout(timeout);
            }
            Err(error) => {
                let error = ConnectionError::TransportClosed(error.to_string());
                inner.reconnect_failed(&error, Instant::now());
            }
        }
        drop(reader);
        inner
    }

    /// Runs the recovery handler on the reports queued for it, without the
    /// lock (the handler may use the connection).
    pub(crate) fn report_recovery<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> MutexGuard<'a, Inner> {
        let Some((events, mut handler)) = inner.lend_recovery_handler() else {
            return inner;
        };
        drop(inner);
        for event in &events {
            handler(event);
        }
        let mut inner = self.lock();
        inner.return_recovery_handler(handler);
        inner
    }
}
