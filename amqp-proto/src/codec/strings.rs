//! `shortstr` and `longstr`: the two string types of AMQP 0-9-1 (spec 4.2.5.3).
//!
//! Both hold bytes, not `str`: the specification asks for UTF-8 but RabbitMQ
//! forwards whatever a publisher sent (routing keys, consumer tags), and one
//! careless publisher must not be able to break every consumer's connection.
//! [`ShortString::to_str`] and [`LongString::to_str`] check UTF-8 on demand.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::Utf8Error;

use bytes::Bytes;

/// Short strings up to this many bytes are stored inline, without touching
/// the heap or a shared buffer's reference count. Consumer tags RabbitMQ
/// generates (`amq.ctag-` and 22 characters), exchange names and routing keys
/// are nearly always this short, and they sit on the per-delivery hot path.
const INLINE_CAPACITY: usize = 38;

/// An AMQP `shortstr`: at most 255 bytes on the wire.
///
/// Values decoded from the wire are never longer than 255 bytes. Values built
/// locally may be; encoding one then fails with
/// [`EncodeError::ShortStringTooLong`](crate::EncodeError::ShortStringTooLong)
/// instead of truncating it.
#[derive(Clone)]
pub struct ShortString(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; INLINE_CAPACITY],
    },
    Shared(Bytes),
}

impl ShortString {
    /// Copies the first `len` bytes of `window` (at most 255), reading a
    /// whole inline-sized window when there is one: a fixed-size copy
    /// compiles to a few vector moves instead of a `memcpy` call, which
    /// matters on the per-delivery path. Bytes past `len` are never read.
    #[inline]
    pub(crate) fn from_window(window: &[u8], len: u8) -> Self {
        let len_usize = usize::from(len);
        match window.first_chunk::<INLINE_CAPACITY>() {
            Some(chunk) if len_usize <= INLINE_CAPACITY => {
                Self(Repr::Inline { len, bytes: *chunk })
            }
            _ => Self::copy_from_slice(window.get(..len_usize).unwrap_or_default()),
        }
    }

    /// The empty string.
    pub const EMPTY: Self = Self(Repr::Inline {
        len: 0,
        bytes: [0; INLINE_CAPACITY],
    });

    /// Copies `bytes` into a new short string.
    #[must_use]
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_CAPACITY => {
                let mut inline = [0; INLINE_CAPACITY];
                inline
                    .get_mut(..bytes.len())
                    .unwrap_or_default()
                    .copy_from_slice(bytes);
                Self(Repr::Inline { len, bytes: inline })
            }
            _ => Self(Repr::Shared(Bytes::copy_from_slice(bytes))),
        }
    }

    /// Wraps `bytes`; short values are copied inline so the buffer behind a
    /// long-lived value is not kept alive by a few bytes of it.
    #[must_use]
    pub fn from_bytes(bytes: Bytes) -> Self {
        if bytes.len() <= INLINE_CAPACITY {
            Self::copy_from_slice(&bytes)
        } else {
            Self(Repr::Shared(bytes))
        }
    }

    /// The raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(bytes) => bytes,
        }
    }

    /// The string as UTF-8, or the reason it is not.
    pub fn to_str(&self) -> Result<&str, Utf8Error> {
        std::str::from_utf8(self.as_bytes())
    }

    /// The string with invalid UTF-8 sequences replaced by U+FFFD.
    #[must_use]
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl Default for ShortString {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl PartialEq for ShortString {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShortString {}

impl PartialOrd for ShortString {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortString {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for ShortString {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for ShortString {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for ShortString {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq<str> for ShortString {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for ShortString {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Debug for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl fmt::Display for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_string_lossy(), f)
    }
}

impl From<&str> for ShortString {
    fn from(value: &str) -> Self {
        Self::copy_from_slice(value.as_bytes())
    }
}

impl From<String> for ShortString {
    fn from(value: String) -> Self {
        Self::from_bytes(Bytes::from(value))
    }
}

impl From<&String> for ShortString {
    fn from(value: &String) -> Self {
        Self::from(value.as_str())
    }
}

impl From<Bytes> for ShortString {
    fn from(value: Bytes) -> Self {
        Self::from_bytes(value)
    }
}

impl From<&[u8]> for ShortString {
    fn from(value: &[u8]) -> Self {
        Self::copy_from_slice(value)
    }
}

#[cfg(any(test, feature = "arbitrary"))]
impl<'a> arbitrary::Arbitrary<'a> for ShortString {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(0..=255)?;
        Ok(Self::copy_from_slice(u.bytes(len)?))
    }
}

/// An AMQP `longstr`: up to 2^32 - 1 bytes, also used for SASL responses,
/// `channel-id` and field-table `S` values.
///
/// Decoded values are zero-copy slices of the frame they came in when the
/// decoder was given the frame as [`Bytes`].
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LongString(Bytes);

impl LongString {
    /// Wraps `bytes` without copying.
    #[must_use]
    pub const fn from_bytes(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying buffer (cheap to clone).
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The string as UTF-8, or the reason it is not.
    pub fn to_str(&self) -> Result<&str, Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// The string with invalid UTF-8 sequences replaced by U+FFFD.
    #[must_use]
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for LongString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl fmt::Display for LongString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_string_lossy(), f)
    }
}

impl AsRef<[u8]> for LongString {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for LongString {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for LongString {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl From<&str> for LongString {
    fn from(value: &str) -> Self {
        Self(Bytes::copy_from_slice(value.as_bytes()))
    }
}

impl From<String> for LongString {
    fn from(value: String) -> Self {
        Self(Bytes::from(value))
    }
}

impl From<Vec<u8>> for LongString {
    fn from(value: Vec<u8>) -> Self {
        Self(Bytes::from(value))
    }
}

impl From<&[u8]> for LongString {
    fn from(value: &[u8]) -> Self {
        Self(Bytes::copy_from_slice(value))
    }
}

impl From<Bytes> for LongString {
    fn from(value: Bytes) -> Self {
        Self(value)
    }
}

#[cfg(any(test, feature = "arbitrary"))]
impl<'a> arbitrary::Arbitrary<'a> for LongString {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let bytes: &[u8] = u.arbitrary()?;
        Ok(Self(Bytes::copy_from_slice(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_compare_by_content_whatever_their_storage() {
        let long = "x".repeat(INLINE_CAPACITY + 1);
        let inline = ShortString::from("x");
        assert!(matches!(inline.0, Repr::Inline { .. }));
        let shared = ShortString::from(long.clone());
        assert!(matches!(shared.0, Repr::Shared(_)));
        assert_eq!(shared, ShortString::copy_from_slice(long.as_bytes()));
        assert_eq!(shared.len(), INLINE_CAPACITY + 1);
        assert_eq!(inline, "x");
        assert_ne!(inline, shared);
        assert!(ShortString::EMPTY.is_empty());
    }

    #[test]
    fn invalid_utf8_is_kept_and_reported() {
        let s = ShortString::copy_from_slice(&[0xff, b'a']);
        assert!(s.to_str().is_err());
        assert_eq!(s.as_bytes(), &[0xff, b'a']);
        assert_eq!(s.to_string_lossy(), "\u{fffd}a");
    }
}
