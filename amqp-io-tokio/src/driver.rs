//! The driver task: the only code that touches the socket. It writes what
//! the core queued (many frames and bodies per system call), reads in large
//! chunks while the consumers have room, fires the core's timers, and sorts
//! the core's events to their waiters.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::recovery;
use crate::state::Shared;

/// The read half of the transport (TCP, or TLS over it).
pub(crate) type ReadHalf = Pin<Box<dyn AsyncRead + Send>>;
/// The write half of the transport.
pub(crate) type WriteHalf = Pin<Box<dyn AsyncWrite + Send>>;

/// Bytes one read may take.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read back to back, while the socket has them, before the core
/// sees them: one hand-off to the consumers per backlog instead of one per
/// read, since waking a consumer on another thread costs more than a read.
const READ_BATCH: usize = 256 * 1024;
/// Chunks one vectored write gathers, and the most the driver takes from
/// the core per write.
const MAX_WRITE_SLICES: usize = 64;
/// Bytes the driver takes from the core per write, about what one vectored
/// write moves. The rest stays queued in the core, where
/// `publish_readiness` sees it (`Readiness::OutputFull`): a slow socket
/// slows publishers instead of growing a queue here, and the driver reads
/// between two batches, so a peer that waits for us to read before it
/// reads again is never left waiting on a long write.
const WRITE_BATCH: usize = 256 * 1024;

/// Runs until the connection is closed and its last bytes are written;
/// with automatic recovery, reconnects in place when it fails.
pub(crate) async fn drive(shared: Arc<Shared>, mut reader: ReadHalf, mut writer: WriteHalf) {
    // The core's receive buffer, lent out while a read may be under way
    // (the lock is not held across an await), so bytes go from the socket
    // to the decoder without a copy. It goes back before anything else
    // touches the core's input, and is dropped with a socket that failed.
    let mut lent: Option<BytesMut> = None;
    let mut output: Vec<Bytes> = Vec::new();
    loop {
        let (
            deadline,
            wants_input,
            more_output,
            closed,
            between_sockets,
            window_opened,
            write_timeout,
        ) = {
            let mut state = shared.lock();
            let now = Instant::now();
            if let Some(buffer) = lent.take() {
                // Nothing was read into it since it was lent.
                state.core.handle_lent_input(buffer, now);
            }
            state.handle_timeout(now);
            shared.dispatch(&mut state);
            let window_opened = state.take_window_opened();
            output.extend(state.take_final_output());
            // Between sockets the core is a placeholder for the one the
            // next socket gets; nothing of it goes to the old socket.
            if !state.is_between_sockets() {
                take_batch(&mut state.core, now, &mut output);
            }
            (
                state.core_deadline(),
                state.wants_input(),
                state.core.wants_write() && !state.is_between_sockets(),
                state.core.is_closed() || state.closed().is_some(),
                state.is_between_sockets(),
                window_opened,
                state.write_timeout(),
            )
        };
        // Waiters check their conditions after every pass.
        shared.changed.notify_waiters();
        run_recovery_handler(&shared);
        if window_opened || closed {
            shared.window.notify_waiters();
        }
        if !output.is_empty() {
            // A broker that stops reading must not stop this task: a write
            // that takes longer than the session allows ends the socket,
            // as a missed heartbeat would.
            let written = tokio::time::timeout(write_timeout, write_all(&mut writer, &mut output));
            let failure = match written.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("writing to the socket failed: {error}")),
                Err(_) => Some(format!(
                    "writing to the socket took longer than {write_timeout:?}"
                )),
            };
            if let Some(reason) = failure {
                output.clear();
                let mut state = shared.lock();
                if !state.is_between_sockets() {
                    state.core.handle_transport_closed(reason);
                }
                shared.dispatch(&mut state);
                continue;
            }
        }
        if between_sockets {
            let _ = writer.shutdown().await;
            if let Some((new_reader, new_writer)) = recovery::reconnect(&shared).await {
                reader = new_reader;
                writer = new_writer;
                continue;
            }
        }
        // A closing core's last frames (its close, a close-ok) go out
        // before the socket is shut.
        if closed && more_output {
            continue;
        }
        if closed || between_sockets {
            let _ = writer.shutdown().await;
            run_recovery_handler(&shared);
            let mut state = shared.lock();
            // The core emits Closed itself; this only guards against a
            // core that closed without saying why.
            let error = amqp_proto::ConnectionError::TransportClosed("closed".into());
            state.connection_closed(&error);
            drop(state);
            shared.changed.notify_waiters();
            shared.window.notify_waiters();
            return;
        }
        let mut input = if wants_input {
            let mut buffer = shared.lock().core.lend_input_buffer();
            if buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
                buffer.reserve(READ_CHUNK);
            }
            buffer
        } else {
            BytesMut::new()
        };
        let sleep = deadline.map(|deadline| tokio::time::sleep_until(deadline.into()));
        tokio::select! {
            biased;
            () = shared.wake_driver.notified() => {
                lent = wants_input.then_some(input);
            }
            read = reader.read_buf(&mut input), if wants_input => {
                let read = match read {
                    Ok(n) if n > 0 => read_backlog(&mut reader, &mut input).await.map(|more| n + more),
                    other => other,
                };
                let mut state = shared.lock();
                state.core.handle_lent_input(input, Instant::now());
                match read {
                    Ok(0) => state.core.handle_transport_closed("the server closed the socket"),
                    Ok(_) => {}
                    Err(error) => state.core.handle_transport_closed(error.to_string()),
                }
                shared.dispatch(&mut state);
            }
            // More output is queued: write the next batch once the socket
            // has been read (above) if it had anything.
            () = std::future::ready(()), if more_output => {
                lent = wants_input.then_some(input);
            }
            () = async { if let Some(sleep) = sleep { sleep.await } }, if deadline.is_some() => {
                lent = wants_input.then_some(input);
            }
        }
    }
}

/// Reads on while the socket already holds more (up to [`READ_BATCH`]),
/// without waiting: the bytes it read, or the error that ended it (bytes
/// read before an error are handled first by the caller's next read).
async fn read_backlog(reader: &mut ReadHalf, input: &mut BytesMut) -> std::io::Result<usize> {
    let mut total = 0;
    while input.len() < READ_BATCH {
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let read = reader.read_buf(input);
        tokio::pin!(read);
        // One poll: what is there now, or nothing (read_buf loses nothing
        // when dropped unfinished).
        let polled = std::future::poll_fn(|context| Poll::Ready(read.as_mut().poll(context))).await;
        match polled {
            Poll::Ready(Ok(0)) | Poll::Pending => break,
            Poll::Ready(Ok(n)) => total += n,
            Poll::Ready(Err(error)) if total == 0 => return Err(error),
            // The bytes already read go to the core first; the error
            // comes again with the next read.
            Poll::Ready(Err(_)) => break,
        }
    }
    Ok(total)
}

/// Runs the application's recovery handler on the reports queued for it,
/// outside the lock so the handler may use the connection.
pub(crate) fn run_recovery_handler(shared: &Shared) {
    let Some((events, mut handler)) = shared.lock().lend_recovery_handler() else {
        return;
    };
    for event in &events {
        handler(event);
    }
    shared.lock().return_recovery_handler(handler);
}

/// Takes queued output from the core into `output` (empty: what the last
/// batch held was written) until [`WRITE_BATCH`] bytes or
/// [`MAX_WRITE_SLICES`] chunks: bodies over the core's copy threshold come
/// as their own chunks, never copied.
fn take_batch(core: &mut amqp_proto::Connection, now: Instant, output: &mut Vec<Bytes>) {
    let mut taken: usize = output.iter().map(Bytes::len).sum();
    while taken < WRITE_BATCH && output.len() < MAX_WRITE_SLICES {
        let Some(chunk) = core.poll_transmit(now) else {
            break;
        };
        taken += chunk.len();
        output.push(chunk);
    }
}

/// Writes every chunk, gathering many into each vectored write.
async fn write_all(writer: &mut WriteHalf, output: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut start = 0;
    while start < output.len() {
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(output.iter().skip(start)) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            writer
                .write_vectored(slices.get(..count).unwrap_or_default())
                .await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = written;
        while left > 0 {
            let Some(chunk) = output.get_mut(start) else {
                break;
            };
            if left < chunk.len() {
                chunk.advance(left);
                left = 0;
            } else {
                left -= chunk.len();
                start += 1;
            }
        }
    }
    output.clear();
    writer.flush().await
}
