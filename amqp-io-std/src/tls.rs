//! The TLS session (the `tls` feature) between the core and the socket.
//!
//! rustls is itself sans-IO (`read_tls`, `process_new_packets`,
//! `write_tls`), so it slots in where the core's bytes meet the socket:
//! raw bytes read go through it into the core's input buffer, the core's
//! transmits go through it into the writer.

use std::io::{Read, Write};
use std::sync::Arc;

use amqp_io_common::TlsSettings;
use std::time::Instant;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use amqp_io_common::{Error, Result};

use crate::transport::write_until_empty;

/// A client TLS session between the core and the socket.
#[derive(Debug)]
pub(crate) struct Session(Box<ClientConnection>);

impl Session {
    pub(crate) fn start(settings: &TlsSettings) -> Result<Self> {
        let name = ServerName::try_from(settings.server_name.clone()).map_err(|error| {
            Error::Tls(format!(
                "invalid server name {:?}: {error}",
                settings.server_name
            ))
        })?;
        let mut connection = ClientConnection::new(Arc::clone(&settings.config), name)
            .map_err(|error| Error::Tls(error.to_string()))?;
        // The core bounds what it queues; the records made from it are
        // handed to the socket writer right away, so rustls need not cap
        // its buffer a second time.
        connection.set_buffer_limit(None);
        Ok(Self(Box::new(connection)))
    }

    /// Decrypts `raw` into `plain`. An error (a bad record, a failed
    /// handshake, the server's close_notify) ends the transport.
    pub(crate) fn receive(&mut self, mut raw: &[u8], plain: &mut BytesMut) -> Result<(), String> {
        while !raw.is_empty() {
            self.0
                .read_tls(&mut raw)
                .map_err(|error| format!("TLS: {error}"))?;
            let state = self
                .0
                .process_new_packets()
                .map_err(|error| format!("TLS: {error}"))?;
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plain.len();
                plain.resize(start + available, 0);
                let target = plain.get_mut(start..).unwrap_or_default();
                self.0
                    .reader()
                    .read_exact(target)
                    .map_err(|error| format!("TLS: {error}"))?;
            }
            if state.peer_has_closed() {
                return Err("the server closed the TLS session".into());
            }
        }
        Ok(())
    }

    /// Encrypts everything `core` has queued (rustls buffers it until
    /// the handshake is done) and writes the records that are ready
    /// (handshake messages and encrypted data) to `socket`.
    pub(crate) fn send(
        &mut self,
        core: &mut amqp_proto::Connection,
        now: Instant,
        socket: &mut dyn Write,
    ) -> Result<(), String> {
        let tls = &mut self.0;
        write_until_empty(|| {
            core.wants_write()
                .then(|| core.write_to(&mut tls.writer(), now))
        })
        .map_err(|error| format!("TLS: {error}"))?;
        write_until_empty(|| tls.wants_write().then(|| tls.write_tls(socket)))
            .map_err(|error| format!("writing to the socket failed: {error}"))
    }
}
