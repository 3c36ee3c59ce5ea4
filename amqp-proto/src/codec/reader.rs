//! A cursor over one frame's payload, reading AMQP's primitive types
//! (spec 4.2.5).
//!
//! The cursor is only ever given a complete payload (the streaming frame
//! layer, built on nom, has already waited for all of it), so running out of
//! bytes here means the peer announced fewer bytes than its fields need: a
//! malformed frame, not a request for more input. Fields are read with
//! `split_first_chunk` rather than nom's `complete` parsers because those
//! did not inline and cost a third of the delivery path in profiles.

use bytes::Bytes;

use super::strings::{LongString, ShortString};
use super::table::FieldTable;
use crate::error::DecodeError;

/// The default cap on field-table nesting.
pub const DEFAULT_MAX_TABLE_DEPTH: usize = 32;

/// Reads primitive values off the front of a payload.
pub(crate) struct Reader<'a> {
    /// The payload, possibly followed by more bytes of the same buffer
    /// (the frame end, later frames) that may be *looked at* but never
    /// consumed: short strings are copied with a fixed-size window that can
    /// run past the payload's end.
    buf: &'a [u8],
    /// Next byte to read.
    pos: usize,
    /// End of the payload within `buf`.
    end: usize,
    /// The buffer `buf` was cut from, when there is one: long strings are
    /// then sliced from it instead of copied.
    owner: Option<&'a Bytes>,
    context: &'static str,
    max_depth: usize,
    /// The octet that bits are being read from, and the next bit's index;
    /// index 8 means the next bit needs a fresh octet.
    bit_octet: u8,
    bit_index: u8,
}

impl<'a> Reader<'a> {
    /// A reader over `input`; `context` names the thing being decoded in
    /// errors.
    pub(crate) fn new(input: &'a [u8], context: &'static str, max_depth: usize) -> Self {
        Self::with_lookahead(input, input.len(), context, max_depth)
    }

    /// A reader over the first `payload_len` bytes of `buf`, allowed to look
    /// at (not consume) the rest.
    pub(crate) fn with_lookahead(
        buf: &'a [u8],
        payload_len: usize,
        context: &'static str,
        max_depth: usize,
    ) -> Self {
        Self {
            buf,
            pos: 0,
            end: payload_len.min(buf.len()),
            owner: None,
            context,
            max_depth,
            bit_octet: 0,
            bit_index: 8,
        }
    }

    /// A reader over the whole of `owner`, slicing long strings from it.
    pub(crate) fn shared(owner: &'a Bytes, context: &'static str, max_depth: usize) -> Self {
        Self {
            owner: Some(owner),
            ..Self::new(owner, context, max_depth)
        }
    }

    /// Renames what is being decoded, for errors.
    pub(crate) fn set_context(&mut self, context: &'static str) {
        self.context = context;
    }

    pub(crate) fn max_depth(&self) -> usize {
        self.max_depth
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..self.end).unwrap_or_default()
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            context: self.context,
        }
    }

    /// Reads a fixed-size big-endian value.
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.bit_index = 8;
        let value = *self
            .remaining()
            .first_chunk::<N>()
            .ok_or_else(|| self.truncated())?;
        self.pos += N;
        Ok(value)
    }

    #[inline]
    pub(crate) fn octet(&mut self) -> Result<u8, DecodeError> {
        self.array::<1>().map(u8::from_be_bytes)
    }

    #[inline]
    pub(crate) fn short(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn long(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn longlong(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    pub(crate) fn timestamp(&mut self) -> Result<u64, DecodeError> {
        self.longlong()
    }

    /// Reads `len` raw bytes. A plain split rather than nom's `take`, which
    /// does not inline through its trait object and showed up in profiles
    /// of the delivery path.
    #[inline]
    pub(crate) fn raw(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        self.bit_index = 8;
        let taken = self
            .remaining()
            .get(..len)
            .ok_or_else(|| self.truncated())?;
        self.pos += len;
        Ok(taken)
    }

    /// Reads `len` raw bytes as a zero-copy slice when the reader has an
    /// owning buffer, else as a copy.
    pub(crate) fn raw_bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        let slice = self.raw(len)?;
        Ok(match self.owner {
            Some(owner) => owner.slice_ref(slice),
            None => Bytes::copy_from_slice(slice),
        })
    }

    #[inline]
    pub(crate) fn shortstr(&mut self) -> Result<ShortString, DecodeError> {
        let len = self.octet()?;
        let window = self.buf.get(self.pos..).unwrap_or_default();
        self.raw(usize::from(len))?;
        Ok(ShortString::from_window(window, len))
    }

    pub(crate) fn longstr(&mut self) -> Result<LongString, DecodeError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| self.truncated())?;
        Ok(LongString::from_bytes(self.raw_bytes(len)?))
    }

    /// Reads the next packed bit; consecutive bit fields share octets, least
    /// significant bit first (spec 4.2.5.2).
    pub(crate) fn bit(&mut self) -> Result<bool, DecodeError> {
        if self.bit_index >= 8 {
            self.bit_octet = self.octet()?;
            self.bit_index = 0;
        }
        let value = self.bit_octet & (1 << self.bit_index) != 0;
        self.bit_index += 1;
        Ok(value)
    }

    pub(crate) fn table(&mut self) -> Result<FieldTable, DecodeError> {
        self.bit_index = 8;
        FieldTable::decode(self, 0)
    }

    /// Splits off a reader over the next `len` bytes, for a length-prefixed
    /// table or array.
    pub(crate) fn sub_reader(&mut self, len: usize) -> Result<Self, DecodeError> {
        let start = self.pos;
        self.raw(len)?;
        Ok(Self {
            pos: start,
            end: start + len,
            ..*self
        })
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                context: self.context,
                extra: self.end - self.pos,
            })
        }
    }
}
