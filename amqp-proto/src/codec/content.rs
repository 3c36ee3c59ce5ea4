//! Joins a content header and its body frames into one message body
//! (spec 4.2.6), enforcing the body-size limit and the announced size.

use bytes::{Bytes, BytesMut};

use super::properties::ContentHeader;
use crate::error::DecodeError;

/// The default cap on a message body: 64 MiB, as RabbitMQ's Java client.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 64 * 1024 * 1024;

/// A complete message body with its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// The content header, properties included; boxed as the decoder
    /// produced it, so it moves through events without being copied.
    pub header: Box<ContentHeader>,
    /// The whole body. Zero-copy when it arrived in a single body frame.
    pub body: Bytes,
}

/// Collects one content at a time on one channel: a header, then body
/// frames until the announced size is reached.
///
/// ```
/// use amqp_proto::codec::{BasicProperties, ContentAssembler, ContentHeader};
/// use bytes::Bytes;
///
/// let mut assembler = ContentAssembler::new(1024);
/// let header = Box::new(ContentHeader::basic(5, BasicProperties::default()));
/// assert_eq!(assembler.start(header).unwrap(), None);
/// assert_eq!(assembler.push_body(Bytes::from_static(b"he")).unwrap(), None);
/// let content = assembler.push_body(Bytes::from_static(b"llo")).unwrap().unwrap();
/// assert_eq!(content.body, "hello");
/// ```
#[derive(Debug)]
pub struct ContentAssembler {
    max_body_size: u64,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    header: Box<ContentHeader>,
    received: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Empty,
    /// One frame so far: kept as the zero-copy slice it arrived as.
    Single(Bytes),
    /// Several frames: joined into one buffer.
    Joined(BytesMut),
    /// A refused message's body: counted as it arrives, never kept.
    Skipped,
}

impl ContentAssembler {
    /// An assembler accepting bodies of at most `max_body_size` bytes.
    #[must_use]
    pub fn new(max_body_size: u64) -> Self {
        Self {
            max_body_size,
            pending: None,
        }
    }

    /// The largest body accepted.
    #[must_use]
    pub fn max_body_size(&self) -> u64 {
        self.max_body_size
    }

    /// True while a header was received and body bytes are still due.
    #[must_use]
    pub fn is_collecting(&self) -> bool {
        self.pending.is_some()
    }

    /// Body bytes still due for the content being collected.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.pending
            .as_ref()
            .map_or(0, |pending| pending.header.body_size - pending.received)
    }

    /// Begins a content with its header; returns it at once when the body is
    /// empty.
    pub fn start(&mut self, header: Box<ContentHeader>) -> Result<Option<Content>, DecodeError> {
        if self.pending.is_some() {
            return Err(DecodeError::UnexpectedFrame {
                found: "content header",
                expected: "a body frame of the content in progress",
            });
        }
        if header.body_size > self.max_body_size {
            return Err(DecodeError::BodyTooLarge {
                size: header.body_size,
                max: self.max_body_size,
            });
        }
        if header.body_size == 0 {
            return Ok(Some(Content {
                header,
                body: Bytes::new(),
            }));
        }
        self.pending = Some(Pending {
            header,
            received: 0,
            body: Body::Empty,
        });
        Ok(None)
    }

    /// Begins a content that is read but not kept (a message refused for a
    /// per-message limit): its body frames are counted against `body_size`
    /// and dropped, and it completes as a content with an empty body.
    /// Returns true when there is nothing to skip.
    pub fn skip(&mut self, body_size: u64) -> Result<bool, DecodeError> {
        if self.pending.is_some() {
            return Err(DecodeError::UnexpectedFrame {
                found: "content header",
                expected: "a body frame of the content in progress",
            });
        }
        if body_size == 0 {
            return Ok(true);
        }
        self.pending = Some(Pending {
            header: Box::new(ContentHeader::basic(body_size, Default::default())),
            received: 0,
            body: Body::Skipped,
        });
        Ok(false)
    }

    /// Adds a body frame's payload; returns the content once complete.
    pub fn push_body(&mut self, payload: Bytes) -> Result<Option<Content>, DecodeError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(DecodeError::UnexpectedFrame {
                found: "body",
                expected: "a method frame (no content header preceded it)",
            });
        };
        let received = pending.received + payload.len() as u64;
        if received > pending.header.body_size {
            return Err(DecodeError::BodyOverrun {
                expected: pending.header.body_size,
                received,
            });
        }
        pending.received = received;
        pending.body = match std::mem::replace(&mut pending.body, Body::Empty) {
            Body::Skipped => Body::Skipped,
            Body::Empty => Body::Single(payload),
            Body::Single(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + payload.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&payload);
                Body::Joined(joined)
            }
            Body::Joined(mut joined) => {
                joined.extend_from_slice(&payload);
                Body::Joined(joined)
            }
        };
        if received < pending.header.body_size {
            return Ok(None);
        }
        let Some(Pending { header, body, .. }) = self.pending.take() else {
            return Ok(None);
        };
        let body = match body {
            Body::Empty | Body::Skipped => Bytes::new(),
            Body::Single(bytes) => bytes,
            Body::Joined(joined) => joined.freeze(),
        };
        Ok(Some(Content { header, body }))
    }

    /// Drops a partly collected content (the channel closed).
    pub fn reset(&mut self) {
        self.pending = None;
    }
}

impl Default for ContentAssembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BODY_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::BasicProperties;
    use crate::spec::constants::ReplyCode;

    fn header(size: u64) -> Box<ContentHeader> {
        Box::new(ContentHeader::basic(size, BasicProperties::default()))
    }

    #[test]
    fn a_single_frame_body_is_passed_through_without_copying() {
        let mut assembler = ContentAssembler::default();
        assert_eq!(assembler.start(header(3)), Ok(None));
        let payload = Bytes::from_static(b"abc");
        let content = assembler.push_body(payload.clone()).unwrap().unwrap();
        assert_eq!(content.body.as_ptr(), payload.as_ptr());
        assert!(!assembler.is_collecting());
    }

    #[test]
    fn an_empty_body_completes_with_the_header() {
        let mut assembler = ContentAssembler::default();
        let content = assembler.start(header(0)).unwrap().unwrap();
        assert!(content.body.is_empty());
    }

    #[test]
    fn a_body_larger_than_announced_is_a_frame_error() {
        let mut assembler = ContentAssembler::default();
        assembler.start(header(4)).unwrap();
        assert_eq!(assembler.push_body(Bytes::from_static(b"ab")), Ok(None));
        assert_eq!(assembler.remaining(), 2);
        let error = assembler.push_body(Bytes::from_static(b"cde")).unwrap_err();
        assert_eq!(
            error,
            DecodeError::BodyOverrun {
                expected: 4,
                received: 5
            }
        );
        assert_eq!(error.reply_code(), ReplyCode::FRAME_ERROR);
    }

    #[test]
    fn a_body_over_the_limit_is_refused_at_the_header() {
        let mut assembler = ContentAssembler::new(1000);
        let error = assembler.start(header(1001)).unwrap_err();
        assert_eq!(
            error,
            DecodeError::BodyTooLarge {
                size: 1001,
                max: 1000
            }
        );
        assert_eq!(error.reply_code(), ReplyCode::RESOURCE_ERROR);
        assert!(!assembler.is_collecting());
    }

    #[test]
    fn out_of_sequence_content_frames_are_unexpected() {
        let mut assembler = ContentAssembler::default();
        let error = assembler.push_body(Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(error.reply_code(), ReplyCode::UNEXPECTED_FRAME);
        assembler.start(header(1)).unwrap();
        let error = assembler.start(header(1)).unwrap_err();
        assert_eq!(error.reply_code(), ReplyCode::UNEXPECTED_FRAME);
        assembler.reset();
        assert!(!assembler.is_collecting());
    }

    #[test]
    fn many_frames_join_in_order() {
        let mut assembler = ContentAssembler::default();
        assembler.start(header(6)).unwrap();
        for chunk in [&b"ab"[..], b"cd"] {
            assert_eq!(assembler.push_body(Bytes::copy_from_slice(chunk)), Ok(None));
        }
        let content = assembler
            .push_body(Bytes::from_static(b"ef"))
            .unwrap()
            .unwrap();
        assert_eq!(content.body, &b"abcdef"[..]);
    }
}
