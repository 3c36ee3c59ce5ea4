//! When to reconnect after a failure, and when to give up: automatic
//! recovery's policy, with no socket and no clock of its own. The adapter
//! tells it what happened (the connection closed, a socket could not be
//! opened, a new one is open, the topology is declared again) with the
//! current time, and asks it when the next attempt is due; every report for
//! the application comes out as a [`RecoveryEvent`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use amqp_proto::recovery::{Decision, RecoveryEvent, Supervisor};
//! use amqp_proto::{Backoff, ConnectionError};
//!
//! let start = Instant::now();
//! let mut supervisor = Supervisor::new(Backoff::default());
//! let cut = ConnectionError::TransportClosed("reset".into());
//! let Decision::ReconnectAt(due) = supervisor.on_closed(&cut, true, start, 0) else {
//!     unreachable!("a reset is worth a new connection");
//! };
//! assert!(matches!(supervisor.poll_event(), Some(RecoveryEvent::Started { .. })));
//! assert_eq!(supervisor.poll_timeout(), Some(due));
//! assert!(supervisor.start_attempt(due));
//! supervisor.connected();
//! supervisor.recovered(Vec::new(), Vec::new());
//! assert!(matches!(supervisor.poll_event(), Some(RecoveryEvent::Recovered { .. })));
//! assert!(!supervisor.is_recovering());
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Backoff, RecoveryFailure};
use crate::codec::ShortString;
use crate::error::{CloseReason, ConnectionError};

/// A step of automatic recovery, for the application's recovery handler.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// The connection failed; calls fail until it is recovered, and every
    /// publish that was unconfirmed has been reported failed.
    Started {
        /// Why the connection failed.
        error: ConnectionError,
    },
    /// An attempt to connect failed; the next follows after `retry_in`.
    AttemptFailed {
        /// Attempts made so far.
        attempt: u32,
        /// Why it failed.
        error: String,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// A new connection is open and declared everything again; channels,
    /// consumers and publishing work as before.
    Recovered {
        /// Server-named queues, each with its old and new name.
        renamed_queues: Vec<(ShortString, ShortString)>,
        /// Declarations the server refused.
        failures: Vec<RecoveryFailure>,
    },
    /// Recovery stopped: the attempts ran out, the application closed the
    /// connection, or the new connection was refused for a reason another
    /// attempt would repeat. The connection is closed with this error.
    GaveUp {
        /// The last failure.
        error: ConnectionError,
    },
    /// The broker closed a channel because a consumer on it held a
    /// delivery unacknowledged past its consumer timeout
    /// ([`CloseReason::is_consumer_timeout`]); the connection stays open
    /// and the channel is being reopened with its consumers (the core's
    /// [`Event::ChannelRecovering`](crate::Event::ChannelRecovering)).
    /// Calls on the channel fail meanwhile; the broker redelivers what was
    /// unacknowledged.
    ChannelRecovering {
        /// The channel.
        channel: u16,
        /// The broker's close.
        reason: CloseReason,
    },
    /// The channel is open again with its consumers (same tags).
    ChannelRecovered {
        /// The channel.
        channel: u16,
        /// Why it had closed.
        reason: CloseReason,
        /// Steps the broker refused (then the channel stays closed).
        failures: Vec<RecoveryFailure>,
    },
}

/// What the adapter does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Open a new socket at this time (the backoff's wait), then call
    /// [`Supervisor::start_attempt`].
    ReconnectAt(Instant),
    /// It is over: the connection stays closed ([`RecoveryEvent::GaveUp`]
    /// says why, if a recovery was under way).
    GiveUp,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Nothing to recover.
    Connected,
    /// Attempt `attempt` (from 0) is due at `at`.
    Waiting {
        attempt: u32,
        at: Instant,
        last_error: ConnectionError,
    },
    /// The adapter is opening a socket for attempt `attempt`.
    Connecting {
        attempt: u32,
        last_error: ConnectionError,
    },
    /// A new socket is open: the core shakes hands and declares again. A
    /// failure now counts as attempt `attempt` failing.
    Replaying { attempt: u32 },
}

/// Automatic recovery's decisions for one connection; see the module docs.
#[derive(Debug, Clone)]
pub struct Supervisor {
    backoff: Backoff,
    phase: Phase,
    events: VecDeque<RecoveryEvent>,
}

impl Supervisor {
    /// A supervisor waiting between attempts as `backoff` says.
    #[must_use]
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            phase: Phase::Connected,
            events: VecDeque::new(),
        }
    }

    /// The connection ended with `error` (its [`Event::Closed`](crate::Event::Closed)).
    /// `wanted` is false when the application closed it, when it never
    /// opened, or when no topology was recorded: then nothing is
    /// recovered. Otherwise a failure a new connection may cure (see
    /// [`ConnectionError::is_recoverable`]) starts a recovery, and any
    /// failure of a connection made by one counts as a failed attempt.
    /// `random` is any random number, for the backoff's jitter.
    pub fn on_closed(
        &mut self,
        error: &ConnectionError,
        wanted: bool,
        now: Instant,
        random: u64,
    ) -> Decision {
        let replaying = match self.phase {
            Phase::Replaying { attempt } => Some(attempt),
            _ => None,
        };
        if !wanted || (replaying.is_none() && !error.is_recoverable()) {
            return self.give_up(error.clone());
        }
        let attempt = replaying.map_or(0, |attempt| attempt + 1);
        if attempt == 0 {
            self.events.push_back(RecoveryEvent::Started {
                error: error.clone(),
            });
        }
        self.schedule(attempt, error.clone(), now, random)
    }

    /// When the next attempt is due, while one is awaited.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// The adapter is about to open a socket: true if an attempt is due
    /// by `now` (the attempt is then under way), false otherwise.
    pub fn start_attempt(&mut self, now: Instant) -> bool {
        match &self.phase {
            Phase::Waiting {
                attempt,
                at,
                last_error,
            } if *at <= now => {
                self.phase = Phase::Connecting {
                    attempt: *attempt,
                    last_error: last_error.clone(),
                };
                true
            }
            _ => false,
        }
    }

    /// The socket for the attempt under way could not be opened.
    pub fn connect_failed(
        &mut self,
        error: ConnectionError,
        now: Instant,
        random: u64,
    ) -> Decision {
        match self.phase {
            Phase::Connecting { attempt, .. } => self.schedule(attempt + 1, error, now, random),
            _ => Decision::GiveUp,
        }
    }

    /// A new socket is open; the adapter hands the core
    /// [`Connection::recover`](crate::Connection::recover).
    pub fn connected(&mut self) {
        if let Phase::Connecting { attempt, .. } = self.phase {
            self.phase = Phase::Replaying { attempt };
        }
    }

    /// The new connection declared everything again
    /// ([`Event::Recovered`](crate::Event::Recovered)).
    pub fn recovered(
        &mut self,
        renamed_queues: Vec<(ShortString, ShortString)>,
        failures: Vec<RecoveryFailure>,
    ) {
        self.phase = Phase::Connected;
        self.events.push_back(RecoveryEvent::Recovered {
            renamed_queues,
            failures,
        });
    }

    /// A channel is being reopened after a consumer timeout (the core's
    /// [`Event::ChannelRecovering`](crate::Event::ChannelRecovering)): a
    /// report for the application, no change of phase.
    pub fn channel_recovering(&mut self, channel: u16, reason: CloseReason) {
        self.events
            .push_back(RecoveryEvent::ChannelRecovering { channel, reason });
    }

    /// The channel is open again (the core's
    /// [`Event::ChannelRecovered`](crate::Event::ChannelRecovered)).
    pub fn channel_recovered(
        &mut self,
        channel: u16,
        reason: CloseReason,
        failures: Vec<RecoveryFailure>,
    ) {
        self.events.push_back(RecoveryEvent::ChannelRecovered {
            channel,
            reason,
            failures,
        });
    }

    /// The application closed the connection while it was being
    /// recovered: recovery stops with the last failure.
    pub fn shut_down(&mut self) {
        let last = match &self.phase {
            Phase::Waiting { last_error, .. } | Phase::Connecting { last_error, .. } => {
                last_error.clone()
            }
            Phase::Replaying { .. } => {
                ConnectionError::TransportClosed("closed by the application".into())
            }
            Phase::Connected => return,
        };
        let _ = self.give_up(last);
    }

    /// The error recovery stopped on, for a connection closed for good
    /// between sockets.
    #[must_use]
    pub fn last_error(&self) -> Option<&ConnectionError> {
        match &self.phase {
            Phase::Waiting { last_error, .. } | Phase::Connecting { last_error, .. } => {
                Some(last_error)
            }
            _ => None,
        }
    }

    /// True from a failure until the topology is declared again, or
    /// recovery gives up.
    #[must_use]
    pub fn is_recovering(&self) -> bool {
        self.phase != Phase::Connected
    }

    /// True while no socket is open (waiting for an attempt, or opening
    /// one): there is nothing to read or write.
    #[must_use]
    pub fn is_between_sockets(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. } | Phase::Connecting { .. })
    }

    /// True while the adapter is opening a socket for an attempt.
    #[must_use]
    pub fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. })
    }

    /// The next report for the application's recovery handler.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RecoveryEvent> {
        self.events.pop_front()
    }

    /// Waits before `attempt`, reporting the failure of the one before.
    fn schedule(
        &mut self,
        attempt: u32,
        last_error: ConnectionError,
        now: Instant,
        random: u64,
    ) -> Decision {
        let Some(delay) = self.backoff.delay(attempt, random) else {
            return self.give_up(last_error);
        };
        if attempt > 0 {
            self.events.push_back(RecoveryEvent::AttemptFailed {
                attempt,
                error: last_error.to_string(),
                retry_in: delay,
            });
        }
        let at = now.checked_add(delay).unwrap_or(now);
        self.phase = Phase::Waiting {
            attempt,
            at,
            last_error,
        };
        Decision::ReconnectAt(at)
    }

    fn give_up(&mut self, error: ConnectionError) -> Decision {
        if self.phase != Phase::Connected {
            self.events.push_back(RecoveryEvent::GaveUp { error });
        }
        self.phase = Phase::Connected;
        Decision::GiveUp
    }
}
