//! Automatic recovery for the blocking adapter: after a recoverable
//! failure, whichever thread pumps the connection next (a blocking call, a
//! consumer's `recv_timeout`, `drain_events`, or the heartbeat keeper)
//! waits out the backoff, opens a new socket and hands the core
//! `Connection::recover`; the core declares the topology again. Channel
//! handles, consumers and their callbacks stay as they were.

use std::net::TcpStream;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use amqp_io_common::recovery::{jitter_seed, RecoveryEvent, RecoveryHandler};
use amqp_io_common::{ConnectOptions, Error, Result};
use amqp_proto::{Connection as Core, ConnectionError};

use crate::shared::{Inner, Shared};
use crate::transport::{self, Reader, Writer};

/// Where a recovery stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Nothing to recover.
    Connected,
    /// Attempt `attempt` (from 0) is due at `at`.
    Waiting {
        attempt: u32,
        at: Instant,
        last_error: ConnectionError,
    },
    /// A thread is opening a socket.
    Connecting,
    /// A new socket is open; the core is shaking hands and declaring. A
    /// failure now continues the count from `attempt`.
    Replaying { attempt: u32 },
}

/// Automatic recovery's settings and progress, behind the connection lock.
pub(crate) struct Recovery {
    pub(crate) options: ConnectOptions,
    pub(crate) handler: Option<RecoveryHandler>,
    pub(crate) events: Vec<RecoveryEvent>,
    pub(crate) phase: Phase,
}

impl Recovery {
    pub(crate) fn new(options: ConnectOptions) -> Self {
        Self {
            options,
            handler: None,
            events: Vec::new(),
            phase: Phase::Connected,
        }
    }

    fn backoff(&self) -> amqp_proto::Backoff {
        self.options.recovery.unwrap_or_default()
    }

    /// Schedules attempt `attempt` after `delay`; a later attempt reports
    /// the failure of the one before.
    fn wait_for_attempt(&mut self, attempt: u32, delay: Duration, last_error: ConnectionError) {
        if attempt > 0 {
            self.events.push(RecoveryEvent::AttemptFailed {
                attempt,
                error: last_error.to_string(),
                retry_in: delay,
            });
        }
        self.phase = Phase::Waiting {
            attempt,
            at: Instant::now() + delay,
            last_error,
        };
    }

    /// True while no socket is usable (reading would be pointless).
    pub(crate) fn is_between_sockets(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. } | Phase::Connecting)
    }

    /// When the next attempt is due, while waiting for one.
    pub(crate) fn attempt_due(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// What a new socket brings.
struct Transport {
    writer: Writer,
    reader: Reader,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Session>,
}

fn open_transport(options: &ConnectOptions) -> Result<Transport> {
    let socket: TcpStream =
        transport::connect(&options.host, options.port, options.connection_timeout)?;
    let reader_socket = socket.try_clone().map_err(|source| Error::Connect {
        address: format!("{}:{}", options.host, options.port),
        source,
    })?;
    let writer = Writer::new(socket);
    // As at the first open: a broker that stops reading must not block a
    // writer for ever.
    let heartbeat = u64::from(options.config.heartbeat);
    let _ = writer.set_timeout(Duration::from_secs((heartbeat * 2).max(30)));
    Ok(Transport {
        writer,
        reader: Reader::new(reader_socket),
        #[cfg(feature = "tls")]
        tls: options
            .tls
            .as_ref()
            .map(crate::tls::Session::start)
            .transpose()?,
    })
}

impl Inner {
    /// The connection failed: recover from it, if recovery is on, the
    /// connection had opened, the application has not closed it, and a new
    /// connection may cure the cause. Returns false when it is over.
    pub(crate) fn start_recovery(&mut self, error: &ConnectionError) -> bool {
        let Some(recovery) = self.recovery.as_mut() else {
            return false;
        };
        // A new connection that fails in any way (a broker still starting
        // may refuse it) is one failed attempt; only the first failure
        // must be one a new connection may cure.
        let attempting = matches!(recovery.phase, Phase::Replaying { .. });
        let recoverable = !self.shutdown
            && self.opened.is_some()
            && (attempting || error.is_recoverable())
            && self.core.topology().is_some();
        let attempt = match recovery.phase {
            Phase::Replaying { attempt } => attempt + 1,
            _ => 0,
        };
        if !recoverable {
            if matches!(recovery.phase, Phase::Replaying { .. }) {
                let error = error.clone();
                recovery.events.push(RecoveryEvent::GaveUp { error });
            }
            recovery.phase = Phase::Connected;
            return false;
        }
        let Some(delay) = recovery.backoff().delay(attempt, jitter_seed()) else {
            let error = error.clone();
            recovery.events.push(RecoveryEvent::GaveUp { error });
            recovery.phase = Phase::Connected;
            return false;
        };
        if attempt == 0 {
            let error = error.clone();
            recovery.events.push(RecoveryEvent::Started { error });
        }
        recovery.wait_for_attempt(attempt, delay, error.clone());
        // Until a new socket is open, calls see a connection that is not
        // open yet rather than the failed one.
        let config = recovery.options.config.clone();
        let topology = self.core.topology().cloned().unwrap_or_default();
        self.core = Core::recover(config, topology, Instant::now());
        true
    }

    /// The new connection declared everything again.
    pub(crate) fn recovered(&mut self, event: RecoveryEvent) {
        if let Some(recovery) = self.recovery.as_mut() {
            recovery.phase = Phase::Connected;
            recovery.events.push(event);
        }
    }
}

impl Shared {
    /// Makes the due reconnection attempt. Called with the lock held and
    /// the recovery waiting; returns with the lock held again.
    pub(crate) fn reconnect<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
    ) -> MutexGuard<'a, Inner> {
        let Some(recovery) = inner.recovery.as_mut() else {
            return inner;
        };
        let Phase::Waiting {
            attempt,
            last_error,
            ..
        } = std::mem::replace(&mut recovery.phase, Phase::Connecting)
        else {
            return inner;
        };
        let options = recovery.options.clone();
        drop(inner);
        let opened = open_transport(&options);
        // Nobody reads between sockets, so this waits at most for a read
        // that started before the failure was noticed.
        let mut reader = self.lock_reader();
        let mut inner = self.lock();
        if inner.shutdown {
            give_up(&mut inner, &last_error);
            return inner;
        }
        match opened {
            Ok(transport) => {
                *reader = transport.reader;
                #[cfg(feature = "tls")]
                inner.replace_transport(transport.writer, transport.tls);
                #[cfg(not(feature = "tls"))]
                inner.replace_transport(transport.writer);
                let topology = inner.core.topology().cloned().unwrap_or_default();
                inner.core = Core::recover(options.config.clone(), topology, Instant::now());
                if let Some(recovery) = inner.recovery.as_mut() {
                    recovery.phase = Phase::Replaying { attempt };
                }
            }
            Err(error) => {
                let attempt = attempt + 1;
                let last_error = ConnectionError::TransportClosed(error.to_string());
                let backoff = options.recovery.unwrap_or_default();
                match backoff.delay(attempt, jitter_seed()) {
                    Some(delay) => {
                        if let Some(recovery) = inner.recovery.as_mut() {
                            recovery.wait_for_attempt(attempt, delay, last_error);
                        }
                    }
                    None => give_up(&mut inner, &last_error),
                }
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
        let Some(recovery) = inner.recovery.as_mut() else {
            return inner;
        };
        if recovery.events.is_empty() || recovery.handler.is_none() {
            return inner;
        }
        let events = std::mem::take(&mut recovery.events);
        let Some(mut handler) = recovery.handler.take() else {
            return inner;
        };
        drop(inner);
        for event in &events {
            handler(event);
        }
        let mut inner = self.lock();
        if let Some(recovery) = inner.recovery.as_mut() {
            recovery.handler.get_or_insert(handler);
        }
        inner
    }
}

/// Recovery stops: the connection ends with `error`.
fn give_up(inner: &mut Inner, error: &ConnectionError) {
    if let Some(recovery) = inner.recovery.as_mut() {
        recovery.phase = Phase::Connected;
        recovery.events.push(RecoveryEvent::GaveUp {
            error: error.clone(),
        });
    }
    inner.ledger.connection_closed(error, |_| {});
}
