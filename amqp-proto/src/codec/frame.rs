//! Frames (spec 4.2.3): a 7-byte header (type, channel, payload size), the
//! payload, and the frame-end octet.

use bytes::{BufMut, Bytes, BytesMut};
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
        /// Class, body size and properties. Boxed because the fourteen
        /// properties make it several times larger than any other frame,
        /// and every frame would otherwise pay for moving that size around.
        header: Box<ContentHeader>,
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
    /// A well-framed content header whose properties break a per-message
    /// limit of the decoder (a headers table nested deeper than
    /// [`DecodeLimits::max_table_depth`]). Only that message is refused:
    /// its body frames follow as usual and the connection goes on.
    RefusedHeader {
        /// The channel.
        channel: u16,
        /// The body size the header announced.
        body_size: u64,
        /// The limit it broke.
        #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_refusal))]
        error: DecodeError,
    },
}

#[cfg(any(test, feature = "arbitrary"))]
fn arbitrary_refusal(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<DecodeError> {
    Ok(DecodeError::TableTooDeep {
        max: usize::from(u.arbitrary::<u8>()?),
    })
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
            | Self::Body { channel, .. }
            | Self::RefusedHeader { channel, .. } => *channel,
            Self::Heartbeat => 0,
        }
    }

    /// Appends the encoded frame to `out`, copying a body payload.
    ///
    /// Fails, leaving `out` as it was, if a value cannot be encoded or the
    /// frame would exceed `max_frame_size` bytes. A
    /// [`RefusedHeader`](Self::RefusedHeader) has no properties left to
    /// encode and fails with the limit it broke. Publishers that want the
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
            Self::RefusedHeader { error, .. } => Err(EncodeError::TableTooDeep {
                max: match error {
                    DecodeError::TableTooDeep { max } => *max,
                    _ => DEFAULT_MAX_TABLE_DEPTH,
                },
            }),
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

/// Appends a `basic.publish` method frame without building a [`Method`]
/// (publishers reuse one `BasicPublish` for many messages); on error `out`
/// is left as it was.
pub fn encode_publish_frame(
    channel: u16,
    publish: &crate::spec::BasicPublish,
    max_frame_size: u32,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_frame_with(FRAME_METHOD, channel, max_frame_size, out, |writer| {
        writer.short(crate::spec::BasicPublish::ID.class_id);
        writer.short(crate::spec::BasicPublish::ID.method_id);
        publish.encode_fields(writer)
    })
}

/// Appends a `basic` content header frame for a body of `body_size` bytes
/// with borrowed properties; on error `out` is left as it was.
pub fn encode_properties_frame(
    channel: u16,
    body_size: u64,
    properties: &super::BasicProperties,
    max_frame_size: u32,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_frame_with(FRAME_HEADER, channel, max_frame_size, out, |writer| {
        ContentHeader::encode_parts(
            crate::spec::BASIC_CLASS_ID,
            0,
            body_size,
            properties,
            writer,
        )
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
    /// A frame whose size is within the limit; it takes `total` bytes.
    Frame { total: usize },
}

/// Reads the frame header at the front of `input`, checking the size it
/// announces against `limits` before any payload is waited for.
fn peek_frame(input: &[u8], limits: &DecodeLimits) -> Result<Peek, DecodeError> {
    let parsed: nom::IResult<&[u8], (u8, u16, u32), ()> = (be_u8, be_u16, be_u32).parse(input);
    let Ok((_, (_frame_type, _channel, size))) = parsed else {
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
    Ok(Peek::Frame { total })
}

/// The most a frame header alone makes the decoder reserve for the frame's
/// payload; see `split_ready`.
const MAX_RESERVE_AHEAD: usize = 256 * 1024;

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
#[inline]
fn decode_payload(header: RawHeader, reader: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    match header.frame_type {
        FRAME_METHOD => Ok(Frame::Method {
            channel: header.channel,
            method: Method::decode(reader)?,
        }),
        FRAME_HEADER => {
            let mut content_header = Box::<ContentHeader>::default();
            match content_header.decode_into(reader) {
                Ok(()) => Ok(Frame::Header {
                    channel: header.channel,
                    header: content_header,
                }),
                // The frame is sound and its size known: refuse the one
                // message, not the connection.
                Err(error @ DecodeError::TableTooDeep { .. }) => Ok(Frame::RefusedHeader {
                    channel: header.channel,
                    body_size: content_header.body_size,
                    error,
                }),
                Err(error) => Err(error),
            }
        }
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
/// After an error in the framing itself (a bad frame end, an oversize or
/// unknown frame, a protocol header) the decoder stays failed and returns
/// the same error: nothing after it can be told apart. A frame whose
/// payload does not decode is reported once and passed over; the next call
/// decodes the frame after it, so a peer's close-ok can still be read.
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
    /// Bytes received and not yet split into `ready`.
    incoming: BytesMut,
    /// Whole frames split off `incoming` in one piece, decoded from
    /// `ready_at` on. Splitting every complete frame at once costs one
    /// reference-count update per read instead of one per frame, and body
    /// payloads become slices of this shared buffer.
    ready: Bytes,
    ready_at: usize,
    limits: DecodeLimits,
    /// True until the first frame is split off: only then may the server's
    /// bytes be a protocol header instead of a frame.
    at_start: bool,
    failed: Option<DecodeError>,
    /// Whether the frames split off last are reported to `tracing`
    /// (asked once per batch, not once per frame).
    report: bool,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    #[must_use]
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            incoming: BytesMut::new(),
            ready: Bytes::new(),
            ready_at: 0,
            limits,
            at_start: true,
            report: false,
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
        self.incoming.extend_from_slice(bytes);
    }

    /// The receive buffer, for reading from a socket straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.incoming
    }

    /// Bytes received but not yet decoded.
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.incoming.len() + self.ready.len() - self.ready_at
    }

    /// Decodes the next frame, or returns `Ok(None)` when the buffer does
    /// not hold a whole frame yet.
    pub fn decode(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.ready_at >= self.ready.len() && !self.split_ready()? {
            return Ok(None);
        }
        self.decode_ready().map(Some)
    }

    /// True once the framing itself failed: see the type's docs.
    #[must_use]
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Moves every complete frame at the front of `incoming` into `ready`.
    /// Returns false when not even one frame is complete. A frame that is
    /// too large or badly ended is reported only once the frames before it
    /// have been decoded, so the outcome does not depend on how the bytes
    /// were split.
    fn split_ready(&mut self) -> Result<bool, DecodeError> {
        self.report = crate::diagnostics::frames_wanted();
        let failure = |this: &mut Self, error: DecodeError| {
            this.failed = Some(error.clone());
            Err(error)
        };
        if self.at_start && self.incoming.first() == Some(&PROTOCOL_HEADER[0]) {
            // Any protocol header the server answers with starts "AMQP";
            // wait for all eight bytes before judging, so the outcome is
            // the same however they were split.
            let literal = PROTOCOL_HEADER.get(..4).unwrap_or_default();
            let seen = self.incoming.get(..4).unwrap_or(&self.incoming);
            return match unsupported_protocol(&self.incoming) {
                Some(error) => failure(self, error),
                None if self.incoming.len() < PROTOCOL_HEADER.len()
                    && literal.starts_with(seen) =>
                {
                    Ok(false)
                }
                None => failure(self, DecodeError::UnknownFrameType(PROTOCOL_HEADER[0])),
            };
        }
        let mut end = 0;
        loop {
            let rest = self.incoming.get(end..).unwrap_or_default();
            match peek_frame(rest, &self.limits) {
                Ok(Peek::Frame { total, .. }) if rest.len() >= total => {
                    let frame_end = rest.get(total - 1).copied().unwrap_or(FRAME_END);
                    if frame_end != FRAME_END {
                        if end == 0 {
                            return failure(self, DecodeError::BadFrameEnd { found: frame_end });
                        }
                        break;
                    }
                    end += total;
                }
                Ok(Peek::Frame { total, .. }) => {
                    if end == 0 {
                        // Room for the rest of the frame in one step, but
                        // never more than a bounded amount on the word of a
                        // header alone: with an unlimited frame-max the
                        // size may be anything up to 4 GiB, and the buffer
                        // then grows only as the bytes really arrive.
                        self.incoming
                            .reserve((total - rest.len()).min(MAX_RESERVE_AHEAD));
                    }
                    break;
                }
                Ok(Peek::Incomplete) => break,
                Err(error) if end == 0 => return failure(self, error),
                Err(_) => break,
            }
        }
        if end == 0 {
            return Ok(false);
        }
        self.at_start = false;
        self.ready = self.incoming.split_to(end).freeze();
        self.ready_at = 0;
        Ok(true)
    }

    /// Decodes the frame at `ready_at`, which `split_ready` found complete
    /// and well ended.
    fn decode_ready(&mut self) -> Result<Frame, DecodeError> {
        let rest = self.ready.get(self.ready_at..).unwrap_or_default();
        // `split_ready` parsed and checked this header already; reading the
        // seven bytes again directly is far cheaper than a second nom pass.
        let Some(&[frame_type, c0, c1, s0, s1, s2, s3]) = rest.first_chunk::<FRAME_HEADER_SIZE>()
        else {
            return Err(DecodeError::Truncated { context: "frame" });
        };
        let header = RawHeader {
            frame_type,
            channel: u16::from_be_bytes([c0, c1]),
            size: u32::from_be_bytes([s0, s1, s2, s3]),
        };
        let total = header.size as usize + FRAME_OVERHEAD as usize;
        if total > rest.len() {
            return Err(DecodeError::Truncated { context: "frame" });
        }
        let payload_start = self.ready_at + FRAME_HEADER_SIZE;
        let payload_end = self.ready_at + total - 1;
        if self.report {
            let method = self
                .ready
                .get(payload_start..payload_end)
                .and_then(|payload| payload.first_chunk::<4>())
                .map(|&[c0, c1, m0, m1]| {
                    (u16::from_be_bytes([c0, c1]), u16::from_be_bytes([m0, m1]))
                });
            crate::diagnostics::frame_received(
                header.frame_type,
                header.channel,
                header.size,
                method,
            );
        }
        self.ready_at += total;
        match header.frame_type {
            FRAME_BODY => Ok(Frame::Body {
                channel: header.channel,
                payload: self.ready.slice(payload_start..payload_end),
            }),
            FRAME_HEARTBEAT if header.channel == 0 && header.size == 0 => Ok(Frame::Heartbeat),
            FRAME_HEARTBEAT => Err(DecodeError::MalformedHeartbeat {
                channel: header.channel,
                size: header.size,
            }),
            FRAME_METHOD | FRAME_HEADER if payload_end - payload_start > SHARE_PAYLOADS_ABOVE => {
                let payload = self.ready.slice(payload_start..payload_end);
                let mut reader = Reader::shared(&payload, "frame", self.limits.max_table_depth);
                decode_payload(header, &mut reader)
            }
            FRAME_METHOD | FRAME_HEADER => {
                let buf = self.ready.get(payload_start..).unwrap_or_default();
                let mut reader = Reader::with_lookahead(
                    buf,
                    payload_end - payload_start,
                    "frame",
                    self.limits.max_table_depth,
                );
                decode_payload(header, &mut reader)
            }
            other => Err(DecodeError::UnknownFrameType(other)),
        }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::test_support::arbitrary_value;
    use crate::codec::BasicProperties;
    use crate::spec::constants::ReplyCode;
    use crate::spec::{BasicDeliver, ChannelOpen};

    const MAX: u32 = 131_072;

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_frame_size: MAX,
            ..DecodeLimits::default()
        }
    }

    fn decode_all(decoder: &mut FrameDecoder) -> Result<Vec<Frame>, DecodeError> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn delivery(channel: u16, body: &'static [u8]) -> Vec<Frame> {
        vec![
            Frame::Method {
                channel,
                method: Method::BasicDeliver(BasicDeliver {
                    consumer_tag: "amq.ctag-abcdefghijklmnopqrstuv".into(),
                    delivery_tag: 42,
                    redelivered: true,
                    exchange: "".into(),
                    routing_key: "queue".into(),
                }),
            },
            Frame::Header {
                channel,
                header: Box::new(ContentHeader::basic(
                    body.len() as u64,
                    BasicProperties::default()
                        .content_type("text/plain")
                        .delivery_mode(1u8),
                )),
            },
            Frame::Body {
                channel,
                payload: Bytes::from_static(body),
            },
        ]
    }

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let mut out = BytesMut::new();
        for frame in frames {
            frame.encode(&mut out, MAX).unwrap();
        }
        out
    }

    #[test]
    fn bad_frame_end_closes_silently_with_frame_error() {
        let mut wire = encode_all(&delivery(1, b"body"));
        let last = wire.len() - 1;
        wire[last] = 0xCD;
        let mut decoder = FrameDecoder::new(limits());
        decoder.extend_from_slice(&wire);
        let error = decode_all(&mut decoder).unwrap_err();
        assert_eq!(error, DecodeError::BadFrameEnd { found: 0xCD });
        assert_eq!(error.reply_code(), ReplyCode::FRAME_ERROR);
        assert!(error.close_silently());
        // The decoder stays failed.
        assert_eq!(decoder.decode(), Err(error));
    }

    #[test]
    fn oversize_frame_is_refused_from_its_header_alone() {
        let mut decoder = FrameDecoder::new(limits());
        // A body frame announcing 1 GiB: only the 7 header bytes arrive.
        decoder.extend_from_slice(&[FRAME_BODY, 0, 1, 0x40, 0, 0, 0]);
        let error = decoder.decode().unwrap_err();
        assert_eq!(
            error,
            DecodeError::FrameTooLarge {
                size: (1 << 30) + 8,
                max: MAX
            }
        );
        assert_eq!(error.reply_code(), ReplyCode::FRAME_ERROR);
        assert!(!error.close_silently());
        assert!(
            decoder.buffer_mut().capacity() < 1024,
            "nothing was reserved"
        );
    }

    #[test]
    fn frame_of_exactly_frame_max_is_accepted() {
        let payload = Bytes::from(vec![7u8; (MAX - FRAME_OVERHEAD) as usize]);
        let frame = Frame::Body {
            channel: 3,
            payload,
        };
        let mut out = BytesMut::new();
        frame.encode(&mut out, MAX).unwrap();
        assert_eq!(out.len(), MAX as usize);
        let mut decoder = FrameDecoder::new(limits());
        decoder.extend_from_slice(&out);
        assert_eq!(decoder.decode(), Ok(Some(frame.clone())));
        // One byte more is refused, on both sides.
        let mut too_big = BytesMut::new();
        assert!(matches!(
            frame.encode(&mut too_big, MAX - 1),
            Err(EncodeError::FrameTooLarge { .. })
        ));
        assert!(too_big.is_empty());
    }

    #[test]
    fn unknown_frame_types_and_bad_heartbeats_are_frame_errors() {
        for (bytes, expected) in [
            (
                vec![4, 0, 0, 0, 0, 0, 0, FRAME_END],
                DecodeError::UnknownFrameType(4),
            ),
            (
                vec![FRAME_HEARTBEAT, 0, 5, 0, 0, 0, 0, FRAME_END],
                DecodeError::MalformedHeartbeat {
                    channel: 5,
                    size: 0,
                },
            ),
            (
                vec![FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 1, 0, FRAME_END],
                DecodeError::MalformedHeartbeat {
                    channel: 0,
                    size: 1,
                },
            ),
        ] {
            let mut decoder = FrameDecoder::new(limits());
            decoder.extend_from_slice(&bytes);
            let error = decoder.decode().unwrap_err();
            assert_eq!(error, expected);
            assert_eq!(error.reply_code(), ReplyCode::FRAME_ERROR);
        }
    }

    #[test]
    fn a_server_answering_with_its_protocol_header_is_recognised() {
        let mut decoder = FrameDecoder::new(limits());
        decoder.extend_from_slice(b"AMQP");
        assert_eq!(decoder.decode(), Ok(None));
        decoder.extend_from_slice(&[0, 0, 9, 1]);
        let error = decoder.decode().unwrap_err();
        assert_eq!(
            error,
            DecodeError::UnsupportedProtocol {
                protocol_id: 0,
                major: 0,
                minor: 9,
                revision: 1
            }
        );
        assert!(error.close_silently());

        let mut garbage = FrameDecoder::new(limits());
        garbage.extend_from_slice(b"AMQX\0\0\0\0");
        assert_eq!(garbage.decode(), Err(DecodeError::UnknownFrameType(b'A')));
    }

    #[test]
    fn method_frames_with_garbage_payloads_are_rejected() {
        let mut wire = BytesMut::new();
        let open = Method::ChannelOpen(ChannelOpen::default());
        encode_method_frame(1, &open, MAX, &mut wire).unwrap();
        // Claim one byte more payload and put a stray byte before the end.
        wire[6] += 1;
        let end = wire.len() - 1;
        wire[end] = 0x00;
        wire.put_u8(FRAME_END);
        let mut decoder = FrameDecoder::new(limits());
        decoder.extend_from_slice(&wire);
        assert_eq!(
            decoder.decode(),
            Err(DecodeError::TrailingBytes {
                context: "channel.open",
                extra: 1
            })
        );
    }

    #[test]
    fn body_payloads_are_slices_of_the_read_buffer() {
        let wire = encode_all(&delivery(1, b"0123456789abcdef"));
        let mut decoder = FrameDecoder::new(limits());
        decoder.buffer_mut().extend_from_slice(&wire);
        let start = decoder.buffer_mut().as_ptr() as usize;
        let end = start + wire.len();
        let frames = decode_all(&mut decoder).unwrap();
        let Frame::Body { payload, .. } = &frames[2] else {
            panic!("third frame is the body: {frames:?}");
        };
        let at = payload.as_ptr() as usize;
        assert!(
            at >= start && at < end,
            "the body points into the read buffer"
        );
        assert_eq!(payload, &b"0123456789abcdef"[..]);
    }

    #[test]
    fn long_strings_in_large_frames_are_slices_of_the_read_buffer() {
        let big = "x".repeat(4000);
        let secure = Method::ConnectionSecure(crate::spec::ConnectionSecure {
            challenge: big.as_str().into(),
        });
        let mut wire = BytesMut::new();
        encode_method_frame(0, &secure, MAX, &mut wire).unwrap();
        let mut decoder = FrameDecoder::new(limits());
        decoder.buffer_mut().extend_from_slice(&wire);
        let start = decoder.buffer_mut().as_ptr() as usize;
        let Some(Frame::Method {
            method: Method::ConnectionSecure(decoded),
            ..
        }) = decoder.decode().unwrap()
        else {
            panic!("expected connection.secure");
        };
        let at = decoded.challenge.as_bytes().as_ptr() as usize;
        assert!(at >= start && at < start + wire.len());
        assert_eq!(decoded.challenge, big.as_str());
    }

    #[test]
    fn failed_encodes_leave_the_buffer_untouched() {
        let mut out = BytesMut::from(&b"kept"[..]);
        let long = "x".repeat(300);
        let bad = Method::QueueDeclare(crate::spec::QueueDeclare {
            queue: long.as_str().into(),
            ..Default::default()
        });
        assert_eq!(
            encode_method_frame(1, &bad, MAX, &mut out),
            Err(EncodeError::ShortStringTooLong { len: 300 })
        );
        assert_eq!(&out[..], b"kept");
        let fine = Method::QueueDeclare(crate::spec::QueueDeclare::default());
        assert!(matches!(
            encode_method_frame(1, &fine, 10, &mut out),
            Err(EncodeError::FrameTooLarge { max: 10, .. })
        ));
        assert_eq!(&out[..], b"kept");
    }

    fn normalise(frame: Frame) -> Frame {
        match frame {
            // Only `basic` carries content; other classes are refused.
            Frame::Header { channel, header } => Frame::Header {
                channel,
                header: Box::new(ContentHeader {
                    class_id: crate::spec::BASIC_CLASS_ID,
                    ..*header
                }),
            },
            other => other,
        }
    }

    proptest! {
        /// The same bytes, in any split, give the same frames.
        #[test]
        fn any_split_gives_the_same_frames(
            frames in proptest::collection::vec(arbitrary_value::<Frame>(), 1..8),
            cuts in proptest::collection::vec(1usize..64, 1..64),
        ) {
            let frames: Vec<Frame> = frames.into_iter().map(normalise).collect();
            let mut wire = BytesMut::new();
            let mut encoded = Vec::new();
            for frame in frames {
                if frame.encode(&mut wire, MAX).is_ok() {
                    encoded.push(frame);
                }
            }
            let mut whole = FrameDecoder::new(limits());
            whole.extend_from_slice(&wire);
            let at_once = decode_all(&mut whole);

            let mut split = FrameDecoder::new(limits());
            let mut piecewise = Vec::new();
            let mut rest = &wire[..];
            let mut outcome = Ok(());
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                rest = tail;
                split.extend_from_slice(chunk);
                match decode_all(&mut split) {
                    Ok(frames) => piecewise.extend(frames),
                    Err(error) => {
                        outcome = Err(error);
                        break;
                    }
                }
            }
            match (at_once, outcome) {
                (Ok(frames), Ok(())) => {
                    prop_assert_eq!(&frames, &piecewise);
                    // Tables nested beyond the limit fail both ways alike,
                    // so a success means every frame came back intact.
                    prop_assert_eq!(frames, encoded);
                }
                (Err(whole_error), Err(split_error)) => prop_assert_eq!(whole_error, split_error),
                (whole, split) => prop_assert!(false, "whole {:?} but split {:?}", whole, split),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_frame_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
            chunk in 1usize..32,
        ) {
            let mut decoder = FrameDecoder::new(limits());
            for piece in bytes.chunks(chunk) {
                decoder.extend_from_slice(piece);
                if decode_all(&mut decoder).is_err() {
                    break;
                }
            }
        }
    }
}
