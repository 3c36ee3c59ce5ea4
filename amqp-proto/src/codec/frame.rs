//! Frames (spec 4.2.3): a 7-byte header (type, channel, payload size), the
//! payload, and the frame-end octet.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::number::streaming::{be_u16, be_u32, be_u8};
use nom::Parser;

use super::properties::ContentHeader;
use super::reader::{Reader, DEFAULT_MAX_TABLE_DEPTH};
use super::writer::Writer;
use crate::error::{DecodeError, EncodeError};
use crate::spec::constants::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE,
    FRAME_OVERHEAD, PROTOCOL_HEADER,
};
use crate::spec::Method;

/// Size of a frame header: type octet, channel short, payload-size long.
pub const FRAME_HEADER_SIZE: usize = 7;

/// Method and header payloads at most this long are decoded from the read
/// buffer in place and their long strings copied; longer ones are split off
/// as shared [`Bytes`] so long strings become zero-copy slices. Below this
/// size a copy is cheaper than the atomic reference count a slice costs.
const SHARE_PAYLOADS_ABOVE: usize = 256;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub enum Frame {
    /// A method frame.
    Method {
        /// The channel, 0 for connection-class methods.
        channel: u16,
        /// The method and its fields.
        method: Method,
    },
    /// A content header frame, following a method that carries content.
    Header {
        /// The channel.
        channel: u16,
        /// Class, body size and properties.
        header: ContentHeader,
    },
    /// A content body frame: part of a message body.
    Body {
        /// The channel.
        channel: u16,
        /// The bytes, a zero-copy slice of the buffer they were read into.
        #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_payload))]
        payload: Bytes,
    },
    /// A heartbeat frame (always channel 0, empty).
    Heartbeat,
}

#[cfg(any(test, feature = "arbitrary"))]
fn arbitrary_payload(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let bytes: &[u8] = u.arbitrary()?;
    Ok(Bytes::copy_from_slice(bytes))
}

impl Frame {
    /// The channel the frame travels on.
    #[must_use]
    pub fn channel(&self) -> u16 {
        match self {
            Self::Method { channel, .. }
            | Self::Header { channel, .. }
            | Self::Body { channel, .. } => *channel,
            Self::Heartbeat => 0,
        }
    }

    /// Appends the encoded frame to `out`, copying a body payload.
    ///
    /// Fails, leaving `out` as it was, if a value cannot be encoded or the
    /// frame would exceed `max_frame_size` bytes. Publishers that want the
    /// body sent without a copy use [`body_frame_header`] and write the
    /// payload as its own chunk.
    pub fn encode(&self, out: &mut BytesMut, max_frame_size: u32) -> Result<(), EncodeError> {
        match self {
            Self::Method { channel, method } => {
                encode_method_frame(*channel, method, max_frame_size, out)
            }
            Self::Header { channel, header } => {
                encode_header_frame(*channel, header, max_frame_size, out)
            }
            Self::Body { channel, payload } => {
                let header = body_frame_header(*channel, payload.len(), max_frame_size)?;
                out.reserve(payload.len() + FRAME_OVERHEAD as usize);
                out.put_slice(&header);
                out.put_slice(payload);
                out.put_u8(FRAME_END);
                Ok(())
            }
            Self::Heartbeat => {
                encode_heartbeat_frame(out);
                Ok(())
            }
        }
    }
}

/// Appends a method frame to `out`; on error `out` is left as it was.
pub fn encode_method_frame(
    channel: u16,
    method: &Method,
    max_frame_size: u32,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_frame_with(FRAME_METHOD, channel, max_frame_size, out, |writer| {
        method.encode(writer)
    })
}

/// Appends a content header frame to `out`; on error `out` is left as it was.
pub fn encode_header_frame(
    channel: u16,
    header: &ContentHeader,
    max_frame_size: u32,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_frame_with(FRAME_HEADER, channel, max_frame_size, out, |writer| {
        header.encode(writer)
    })
}

/// Appends a heartbeat frame to `out`.
pub fn encode_heartbeat_frame(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// The 7-byte header of a body frame carrying `payload_len` bytes, for
/// writing the payload as a separate chunk (vectored IO) followed by
/// [`FRAME_END`].
pub fn body_frame_header(
    channel: u16,
    payload_len: usize,
    max_frame_size: u32,
) -> Result<[u8; FRAME_HEADER_SIZE], EncodeError> {
    let size = payload_len.saturating_add(FRAME_OVERHEAD as usize);
    let fits = u32::try_from(size).is_ok_and(|size| size <= max_frame_size);
    let (Ok(payload_len), true) = (u32::try_from(payload_len), fits) else {
        return Err(EncodeError::FrameTooLarge {
            size,
            max: max_frame_size,
        });
    };
    let [c0, c1] = channel.to_be_bytes();
    let [s0, s1, s2, s3] = payload_len.to_be_bytes();
    Ok([FRAME_BODY, c0, c1, s0, s1, s2, s3])
}

/// Writes a frame header with a placeholder size, lets `payload` write the
/// payload, then fills in the size and the frame end, or rolls `out` back.
fn encode_frame_with(
    frame_type: u8,
    channel: u16,
    max_frame_size: u32,
    out: &mut BytesMut,
    payload: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u8(frame_type);
    out.put_u16(channel);
    out.put_u32(0);
    if let Err(error) = payload(&mut Writer::new(out)) {
        out.truncate(start);
        return Err(error);
    }
    let payload_len = out.len() - start - FRAME_HEADER_SIZE;
    let size = payload_len + FRAME_OVERHEAD as usize;
    match u32::try_from(payload_len) {
        Ok(len32) if size <= max_frame_size as usize => {
            if let Some(slot) = out.get_mut(start + 3..start + FRAME_HEADER_SIZE) {
                slot.copy_from_slice(&len32.to_be_bytes());
            }
            out.put_u8(FRAME_END);
            Ok(())
        }
        _ => {
            out.truncate(start);
            Err(EncodeError::FrameTooLarge {
                size,
                max: max_frame_size,
            })
        }
    }
}

/// Limits the decoder enforces on what the peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest frame accepted, header and frame end included: the
    /// negotiated `frame-max`. Checked from the 7-byte header, before the
    /// payload is buffered.
    pub max_frame_size: u32,
    /// How deeply field tables and arrays may nest.
    pub max_table_depth: usize,
}

impl Default for DecodeLimits {
    /// Before tuning, peers must accept frames of [`FRAME_MIN_SIZE`] bytes
    /// and need accept no more (spec 4.2.3); tables nest at most 32 deep.
    fn default() -> Self {
        Self {
            max_frame_size: FRAME_MIN_SIZE,
            max_table_depth: DEFAULT_MAX_TABLE_DEPTH,
        }
    }
}

/// A frame header as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawHeader {
    frame_type: u8,
    channel: u16,
    size: u32,
}

/// What the front of a buffer holds.
enum Peek {
    /// More bytes are needed before anything can be said.
    Incomplete,
    /// A frame header; the whole frame takes `total` bytes.
    Frame { header: RawHeader, total: usize },
}

/// Reads the frame header at the front of `input`, checking the size it
/// announces against `limits` before any payload is waited for.
fn peek_frame(input: &[u8], limits: &DecodeLimits) -> Result<Peek, DecodeError> {
    let parsed: nom::IResult<&[u8], (u8, u16, u32), ()> = (be_u8, be_u16, be_u32).parse(input);
    let Ok((_, (frame_type, channel, size))) = parsed else {
        return Ok(Peek::Incomplete);
    };
    let total = u64::from(size) + u64::from(FRAME_OVERHEAD);
    if total > u64::from(limits.max_frame_size) {
        return Err(DecodeError::FrameTooLarge {
            size: total,
            max: limits.max_frame_size,
        });
    }
    let total = usize::try_from(total).map_err(|_| DecodeError::FrameTooLarge {
        size: total,
        max: limits.max_frame_size,
    })?;
    Ok(Peek::Frame {
        header: RawHeader {
            frame_type,
            channel,
            size,
        },
        total,
    })
}

/// Recognises a protocol header at the front of what the server sent: its
/// answer to a protocol header it does not accept (spec 4.2.2).
fn unsupported_protocol(input: &[u8]) -> Option<DecodeError> {
    let header: &[u8; 8] = input.get(..8)?.try_into().ok()?;
    let [b'A', b'M', b'Q', b'P', protocol_id, major, minor, revision] = *header else {
        return None;
    };
    Some(DecodeError::UnsupportedProtocol {
        protocol_id,
        major,
        minor,
        revision,
    })
}

/// Decodes the payload of a method or content header frame.
fn decode_payload(header: RawHeader, reader: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    match header.frame_type {
        FRAME_METHOD => Ok(Frame::Method {
            channel: header.channel,
            method: Method::decode(reader)?,
        }),
        FRAME_HEADER => Ok(Frame::Header {
            channel: header.channel,
            header: ContentHeader::decode(reader)?,
        }),
        other => Err(DecodeError::UnknownFrameType(other)),
    }
}

/// Turns a byte stream from the peer into frames, however it is split.
///
/// Bytes go in with [`extend_from_slice`](Self::extend_from_slice) (or
/// straight into [`buffer_mut`](Self::buffer_mut) from a socket read);
/// [`decode`](Self::decode) then yields one frame at a time until it returns
/// `Ok(None)`, which asks for more bytes. A frame's size is checked against
/// [`DecodeLimits::max_frame_size`] as soon as its 7-byte header is in, so a
/// hostile length never makes the buffer grow past the limit.
///
/// After an error the decoder stays failed and returns the same error.
///
/// ```
/// use amqp_proto::codec::{Frame, FrameDecoder, DecodeLimits};
///
/// let mut decoder = FrameDecoder::new(DecodeLimits::default());
/// let heartbeat = [8, 0, 0, 0, 0, 0, 0, 0xCE];
/// decoder.extend_from_slice(&heartbeat[..3]);
/// assert_eq!(decoder.decode(), Ok(None)); // wants more bytes
/// decoder.extend_from_slice(&heartbeat[3..]);
/// assert_eq!(decoder.decode(), Ok(Some(Frame::Heartbeat)));
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    limits: DecodeLimits,
    /// True until the first frame is decoded: only then may the server's
    /// bytes be a protocol header instead of a frame.
    at_start: bool,
    failed: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    #[must_use]
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            buffer: BytesMut::new(),
            limits,
            at_start: true,
            failed: None,
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// Changes the largest frame accepted, once `frame-max` is negotiated.
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.limits.max_frame_size = max_frame_size;
    }

    /// Appends bytes read from the peer.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The receive buffer, for reading from a socket straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    /// Bytes received but not yet decoded.
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// Decodes the next frame, or returns `Ok(None)` when the buffer does
    /// not hold a whole frame yet.
    pub fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.decode_next();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    fn decode_next(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.at_start && self.buffer.first() == Some(&PROTOCOL_HEADER[0]) {
            return match unsupported_protocol(&self.buffer) {
                Some(error) => Err(error),
                None if self.buffer.len() < PROTOCOL_HEADER.len()
                    && PROTOCOL_HEADER.starts_with(&self.buffer) =>
                {
                    Ok(None)
                }
                None => Err(DecodeError::UnknownFrameType(PROTOCOL_HEADER[0])),
            };
        }
        let (header, total) = match peek_frame(&self.buffer, &self.limits)? {
            Peek::Incomplete => return Ok(None),
            Peek::Frame { header, total } => (header, total),
        };
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        let end = self.buffer.get(total - 1).copied().unwrap_or(FRAME_END);
        if end != FRAME_END {
            return Err(DecodeError::BadFrameEnd { found: end });
        }
        self.at_start = false;
        let payload_len = total - FRAME_OVERHEAD as usize;
        let frame = match header.frame_type {
            FRAME_BODY => {
                let mut frame = self.buffer.split_to(total);
                frame.advance(FRAME_HEADER_SIZE);
                frame.truncate(payload_len);
                Frame::Body {
                    channel: header.channel,
                    payload: frame.freeze(),
                }
            }
            FRAME_HEARTBEAT => {
                if header.channel != 0 || header.size != 0 {
                    return Err(DecodeError::MalformedHeartbeat {
                        channel: header.channel,
                        size: header.size,
                    });
                }
                self.buffer.advance(total);
                Frame::Heartbeat
            }
            FRAME_METHOD | FRAME_HEADER if payload_len > SHARE_PAYLOADS_ABOVE => {
                let mut frame = self.buffer.split_to(total);
                frame.advance(FRAME_HEADER_SIZE);
                frame.truncate(payload_len);
                let payload = frame.freeze();
                let mut reader = Reader::shared(&payload, "frame", self.limits.max_table_depth);
                decode_payload(header, &mut reader)?
            }
            FRAME_METHOD | FRAME_HEADER => {
                let payload = self
                    .buffer
                    .get(FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + payload_len)
                    .unwrap_or_default();
                let mut reader = Reader::new(payload, "frame", self.limits.max_table_depth);
                let frame = decode_payload(header, &mut reader)?;
                self.buffer.advance(total);
                frame
            }
            other => return Err(DecodeError::UnknownFrameType(other)),
        };
        Ok(Some(frame))
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DecodeLimits::default())
    }
}

/// Decodes one complete method frame's payload (class id, method id and
/// fields) from `payload`, for tools that handle framing themselves.
pub fn decode_method(payload: &[u8], limits: &DecodeLimits) -> Result<Method, DecodeError> {
    let mut reader = Reader::new(payload, "method", limits.max_table_depth);
    Method::decode(&mut reader)
}

/// Decodes one complete content header frame's payload.
pub fn decode_content_header(
    payload: &[u8],
    limits: &DecodeLimits,
) -> Result<ContentHeader, DecodeError> {
    let mut reader = Reader::new(payload, "content header", limits.max_table_depth);
    ContentHeader::decode(&mut reader)
}
