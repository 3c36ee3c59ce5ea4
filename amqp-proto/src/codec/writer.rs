//! Appends AMQP's primitive types to an output buffer (spec 4.2.5).

use bytes::{BufMut, BytesMut};

use super::reader::DEFAULT_MAX_TABLE_DEPTH;
use super::strings::{LongString, ShortString};
use super::table::FieldTable;
use crate::error::EncodeError;

/// Writes primitive values, packing consecutive bits into shared octets.
pub(crate) struct Writer<'a> {
    buf: &'a mut BytesMut,
    /// Position of the octet bits are being packed into, and the next bit's
    /// index; `None` when the next bit starts a new octet.
    bits: Option<(usize, u8)>,
    /// Tables and arrays open around what is written now.
    depth: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Self {
            buf,
            bits: None,
            depth: 0,
        }
    }

    /// Writes a table or array: length-prefixed, one level deeper, and
    /// refused past the depth a decoder accepts by default, so the encoder
    /// never sends what a peer (this crate's decoder included) must refuse.
    pub(crate) fn nested(
        &mut self,
        body: impl FnOnce(&mut Self) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        if self.depth >= DEFAULT_MAX_TABLE_DEPTH {
            return Err(EncodeError::TableTooDeep {
                max: DEFAULT_MAX_TABLE_DEPTH,
            });
        }
        self.depth += 1;
        let result = self.length_prefixed(body);
        self.depth -= 1;
        result
    }

    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        self.bits = None;
        self.buf
    }

    pub(crate) fn octet(&mut self, value: u8) {
        self.buf().put_u8(value);
    }

    pub(crate) fn short(&mut self, value: u16) {
        self.buf().put_u16(value);
    }

    pub(crate) fn long(&mut self, value: u32) {
        self.buf().put_u32(value);
    }

    pub(crate) fn longlong(&mut self, value: u64) {
        self.buf().put_u64(value);
    }

    pub(crate) fn timestamp(&mut self, value: u64) {
        self.longlong(value);
    }

    pub(crate) fn shortstr(&mut self, value: &ShortString) -> Result<(), EncodeError> {
        let bytes = value.as_bytes();
        let len = u8::try_from(bytes.len())
            .map_err(|_| EncodeError::ShortStringTooLong { len: bytes.len() })?;
        let buf = self.buf();
        buf.put_u8(len);
        buf.put_slice(bytes);
        Ok(())
    }

    pub(crate) fn longstr(&mut self, value: &LongString) -> Result<(), EncodeError> {
        self.long_bytes(value.as_bytes())
    }

    /// A 32-bit length followed by `bytes`.
    pub(crate) fn long_bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| EncodeError::LongValueTooLong { len: bytes.len() })?;
        let buf = self.buf();
        buf.put_u32(len);
        buf.put_slice(bytes);
        Ok(())
    }

    pub(crate) fn bit(&mut self, value: bool) {
        let (position, index) = match self.bits {
            Some((position, index)) if index < 8 => (position, index),
            _ => {
                self.buf.put_u8(0);
                (self.buf.len() - 1, 0)
            }
        };
        if value {
            if let Some(octet) = self.buf.get_mut(position) {
                *octet |= 1 << index;
            }
        }
        self.bits = Some((position, index + 1));
    }

    pub(crate) fn table(&mut self, value: &FieldTable) -> Result<(), EncodeError> {
        value.encode(self)
    }

    /// Writes a 32-bit length placeholder, runs `body`, then fills in the
    /// number of bytes `body` wrote.
    pub(crate) fn length_prefixed(
        &mut self,
        body: impl FnOnce(&mut Self) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let start = self.buf().len();
        self.buf.put_u32(0);
        body(self)?;
        self.bits = None;
        let len = self.buf.len() - start - 4;
        let len32 = u32::try_from(len).map_err(|_| EncodeError::LongValueTooLong { len })?;
        if let Some(slot) = self.buf.get_mut(start..start + 4) {
            slot.copy_from_slice(&len32.to_be_bytes());
        }
        Ok(())
    }
}
