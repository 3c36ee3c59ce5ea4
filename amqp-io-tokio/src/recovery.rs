//! Reconnecting after a failure, for automatic recovery: the session's
//! supervisor says when; this waits, opens a new socket and hands it over.
//! Everything else (what to declare, in which order, tags and confirms
//! across the gap, when to give up) is the session's and the core's.

use std::sync::Arc;
use std::time::Instant;

use amqp_proto::ConnectionError;

use amqp_io_common::failover::AddressAttempts;

use crate::connection::connect_any;
use crate::driver::{run_recovery_handler, ReadHalf, WriteHalf};
use crate::state::Shared;

/// Opens the recovery's next socket when it is due; `None` once recovery
/// gave up (the attempts ran out, or the application closed the
/// connection meanwhile), the connection then being closed for good.
pub(crate) async fn reconnect(shared: &Arc<Shared>) -> Option<(ReadHalf, WriteHalf)> {
    loop {
        shared.changed.notify_waiters();
        run_recovery_handler(shared);
        let (due, options, lost) = {
            let state = shared.lock();
            (
                state.reconnect_due()?,
                state.options()?.clone(),
                state.address(),
            )
        };
        // Closing the connection meanwhile wakes this wait.
        let sleep = tokio::time::sleep_until(due.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = shared.wake_driver.notified() => {
                    shared.lock().reconnect_due()?;
                }
            }
        }
        if !shared.lock().start_attempt(Instant::now()) {
            continue;
        }
        // A connect may take the connect timeout per address; closing the
        // connection meanwhile ends the wait. The node it lost is tried
        // last: a crashed node refuses at once, but one that vanished from
        // the network would cost a whole connect timeout first.
        let connect = connect_any(&options, AddressAttempts::recovering(&options, lost));
        tokio::pin!(connect);
        let opened = loop {
            tokio::select! {
                opened = &mut connect => break Some(opened),
                () = shared.wake_driver.notified() => {
                    if shared.lock().is_shut_down() {
                        break None;
                    }
                }
            }
        };
        let mut state = shared.lock();
        match opened {
            Some(Ok((index, (reader, writer, local_addr)))) if !state.is_shut_down() => {
                state.set_address(index);
                state.reconnected(Instant::now());
                state.local_addr = Some(local_addr);
                return Some((reader, writer));
            }
            Some(Err(error)) => {
                let error = ConnectionError::TransportClosed(error.to_string());
                state.reconnect_failed(&error, Instant::now());
            }
            // Shut down while connecting: the session gave up already.
            _ => return None,
        }
    }
}
