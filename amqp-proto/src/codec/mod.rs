//! The AMQP 0-9-1 wire format: primitives, field tables, frames, content
//! headers and bodies (spec section 4.2).
//!
//! Decoding is streaming: [`FrameDecoder`] accepts bytes in any split and
//! yields whole frames; nothing a peer sends can make it panic or buffer
//! more than one frame of the negotiated size. Encoding appends to a
//! [`BytesMut`] and never leaves a partial frame behind on
//! error.
//!
//! ```
//! use amqp_proto::codec::{encode_method_frame, Frame, FrameDecoder, DecodeLimits};
//! use amqp_proto::spec::{BasicQos, Method};
//! use bytes::BytesMut;
//!
//! let qos = Method::BasicQos(BasicQos { prefetch_count: 10, ..Default::default() });
//! let mut wire = BytesMut::new();
//! encode_method_frame(1, &qos, 4096, &mut wire).unwrap();
//!
//! let mut decoder = FrameDecoder::new(DecodeLimits::default());
//! decoder.extend_from_slice(&wire);
//! assert_eq!(decoder.decode().unwrap(), Some(Frame::Method { channel: 1, method: qos }));
//! ```

mod content;
mod frame;
mod properties;
pub(crate) mod reader;
mod strings;
mod table;
#[cfg(test)]
pub(crate) mod test_support;
pub(crate) mod writer;

pub use content::{Content, ContentAssembler, DEFAULT_MAX_BODY_SIZE};
pub use frame::{
    body_frame_header, decode_content_header, decode_method, encode_header_frame,
    encode_heartbeat_frame, encode_method_frame, encode_properties_frame, encode_publish_frame,
    DecodeLimits, Frame, FrameDecoder, FRAME_HEADER_SIZE,
};
pub use properties::{BasicProperties, ContentHeader, BASIC_PROPERTIES};
pub use reader::DEFAULT_MAX_TABLE_DEPTH;
pub use strings::{LongString, ShortString};
pub use table::{FieldArray, FieldTable, FieldValue};

use bytes::BytesMut;

use crate::error::{DecodeError, EncodeError};

/// Encodes a method frame's payload (class id, method id, fields) without
/// the frame around it.
pub fn encode_method(method: &crate::spec::Method, out: &mut BytesMut) -> Result<(), EncodeError> {
    let start = out.len();
    let result = method.encode(&mut writer::Writer::new(out));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Encodes a content header frame's payload without the frame around it.
pub fn encode_content_header(
    header: &ContentHeader,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = header.encode(&mut writer::Writer::new(out));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Encodes a field table with its 32-bit length prefix.
pub fn encode_field_table(table: &FieldTable, out: &mut BytesMut) -> Result<(), EncodeError> {
    let start = out.len();
    let result = table.encode(&mut writer::Writer::new(out));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Decodes a field table with its 32-bit length prefix, which must span the
/// whole of `input`.
pub fn decode_field_table(input: &[u8], max_depth: usize) -> Result<FieldTable, DecodeError> {
    let mut reader = reader::Reader::new(input, "field table", max_depth);
    let table = reader.table()?;
    reader.finish()?;
    Ok(table)
}
