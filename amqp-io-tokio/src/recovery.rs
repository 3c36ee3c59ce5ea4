//! Reconnecting after a failure, for automatic recovery: wait as the
//! backoff says, open a new socket, and hand the core a new connection
//! that declares the recorded topology again. Everything else (what to
//! declare, in which order, tags and confirms across the gap) is the
//! core's.

use std::sync::Arc;
use std::time::Instant;

use amqp_io_common::recovery::{jitter_seed, RecoveryEvent};
use amqp_proto::{Connection as Core, ConnectionError};

use crate::connection::connect_transport;
use crate::driver::{run_recovery_handler, ReadHalf, WriteHalf};
use crate::state::Shared;

/// Reconnects after `error`; `None` when recovery gives up (the attempts
/// ran out, or the application closed the connection meanwhile), after
/// closing the connection for good.
pub(crate) async fn reconnect(
    shared: &Arc<Shared>,
    error: ConnectionError,
) -> Option<(ReadHalf, WriteHalf)> {
    let (options, backoff, mut attempt) = {
        let mut state = shared.lock();
        let recovery = state.recovery.as_mut()?;
        if recovery.attempts == 0 {
            recovery.events.push(RecoveryEvent::Started {
                error: error.clone(),
            });
        }
        let plan = (
            recovery.options.clone(),
            recovery.backoff,
            recovery.attempts,
        );
        // Until the new socket is open, calls see a connection that is not
        // open yet rather than the failed one.
        let topology = state.core.topology().cloned().unwrap_or_default();
        state.core = Core::recover(plan.0.config.clone(), topology, Instant::now());
        plan
    };
    shared.changed.notify_waiters();
    run_recovery_handler(shared);
    let mut last_error = error;
    loop {
        let Some(delay) = backoff.delay(attempt, jitter_seed()) else {
            give_up(shared, &last_error);
            return None;
        };
        if attempt > 0 {
            if let Some(recovery) = shared.lock().recovery.as_mut() {
                recovery.events.push(RecoveryEvent::AttemptFailed {
                    attempt,
                    error: last_error.to_string(),
                    retry_in: delay,
                });
            }
            run_recovery_handler(shared);
        }
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            if shared.lock().shutdown {
                give_up(shared, &last_error);
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = shared.wake_driver.notified() => {}
            }
        }
        attempt += 1;
        // A connect may take the connect timeout; closing the connection
        // meanwhile ends the wait.
        let connect = connect_transport(&options);
        tokio::pin!(connect);
        let opened = loop {
            tokio::select! {
                opened = &mut connect => break Some(opened),
                () = shared.wake_driver.notified() => {
                    if shared.lock().shutdown {
                        break None;
                    }
                }
            }
        };
        let Some(opened) = opened else {
            give_up(shared, &last_error);
            return None;
        };
        match opened {
            Ok((reader, writer, local_addr)) => {
                let mut state = shared.lock();
                if state.shutdown {
                    drop(state);
                    give_up(shared, &last_error);
                    return None;
                }
                let topology = state.core.topology().cloned().unwrap_or_default();
                state.core = Core::recover(options.config.clone(), topology, Instant::now());
                state.local_addr = Some(local_addr);
                if let Some(recovery) = state.recovery.as_mut() {
                    recovery.attempting = true;
                    recovery.attempts = attempt;
                }
                return Some((reader, writer));
            }
            Err(error) => {
                last_error = ConnectionError::TransportClosed(error.to_string());
            }
        }
    }
}

/// Ends the connection for good with `error`, reporting it.
fn give_up(shared: &Shared, error: &ConnectionError) {
    {
        let mut state = shared.lock();
        if let Some(recovery) = state.recovery.as_mut() {
            recovery.events.push(RecoveryEvent::GaveUp {
                error: error.clone(),
            });
        }
        state.connection_closed(error);
    }
    run_recovery_handler(shared);
    shared.changed.notify_waiters();
    shared.window.notify_waiters();
}
