//! Protocol constants of AMQP 0-9-1 (spec section 1.2 and 4.2).

use std::fmt;

/// The eight bytes a client sends first: `AMQP`, protocol id 0, version 0-9-1
/// (spec 4.2.2).
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// Frame type octet of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Frame type octet of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Frame type octet of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Frame type octet of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Bytes a frame adds around its payload: the 7-byte header and the end octet.
pub const FRAME_OVERHEAD: u32 = 8;
/// The smallest `frame-max` peers may negotiate, and the largest frame either
/// side must accept before tuning.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// The reply code of a `connection.close` or `channel.close`, or of a
/// `basic.return`.
///
/// A newtype rather than an enum, because peers may send codes this crate
/// does not name; the named ones are associated constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ReplyCode(pub u16);

macro_rules! reply_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal, $hard:literal;)*) => {
        impl ReplyCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// The specification's name for this code (`"frame-error"`), if it has one.
            #[must_use]
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }

            /// True for codes the specification classes as connection
            /// exceptions ("hard errors"), which close the whole connection.
            #[must_use]
            pub fn is_hard_error(self) -> bool {
                match self.0 {
                    $($value => $hard,)*
                    _ => false,
                }
            }
        }
    };
}

reply_codes! {
    /// 200: the method completed successfully (used for normal closes).
    REPLY_SUCCESS = 200, "reply-success", false;
    /// 311: the message was too large to route (soft error).
    CONTENT_TOO_LARGE = 311, "content-too-large", false;
    /// 312: a mandatory message could not be routed (in `basic.return`).
    NO_ROUTE = 312, "no-route", false;
    /// 313: an immediate message had no consumer (in `basic.return`).
    NO_CONSUMERS = 313, "no-consumers", false;
    /// 320: an operator closed the connection.
    CONNECTION_FORCED = 320, "connection-forced", true;
    /// 402: the virtual host path is invalid.
    INVALID_PATH = 402, "invalid-path", true;
    /// 403: access to the resource was refused.
    ACCESS_REFUSED = 403, "access-refused", false;
    /// 404: the entity does not exist.
    NOT_FOUND = 404, "not-found", false;
    /// 405: another connection holds an exclusive lock on the entity.
    RESOURCE_LOCKED = 405, "resource-locked", false;
    /// 406: a precondition, such as a declared entity's settings, failed.
    PRECONDITION_FAILED = 406, "precondition-failed", false;
    /// 501: a frame could not be decoded.
    FRAME_ERROR = 501, "frame-error", true;
    /// 502: a frame carried illegal field values.
    SYNTAX_ERROR = 502, "syntax-error", true;
    /// 503: an invalid sequence of methods.
    COMMAND_INVALID = 503, "command-invalid", true;
    /// 504: a channel was used that was not correctly opened.
    CHANNEL_ERROR = 504, "channel-error", true;
    /// 505: a frame arrived that was not expected (content out of sequence).
    UNEXPECTED_FRAME = 505, "unexpected-frame", true;
    /// 506: the sender lacked the resources to complete the method.
    RESOURCE_ERROR = 506, "resource-error", true;
    /// 530: the operation is not allowed.
    NOT_ALLOWED = 530, "not-allowed", true;
    /// 540: the functionality is not implemented.
    NOT_IMPLEMENTED = 540, "not-implemented", true;
    /// 541: an internal error in the sender.
    INTERNAL_ERROR = 541, "internal-error", true;
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl From<u16> for ReplyCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}
