//! The bytes waiting to be written: frames coalesced into one buffer, and
//! message bodies kept as their own chunks so they are never copied.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::spec::constants::FRAME_END;

#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Chunks ready to go, in order.
    chunks: VecDeque<Bytes>,
    /// Frames encoded after the last chunk.
    frames: BytesMut,
    /// Bytes in `chunks`.
    chunked: usize,
}

/// The frame buffer grows in blocks of this size. Sealing a chunk leaves
/// the rest of the block for the next frames, so publishing touches the
/// allocator once per block instead of once per message.
const BLOCK: usize = 64 * 1024;

/// A block with less room than this is replaced before encoding into it.
const MIN_ROOM: usize = 4 * 1024;

impl Output {
    /// The buffer to encode frames into.
    pub(crate) fn frames(&mut self) -> &mut BytesMut {
        if self.frames.capacity() - self.frames.len() < MIN_ROOM {
            self.frames.reserve(BLOCK);
        }
        &mut self.frames
    }

    /// Queues a body frame: its header into the frame buffer, the payload as
    /// its own chunk, the frame end after it.
    pub(crate) fn body_frame(&mut self, header: [u8; 7], payload: Bytes) {
        self.frames().put_slice(&header);
        self.seal();
        self.chunked += payload.len();
        self.chunks.push_back(payload);
        self.frames.put_u8(FRAME_END);
    }

    /// Moves the frame buffer into the chunk queue.
    fn seal(&mut self) {
        if !self.frames.is_empty() {
            let sealed = self.frames.split().freeze();
            self.chunked += sealed.len();
            self.chunks.push_back(sealed);
        }
    }

    /// The next chunk to write.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        if self.chunks.is_empty() {
            self.seal();
        }
        let chunk = self.chunks.pop_front()?;
        self.chunked -= chunk.len();
        Some(chunk)
    }

    /// Bytes queued and not yet handed out.
    pub(crate) fn len(&self) -> usize {
        self.chunked + self.frames.len()
    }

    /// Drops everything queued.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.frames.clear();
        self.chunked = 0;
    }
}
