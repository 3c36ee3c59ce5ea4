//! The bytes waiting to be written: frames coalesced into one buffer, and
//! large message bodies kept as their own chunks so they are never copied.
//!
//! The queue is read three ways: whole chunks ([`Output::pop`]), copies of
//! up to a number of bytes ([`Output::copy_into`]), and borrowed slices for
//! a vectored write ([`Output::io_slices`]) followed by
//! [`Output::consume`] of what the writer accepted. The last two may end
//! inside a chunk: the rest of it stays at the front, in order.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::spec::constants::FRAME_END;

#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Chunks ready to go, in order; all of them come before `frames`.
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
        self.frames_with_room(0)
    }

    /// The frame buffer, with room for at least `extra` more bytes.
    fn frames_with_room(&mut self, extra: usize) -> &mut BytesMut {
        if self.frames.capacity() - self.frames.len() < extra.max(MIN_ROOM) {
            self.frames.reserve(extra.max(BLOCK));
        }
        &mut self.frames
    }

    /// Queues a body frame: its header into the frame buffer, then the
    /// payload, then the frame end. With `copy`, the payload is copied in
    /// with the frames around it (one contiguous run of bytes); otherwise
    /// it becomes a chunk of its own, never copied.
    pub(crate) fn body_frame(&mut self, header: [u8; 7], payload: Bytes, copy: bool) {
        if copy {
            let frames = self.frames_with_room(header.len() + payload.len() + 1);
            frames.put_slice(&header);
            frames.put_slice(&payload);
            frames.put_u8(FRAME_END);
            return;
        }
        self.frames().put_slice(&header);
        self.seal();
        if !payload.is_empty() {
            self.chunked += payload.len();
            self.chunks.push_back(payload);
        }
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

    /// The next chunk to write: what is left of the front chunk, or the
    /// frames encoded since the last one.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        if self.chunks.is_empty() {
            self.seal();
        }
        let chunk = self.chunks.pop_front()?;
        self.chunked -= chunk.len();
        Some(chunk)
    }

    /// Appends up to `max` queued bytes to `out`, in order, and removes
    /// them from the queue; returns how many.
    pub(crate) fn copy_into(&mut self, max: usize, out: &mut Vec<u8>) -> usize {
        let mut taken = 0;
        while taken < max {
            let piece: &[u8] = match self.chunks.front() {
                Some(chunk) => chunk,
                None => &self.frames,
            };
            if piece.is_empty() {
                break;
            }
            let n = piece.len().min(max - taken);
            out.extend_from_slice(piece.get(..n).unwrap_or_default());
            self.consume(n);
            taken += n;
        }
        taken
    }

    /// Fills `slices` with the queued bytes from the front, one slice per
    /// chunk (the unsealed frames last); returns how many were filled.
    /// Nothing is removed: [`consume`](Self::consume) what was written.
    pub(crate) fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let pieces = self
            .chunks
            .iter()
            .map(Bytes::as_ref)
            .chain(std::iter::once(self.frames.as_ref()))
            .filter(|piece| !piece.is_empty());
        let mut filled = 0;
        for (slot, piece) in slices.iter_mut().zip(pieces) {
            *slot = IoSlice::new(piece);
            filled += 1;
        }
        filled
    }

    /// Removes the first `n` queued bytes (they were written); a chunk
    /// written in part keeps its rest at the front. `n` beyond what is
    /// queued removes everything.
    pub(crate) fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                let rest = n.min(self.frames.len());
                self.frames.advance(rest);
                return;
            };
            if n < front.len() {
                front.advance(n);
                self.chunked -= n;
                return;
            }
            n -= front.len();
            self.chunked -= front.len();
            self.chunks.pop_front();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An output holding `a`, a 100-byte body chunk of `b`, then `c`.
    fn three_pieces() -> (Output, Vec<u8>) {
        let mut output = Output::default();
        output.frames().put_slice(b"aaaa");
        output.body_frame(*b"hhhhhhh", Bytes::from(vec![b'b'; 100]), false);
        output.frames().put_slice(b"cc");
        let mut expected = b"aaaahhhhhhh".to_vec();
        expected.extend_from_slice(&[b'b'; 100]);
        expected.push(FRAME_END);
        expected.extend_from_slice(b"cc");
        (output, expected)
    }

    #[test]
    fn copies_in_pieces_of_any_size_give_the_queue_in_order() {
        for max in [1, 2, 3, 7, 11, 50, 110, 117, 1000] {
            let (mut output, expected) = three_pieces();
            let mut out = Vec::new();
            loop {
                let before = output.len();
                let taken = output.copy_into(max, &mut out);
                assert_eq!(output.len(), before - taken);
                assert!(taken <= max);
                if taken == 0 {
                    break;
                }
            }
            assert_eq!(out, expected, "max {max}");
            assert_eq!(output.len(), 0);
        }
    }

    #[test]
    fn a_partial_write_leaves_the_rest_in_order() {
        for step in [1, 5, 11, 12, 99, 111, 112, 116, 500] {
            let (mut output, expected) = three_pieces();
            let mut written = Vec::new();
            while output.len() > 0 {
                let mut slices = [IoSlice::new(&[]); 8];
                let filled = output.io_slices(&mut slices);
                let mut accepted = 0;
                for slice in &slices[..filled] {
                    let n = slice.len().min(step - accepted);
                    written.extend_from_slice(&slice[..n]);
                    accepted += n;
                    if accepted == step {
                        break;
                    }
                }
                output.consume(accepted);
            }
            assert_eq!(written, expected, "step {step}");
        }
    }

    #[test]
    fn pop_after_a_partial_consume_gives_the_rest_of_the_chunk() {
        let (mut output, expected) = three_pieces();
        output.consume(2);
        let mut popped = Vec::new();
        while let Some(chunk) = output.pop() {
            popped.extend_from_slice(&chunk);
        }
        assert_eq!(popped, &expected[2..]);
    }

    #[test]
    fn a_copied_body_joins_the_frames_around_it() {
        let mut output = Output::default();
        output.frames().put_slice(b"method");
        output.body_frame(*b"hhhhhhh", Bytes::from_static(b"body"), true);
        output.frames().put_slice(b"next");
        let chunk = output.pop().unwrap();
        assert_eq!(&chunk[..], b"methodhhhhhhhbody\xCEnext");
        assert!(output.pop().is_none());
    }

    #[test]
    fn a_large_copied_body_fits_whatever_room_is_left() {
        let mut output = Output::default();
        output.frames().put_slice(&[1; BLOCK - 10]);
        output.body_frame([2; 7], Bytes::from(vec![3; BLOCK]), true);
        assert_eq!(output.len(), BLOCK - 10 + 7 + BLOCK + 1);
        let mut out = Vec::new();
        assert_eq!(output.copy_into(usize::MAX, &mut out), out.len());
        assert_eq!(out.len(), 2 * BLOCK - 2);
    }
}
