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

impl Output {
    /// The buffer to encode frames into.
    pub(crate) fn frames(&mut self) -> &mut BytesMut {
        &mut self.frames
    }

    /// Queues a body frame: its header into the frame buffer, the payload as
    /// its own chunk, the frame end after it.
    pub(crate) fn body_frame(&mut self, header: [u8; 7], payload: Bytes) {
        self.frames.put_slice(&header);
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
