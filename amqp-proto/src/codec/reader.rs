//! A cursor over one frame's payload, reading AMQP's primitive types with
//! nom's parsers (spec 4.2.5).
//!
//! The cursor is only ever given a complete payload (the frame layer has
//! already waited for all of it), so it uses nom's `complete` parsers: running
//! out of bytes here means the peer announced fewer bytes than its fields
//! need, which is a malformed frame, not a request for more input.

use bytes::Bytes;
use nom::number::complete::{be_u16, be_u32, be_u64, be_u8};
use nom::Parser;

use super::strings::{LongString, ShortString};
use super::table::FieldTable;
use crate::error::DecodeError;

/// The default cap on field-table nesting.
pub const DEFAULT_MAX_TABLE_DEPTH: usize = 32;

/// Reads primitive values off the front of a payload.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    /// The buffer `rest` was cut from, when there is one: long strings are
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
        Self {
            rest: input,
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
        self.rest.is_empty()
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            context: self.context,
        }
    }

    fn run<T, P>(&mut self, mut parser: P) -> Result<T, DecodeError>
    where
        P: Parser<&'a [u8], Output = T, Error = ()>,
    {
        self.bit_index = 8;
        match parser.parse(self.rest) {
            Ok((rest, value)) => {
                self.rest = rest;
                Ok(value)
            }
            Err(_) => Err(self.truncated()),
        }
    }

    pub(crate) fn octet(&mut self) -> Result<u8, DecodeError> {
        self.run(be_u8)
    }

    pub(crate) fn short(&mut self) -> Result<u16, DecodeError> {
        self.run(be_u16)
    }

    pub(crate) fn long(&mut self) -> Result<u32, DecodeError> {
        self.run(be_u32)
    }

    pub(crate) fn longlong(&mut self) -> Result<u64, DecodeError> {
        self.run(be_u64)
    }

    pub(crate) fn timestamp(&mut self) -> Result<u64, DecodeError> {
        self.longlong()
    }

    /// Reads `len` raw bytes.
    pub(crate) fn raw(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        self.run(nom::bytes::complete::take(len))
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

    pub(crate) fn shortstr(&mut self) -> Result<ShortString, DecodeError> {
        let bytes = self.run(nom::multi::length_data(be_u8))?;
        Ok(ShortString::copy_from_slice(bytes))
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
        let slice = self.raw(len)?;
        Ok(Self {
            rest: slice,
            ..*self
        })
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                context: self.context,
                extra: self.rest.len(),
            })
        }
    }
}
