//! W3C Trace Context in AMQP 0-9-1 message headers, with no dependencies.
//!
//! AMQP 0-9-1 has no standard place for a trace context. What the other
//! clients and their instrumentations agree on (the OpenTelemetry Java
//! agent, the .NET client, pika, Celery) is the
//! [W3C Trace Context](https://www.w3.org/TR/trace-context-2/) fields
//! [`TRACEPARENT`] and [`TRACESTATE`] (and [`BAGGAGE`]) as entries of the
//! message's `headers` table, written as long strings (`S`). Some clients
//! hand long strings to applications as byte arrays and write them back as
//! `x`, so both are read here.
//!
//! This module is the part that needs no tracing library: the
//! `traceparent` codec ([`TraceParent`]), a text view of a header table in
//! the shape of OpenTelemetry's injector and extractor ([`Headers`],
//! [`HeadersMut`]), and [`inject`]/[`extract`] over [`BasicProperties`].
//! It never overwrites a `traceparent` the application set itself, so an
//! application that propagates its own context is never silently
//! reparented.
//!
//! ```
//! use amqp_proto::codec::{BasicProperties, FieldTable, FieldValue};
//! use amqp_proto::propagation::{self, Headers, TraceParent, TRACEPARENT};
//! use amqp_proto::bytes::Bytes;
//!
//! // The context of the span that publishes.
//! let context = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .expect("a valid traceparent");
//! assert!(context.sampled());
//!
//! let mut properties = BasicProperties::default().content_type("application/json");
//! assert!(propagation::inject(&mut properties, &context, Some("rojo=00f067aa0ba902b7")));
//!
//! // The consumer's side: the same context comes back out.
//! let (parent, tracestate) = propagation::extract(&properties).expect("a context");
//! assert_eq!(parent, context);
//! assert_eq!(tracestate, Some("rojo=00f067aa0ba902b7"));
//!
//! // A message that already carries a context keeps it.
//! let other = TraceParent { parent_id: [7; 8], ..context };
//! assert!(!propagation::inject(&mut properties, &other, None));
//! assert_eq!(propagation::extract(&properties).map(|(parent, _)| parent), Some(context));
//!
//! // A header written as a byte array (as the .NET client reads it) is read too.
//! let mut headers = FieldTable::new();
//! headers.insert(
//!     TRACEPARENT,
//!     FieldValue::ByteArray(Bytes::from_static(
//!         b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
//!     )),
//! );
//! assert_eq!(Headers(&headers).get(TRACEPARENT).and_then(TraceParent::parse), Some(context));
//! ```
//!
//! What is checked: `traceparent` strictly, as level 2 of the
//! specification describes it (see [`TraceParent::parse`]). `tracestate` is
//! passed through as text, limited to [`TRACESTATE_MAX_LEN`] bytes by
//! [`truncate_tracestate`], and not otherwise validated: a tracing library
//! that interprets it validates its own entries. `baggage` is only named
//! here; nothing in this module reads or writes it.

use std::fmt;

use crate::codec::{BasicProperties, FieldTable, FieldValue, LongString};

/// The header that carries the [`TraceParent`]: the trace and the span the
/// message was created in. Lowercase, as the specification recommends for
/// carriers that compare names exactly, as AMQP tables do.
pub const TRACEPARENT: &str = "traceparent";

/// The header that carries vendor-specific trace state, a companion of
/// [`TRACEPARENT`] that means nothing without it.
pub const TRACESTATE: &str = "tracestate";

/// The header that carries W3C Baggage (application key/value pairs that
/// travel with a trace). Named here so that adapters and applications
/// agree on the key; this module does not interpret it.
pub const BAGGAGE: &str = "baggage";

/// The longest `tracestate` [`truncate_tracestate`] keeps, in bytes: the
/// 512 characters the specification asks every participant to propagate.
/// A longer value is cut by whole entries, never inside one.
pub const TRACESTATE_MAX_LEN: usize = 512;

/// The length of a version `00` `traceparent`, which is also the prefix a
/// future version is read by.
const TRACEPARENT_LEN: usize = 55;

/// A `traceparent` value: the trace a message belongs to, the span that
/// created it, and the caller's flags.
///
/// The fields are public so that a tracing library's ids convert without
/// ceremony. A value with an all-zero id is not a valid context: [`parse`]
/// never returns one, [`is_valid`] tells, and [`inject`] refuses it.
///
/// [`parse`]: TraceParent::parse
/// [`is_valid`]: TraceParent::is_valid
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The id of the whole trace (16 bytes, big-endian as written in hex).
    pub trace_id: [u8; 16],
    /// The id of the span the message was created in; the consumer's span
    /// takes it as its parent (or links to it).
    pub parent_id: [u8; 8],
    /// The trace flags, a bit field: test bits ([`TraceParent::sampled`],
    /// [`TraceParent::FLAG_RANDOM`]), never compare the whole byte.
    pub flags: u8,
}

impl TraceParent {
    /// The `sampled` flag: the caller may have recorded the trace, so a
    /// consumer that respects its caller's decision records too.
    pub const FLAG_SAMPLED: u8 = 0x01;

    /// The `random-trace-id` flag (level 2): at least the right-most 7
    /// bytes of the trace id are random, so they can be used for sampling
    /// or sharding. A participant that keeps the trace id must keep it.
    pub const FLAG_RANDOM: u8 = 0x02;

    /// Reads a `traceparent` value, or `None` when the specification says
    /// to ignore it (and start a new trace).
    ///
    /// Accepted, per W3C Trace Context level 2:
    ///
    /// - version `00`: exactly 55 characters, `00-` then 32 hex digits of
    ///   trace id, `-`, 16 of parent id, `-`, 2 of flags;
    /// - a future version (any but `00` and the forbidden `ff`): the same
    ///   55-character prefix, followed by the end of the value or a `-`
    ///   (whatever comes after is that version's business and is ignored).
    ///   Of its flags only the bits version `00` defines
    ///   ([`FLAG_SAMPLED`](Self::FLAG_SAMPLED),
    ///   [`FLAG_RANDOM`](Self::FLAG_RANDOM)) are kept, as they may not mean
    ///   the same there, and [`write`](Self::write) downgrades to `00`.
    ///
    /// Rejected: uppercase or other non-hex digits, wrong lengths or
    /// separators, an all-zero trace id or parent id. Surrounding
    /// whitespace is not trimmed: that is the carrier's concern
    /// ([`extract`] trims spaces and tabs).
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let (head, rest) = value.as_bytes().split_first_chunk::<TRACEPARENT_LEN>()?;
        let separators = [head.get(2), head.get(35), head.get(52)];
        if separators.iter().any(|separator| *separator != Some(&b'-')) {
            return None;
        }
        let [version] = decode_hex::<1>(head.get(0..2)?)?;
        let trace_id = decode_hex::<16>(head.get(3..35)?)?;
        let parent_id = decode_hex::<8>(head.get(36..52)?)?;
        let [flags] = decode_hex::<1>(head.get(53..55)?)?;
        let flags = match version {
            0x00 if rest.is_empty() => flags,
            0x00 | 0xff => return None,
            _ if rest.first().map_or(true, |next| *next == b'-') => {
                flags & (Self::FLAG_SAMPLED | Self::FLAG_RANDOM)
            }
            _ => return None,
        };
        let parent = Self {
            trace_id,
            parent_id,
            flags,
        };
        parent.is_valid().then_some(parent)
    }

    /// Appends the value as version `00` (55 bytes), the only version
    /// this module writes. An invalid value (an all-zero id) is written as
    /// it is; check [`is_valid`](Self::is_valid) first where that matters.
    pub fn write(&self, out: &mut String) {
        out.reserve(TRACEPARENT_LEN);
        out.extend(self.ascii().map(char::from));
    }

    /// Whether the caller may have recorded the trace (the `sampled` flag).
    #[must_use]
    pub fn sampled(&self) -> bool {
        self.flags & Self::FLAG_SAMPLED != 0
    }

    /// Whether this is a context at all: neither id is all zeros, which the
    /// specification reserves for "no context" and tells receivers to
    /// ignore.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.parent_id != [0; 8]
    }

    /// The version `00` form, byte by byte.
    fn ascii(&self) -> impl Iterator<Item = u8> + '_ {
        b"00-"
            .iter()
            .copied()
            .chain(encode_hex(&self.trace_id))
            .chain(std::iter::once(b'-'))
            .chain(encode_hex(&self.parent_id))
            .chain(std::iter::once(b'-'))
            .chain(encode_hex(std::slice::from_ref(&self.flags)))
    }
}

/// The version `00` form, as [`TraceParent::write`] appends it.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for byte in self.ascii() {
            f.write_char(char::from(byte))?;
        }
        Ok(())
    }
}

/// The value of a lowercase hex digit; uppercase is not a hex digit in
/// Trace Context.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// The lowercase hex digit of the low four bits of `nibble`.
fn hex_digit(nibble: u8) -> u8 {
    let nibble = nibble & 0x0f;
    if nibble < 10 {
        b'0' + nibble
    } else {
        b'a' + (nibble - 10)
    }
}

/// Decodes exactly `2 * N` lowercase hex digits.
fn decode_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (hex_value(*high)? << 4) | hex_value(*low)?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bytes
        .iter()
        .flat_map(|byte| [hex_digit(byte >> 4), hex_digit(*byte)])
}

/// Limits a `tracestate` to what is propagated: spaces and tabs around it
/// are dropped, and a value longer than [`TRACESTATE_MAX_LEN`] bytes loses
/// whole entries from its end (the oldest vendors' positions) until it
/// fits. `None` when nothing is left: an empty value, or a first entry
/// that alone is too long.
///
/// The specification also suggests dropping entries longer than 128
/// characters first; that would need a copy, so this keeps to the
/// borrowed prefix. Entries are not validated.
#[must_use]
pub fn truncate_tracestate(value: &str) -> Option<&str> {
    let value = trim_ows(value);
    let kept = if value.len() <= TRACESTATE_MAX_LEN {
        value
    } else {
        // The entry separator nearest the limit: what precedes it fits.
        let cut = value
            .as_bytes()
            .iter()
            .take(TRACESTATE_MAX_LEN + 1)
            .rposition(|byte| *byte == b',')?;
        value.get(..cut)?
    };
    let kept = kept.trim_end_matches([' ', '\t', ',']);
    (!kept.is_empty()).then_some(kept)
}

/// Drops the optional whitespace (spaces and tabs) HTTP allows around a
/// field value, which a publisher copying HTTP headers may have kept.
fn trim_ows(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// A header table seen as text, in the shape of OpenTelemetry's
/// `Extractor`, so a propagator can read from a delivery's headers without
/// copying them into a map.
///
/// Names are compared exactly (AMQP tables are case-sensitive); the
/// specification's lowercase names are the ones everyone writes.
#[derive(Clone, Copy, Debug)]
pub struct Headers<'a>(pub &'a FieldTable);

impl<'a> Headers<'a> {
    /// The text of the first entry named `key`, if it is a long string
    /// (`S`) or a byte array (`x`, as some clients write strings back) and
    /// valid UTF-8. Any other type, or bytes that are not UTF-8, read as
    /// absent: a malformed header must start a new trace, not fail the
    /// delivery.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&'a str> {
        let table: &'a FieldTable = self.0;
        match table.get(key)? {
            FieldValue::LongString(value) => value.to_str().ok(),
            FieldValue::ByteArray(value) => std::str::from_utf8(value).ok(),
            _ => None,
        }
    }

    /// The names of the entries, in wire order, skipping names that are
    /// not UTF-8 (no text propagator could ask for them).
    pub fn keys(&self) -> impl Iterator<Item = &'a str> {
        let table: &'a FieldTable = self.0;
        table.into_iter().filter_map(|(name, _)| name.to_str().ok())
    }
}

/// A header table written as text, in the shape of OpenTelemetry's
/// `Injector`. Values are always written as long strings (`S`): that is
/// what the Java client reads as a `LongString`, the .NET client as
/// `byte[]`, pika as `str` and amqplib as a string.
#[derive(Debug)]
pub struct HeadersMut<'a>(pub &'a mut FieldTable);

impl HeadersMut<'_> {
    /// Sets `key` to `value`, replacing the first entry of that name
    /// whatever its type. A name longer than 255 bytes cannot be encoded:
    /// publishing the message then fails, nothing is truncated.
    pub fn set(&mut self, key: &str, value: &str) {
        self.0
            .insert(key, FieldValue::LongString(LongString::from(value)));
    }

    /// Sets `key` only when the table has no entry of that name (of any
    /// type, readable or not), and tells whether it did: the way to add a
    /// context without overriding one the application chose.
    pub fn set_if_absent(&mut self, key: &str, value: &str) -> bool {
        if self.0.get(key).is_some() {
            return false;
        }
        self.set(key, value);
        true
    }

    /// The same table, read as text.
    #[must_use]
    pub fn as_headers(&self) -> Headers<'_> {
        Headers(self.0)
    }
}

/// The trace context a message was published in, and its `tracestate`
/// (limited by [`truncate_tracestate`]), for a consumer's span to take as
/// its parent or link.
///
/// `None` when there are no headers, no `traceparent`, or one that is not
/// valid text or not a valid [`TraceParent`] (spaces and tabs around it
/// are ignored). `tracestate` is only read when `traceparent` is valid, as
/// the specification requires.
#[must_use]
pub fn extract(props: &BasicProperties) -> Option<(TraceParent, Option<&str>)> {
    let headers = Headers(props.headers.as_ref()?);
    let parent = TraceParent::parse(trim_ows(headers.get(TRACEPARENT)?))?;
    let tracestate = headers.get(TRACESTATE).and_then(truncate_tracestate);
    Some((parent, tracestate))
}

/// Writes `parent` as the message's `traceparent`, with `tracestate`,
/// unless the message already has a `traceparent` entry (of any type):
/// the application's own context wins, and nothing is changed. Returns
/// whether it wrote. The headers table is created when absent.
///
/// An invalid `parent` (an all-zero id) is not written either. When a
/// context is written without a `tracestate` (or with one
/// [`truncate_tracestate`] leaves nothing of), any `tracestate` already in
/// the headers is removed, since it would be read as belonging to the new
/// `traceparent`. `baggage` is left alone.
pub fn inject(props: &mut BasicProperties, parent: &TraceParent, tracestate: Option<&str>) -> bool {
    if !parent.is_valid() {
        return false;
    }
    let table = props.headers.get_or_insert_with(FieldTable::new);
    if table.get(TRACEPARENT).is_some() {
        return false;
    }
    let mut value = String::with_capacity(TRACEPARENT_LEN);
    parent.write(&mut value);
    let mut headers = HeadersMut(table);
    headers.set(TRACEPARENT, &value);
    match tracestate.and_then(truncate_tracestate) {
        Some(tracestate) => headers.set(TRACESTATE, tracestate),
        None => {
            headers.0.remove(TRACESTATE);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;

    use super::*;
    use crate::codec::test_support::arbitrary_value;
    use crate::codec::{
        decode_field_table, encode_field_table, FieldArray, DEFAULT_MAX_TABLE_DEPTH,
    };

    /// The specification's own example.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn example() -> TraceParent {
        TraceParent {
            trace_id: [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ],
            parent_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
            flags: 0x01,
        }
    }

    fn headers_with(key: &str, value: FieldValue) -> BasicProperties {
        let mut table = FieldTable::new();
        table.insert(key, value);
        BasicProperties::default().headers(table)
    }

    fn long_string(value: &str) -> FieldValue {
        FieldValue::LongString(LongString::from(value))
    }

    fn byte_array(value: &[u8]) -> FieldValue {
        FieldValue::ByteArray(Bytes::copy_from_slice(value))
    }

    // --- the codec -------------------------------------------------------

    #[test]
    fn the_specification_examples_parse() {
        assert_eq!(TraceParent::parse(EXAMPLE), Some(example()));
        assert!(example().sampled());

        let congo = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("valid");
        assert_eq!(congo.trace_id[0], 0x0a);
        assert_eq!(
            congo.parent_id,
            [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
        );

        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .expect("valid");
        assert!(!unsampled.sampled());
        assert_eq!(unsampled.flags, 0);

        // Flags are a bit field: 03 is sampled and random.
        let both = TraceParent::parse("00-12345678901234567890123456789012-1234567890123456-03")
            .expect("valid");
        assert!(both.sampled());
        assert_eq!(
            both.flags & TraceParent::FLAG_RANDOM,
            TraceParent::FLAG_RANDOM
        );
        let random = TraceParent::parse("00-12345678901234567890123456789012-1234567890123456-02")
            .expect("valid");
        assert!(!random.sampled());

        // Unknown flags of version 00 are kept as sent.
        let all = TraceParent::parse("00-12345678901234567890123456789012-1234567890123456-ff")
            .expect("valid");
        assert_eq!(all.flags, 0xff);
    }

    #[test]
    fn write_and_display_give_the_version_00_form() {
        let mut out = String::from("prefix:");
        example().write(&mut out);
        assert_eq!(out, format!("prefix:{EXAMPLE}"));
        assert_eq!(example().to_string(), EXAMPLE);
        assert_eq!(example().to_string().len(), 55);
        let flags = TraceParent {
            flags: 0xa5,
            ..example()
        };
        assert!(flags.to_string().ends_with("-a5"));
    }

    #[test]
    fn future_versions_are_read_by_their_prefix() {
        let base = "12345678901234567890123456789012-1234567890123456";
        for value in [
            format!("cc-{base}-01"),
            format!("cc-{base}-01-what-the-future-will-be-like"),
            format!("01-{base}-01-extra"),
            format!("fe-{base}-01-"),
        ] {
            let parent = TraceParent::parse(&value).unwrap_or_else(|| panic!("{value} is valid"));
            assert!(parent.sampled(), "{value}");
            // Read as a future version, written as 00.
            assert_eq!(parent.to_string(), format!("00-{base}-01"), "{value}");
        }
        // Of a future version's flags, only the bits 00 defines survive.
        let masked = TraceParent::parse(&format!("01-{base}-ff-extra")).expect("valid");
        assert_eq!(
            masked.flags,
            TraceParent::FLAG_SAMPLED | TraceParent::FLAG_RANDOM
        );
        // What follows the prefix must start with a dash.
        for value in [
            format!("cc-{base}-01.what-the-future-will-be-like"),
            format!("cc-{base}-01x"),
            format!("cc-{base}-011"),
        ] {
            assert_eq!(TraceParent::parse(&value), None, "{value}");
        }
        // The prefix itself is checked as strictly as version 00.
        assert_eq!(
            TraceParent::parse("cc-00000000000000000000000000000000-1234567890123456-01-x"),
            None
        );
        assert_eq!(
            TraceParent::parse("cc-12345678901234567890123456789012-1234567890123456-0A-x"),
            None
        );
    }

    #[test]
    fn invalid_values_are_rejected() {
        let rejected = [
            // Empty, short, long.
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
            // Uppercase anywhere.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "AA-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // The forbidden version, with or without a future's tail.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // Versions that are not two hex digits.
            ".0-12345678901234567890123456789012-1234567890123456-01",
            "0.-12345678901234567890123456789012-1234567890123456-01",
            "0-12345678901234567890123456789012-1234567890123456-01",
            "000-12345678901234567890123456789012-1234567890123456-01",
            "0000-12345678901234567890123456789012-1234567890123456-01",
            // Ids of the wrong length or with a stray character.
            "00-.2345678901234567890123456789012-1234567890123456-01",
            "00-1234567890123456789012345678901.-1234567890123456-01",
            "00-123456789012345678901234567890123-1234567890123456-01",
            "00-1234567890123456789012345678901-1234567890123456-01",
            "00-12345678901234567890123456789012-.234567890123456-01",
            "00-12345678901234567890123456789012-123456789012345.-01",
            "00-12345678901234567890123456789012-12345678901234567-01",
            "00-12345678901234567890123456789012-123456789012345-01",
            "00-12345678901234567890123456789012-1234567890123456-.0",
            "00-12345678901234567890123456789012-1234567890123456-0.",
            "00-12345678901234567890123456789012-1234567890123456-1",
            // Bad separators.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 01",
            "004bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01--",
            // A sign is not a digit (a lenient integer parser would take it).
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Whitespace is the carrier's to trim, not the codec's.
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t",
            // Multi-byte characters where digits belong.
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in rejected {
            assert_eq!(TraceParent::parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn validity_is_about_the_ids() {
        assert!(example().is_valid());
        assert!(!TraceParent {
            trace_id: [0; 16],
            ..example()
        }
        .is_valid());
        assert!(!TraceParent {
            parent_id: [0; 8],
            ..example()
        }
        .is_valid());
        assert!(TraceParent {
            flags: 0,
            ..example()
        }
        .is_valid());
    }

    fn valid_trace_parent() -> impl Strategy<Value = TraceParent> {
        (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
            .prop_map(|(trace_id, parent_id, flags)| TraceParent {
                trace_id,
                parent_id,
                flags,
            })
            .prop_filter("a valid context", TraceParent::is_valid)
    }

    proptest! {
        #[test]
        fn parse_reads_what_write_wrote(parent in valid_trace_parent()) {
            let mut out = String::new();
            parent.write(&mut out);
            prop_assert_eq!(out.len(), 55);
            prop_assert_eq!(&out, &parent.to_string());
            prop_assert_eq!(TraceParent::parse(&out), Some(parent));
        }

        /// A version 00 value has one spelling, so whatever parses writes
        /// back to itself; the alphabet is narrowed to reach the parser's
        /// later checks.
        #[test]
        fn a_parsed_version_00_value_writes_back_unchanged(
            value in "(00|01|ff|0A|cc)-[0-9a-fA-F]{31,33}-[0-9a-f.]{15,17}-[0-9a-fA-F]{1,3}(-[a-z]*)?"
        ) {
            if let Some(parent) = TraceParent::parse(&value) {
                prop_assert!(parent.is_valid());
                if value.starts_with("00-") {
                    prop_assert_eq!(parent.to_string(), value);
                } else {
                    let written = parent.to_string();
                    prop_assert_eq!(written.get(3..52), value.get(3..52));
                }
            }
        }

        #[test]
        fn parse_never_panics(value in any::<String>()) {
            if let Some(parent) = TraceParent::parse(&value) {
                prop_assert_eq!(TraceParent::parse(&parent.to_string()), Some(parent));
            }
        }
    }

    // --- tracestate ------------------------------------------------------

    #[test]
    fn tracestate_is_passed_through_and_bounded() {
        assert_eq!(
            truncate_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(truncate_tracestate(" \trojo=1 , "), Some("rojo=1"));
        assert_eq!(truncate_tracestate(""), None);
        assert_eq!(truncate_tracestate(" , \t,"), None);

        // 60 entries of 10 bytes: the first 46 (505 bytes with their commas) fit.
        let long: Vec<String> = (0..60).map(|n| format!("vendor{n:02}=x")).collect();
        let long = long.join(",");
        let kept = truncate_tracestate(&long).expect("some entries fit");
        assert!(kept.len() <= TRACESTATE_MAX_LEN);
        assert!(long.starts_with(kept));
        assert!(kept.ends_with("vendor45=x"), "{kept}");
        assert_eq!(long.as_bytes().get(kept.len()), Some(&b','));

        // Exactly at the limit, and a separator right after it.
        let exact = format!("a={}", "v".repeat(TRACESTATE_MAX_LEN - 2));
        assert_eq!(truncate_tracestate(&exact), Some(exact.as_str()));
        let after = format!("{exact},b=1");
        assert_eq!(truncate_tracestate(&after), Some(exact.as_str()));

        // A first entry too long to keep leaves nothing.
        let huge = format!("a={},b=1", "v".repeat(TRACESTATE_MAX_LEN));
        assert_eq!(truncate_tracestate(&huge), None);
    }

    // --- the carrier -----------------------------------------------------

    #[test]
    fn inject_then_extract_round_trips() {
        let mut props = BasicProperties::default();
        assert!(inject(
            &mut props,
            &example(),
            Some("rojo=00f067aa0ba902b7")
        ));
        let table = props.headers.as_ref().expect("headers created");
        assert_eq!(table.get(TRACEPARENT), Some(&long_string(EXAMPLE)));
        assert_eq!(
            table.get(TRACESTATE),
            Some(&long_string("rojo=00f067aa0ba902b7"))
        );
        assert_eq!(
            extract(&props),
            Some((example(), Some("rojo=00f067aa0ba902b7")))
        );

        // Through the wire: the values go out as long strings and come back.
        let mut wire = BytesMut::new();
        encode_field_table(table, &mut wire).expect("encodable");
        let decoded = decode_field_table(&wire, DEFAULT_MAX_TABLE_DEPTH).expect("decodable");
        let after_name = 4 + 1 + TRACEPARENT.len();
        assert_eq!(wire.get(after_name), Some(&b'S'));
        let props = BasicProperties::default().headers(decoded);
        assert_eq!(
            extract(&props),
            Some((example(), Some("rojo=00f067aa0ba902b7")))
        );
    }

    #[test]
    fn inject_keeps_the_other_headers() {
        let mut props = headers_with("x-tenant", long_string("acme"));
        props
            .headers
            .as_mut()
            .expect("headers")
            .insert(BAGGAGE, "user=42");
        assert!(inject(&mut props, &example(), None));
        let table = props.headers.as_ref().expect("headers");
        assert_eq!(table.get("x-tenant"), Some(&long_string("acme")));
        assert_eq!(table.get(BAGGAGE), Some(&long_string("user=42")));
        assert_eq!(extract(&props), Some((example(), None)));
    }

    #[test]
    fn inject_never_overwrites_the_applications_traceparent() {
        let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut props = headers_with(TRACEPARENT, long_string(own));
        props
            .headers
            .as_mut()
            .expect("headers")
            .insert(TRACESTATE, "congo=own");
        assert!(!inject(&mut props, &example(), Some("rojo=ours")));
        let table = props.headers.as_ref().expect("headers");
        assert_eq!(table.get(TRACEPARENT), Some(&long_string(own)));
        assert_eq!(table.get(TRACESTATE), Some(&long_string("congo=own")));
        assert_eq!(table.len(), 2);

        // Whatever its type, and even when it cannot be read.
        for value in [
            byte_array(own.as_bytes()),
            byte_array(b"\xff\xfe"),
            long_string("garbage"),
            FieldValue::LongInt(1),
            FieldValue::Void,
        ] {
            let mut props = headers_with(TRACEPARENT, value.clone());
            assert!(!inject(&mut props, &example(), None));
            assert_eq!(
                props.headers.as_ref().and_then(|t| t.get(TRACEPARENT)),
                Some(&value)
            );
        }
    }

    #[test]
    fn inject_refuses_an_invalid_context_and_changes_nothing() {
        let mut props = BasicProperties::default();
        let zero = TraceParent {
            trace_id: [0; 16],
            ..example()
        };
        assert!(!inject(&mut props, &zero, Some("rojo=1")));
        assert_eq!(props, BasicProperties::default());
    }

    #[test]
    fn inject_replaces_a_stale_tracestate() {
        // A tracestate without a traceparent would be read as ours.
        let mut props = headers_with(TRACESTATE, long_string("stale=1"));
        assert!(inject(&mut props, &example(), None));
        assert_eq!(props.headers.as_ref().and_then(|t| t.get(TRACESTATE)), None);

        let mut props = headers_with(TRACESTATE, FieldValue::LongInt(3));
        assert!(inject(&mut props, &example(), Some("rojo=1")));
        assert_eq!(extract(&props), Some((example(), Some("rojo=1"))));

        // An empty tracestate is not written.
        let mut props = BasicProperties::default();
        assert!(inject(&mut props, &example(), Some(" ")));
        assert_eq!(props.headers.as_ref().map(FieldTable::len), Some(1));
    }

    #[test]
    fn long_strings_and_byte_arrays_are_both_read() {
        for value in [long_string(EXAMPLE), byte_array(EXAMPLE.as_bytes())] {
            let mut props = headers_with(TRACEPARENT, value);
            props
                .headers
                .as_mut()
                .expect("headers")
                .insert(TRACESTATE, byte_array(b"rojo=1"));
            assert_eq!(extract(&props), Some((example(), Some("rojo=1"))));
        }
    }

    #[test]
    fn extract_trims_whitespace_around_the_value() {
        for value in [
            format!(" {EXAMPLE}"),
            format!("\t{EXAMPLE}"),
            format!("{EXAMPLE} "),
            format!("\t {EXAMPLE} \t"),
        ] {
            let props = headers_with(TRACEPARENT, long_string(&value));
            assert_eq!(
                extract(&props).map(|(parent, _)| parent),
                Some(example()),
                "{value:?}"
            );
        }
    }

    #[test]
    fn odd_headers_yield_nothing() {
        let mut nested = FieldTable::new();
        nested.insert(TRACEPARENT, EXAMPLE);
        let array: FieldArray = [FieldValue::from(EXAMPLE)].into_iter().collect();
        for value in [
            FieldValue::Table(nested),
            FieldValue::Array(array),
            byte_array(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\xff"),
            FieldValue::LongString(LongString::from(&b"\xc3\x28"[..])),
            FieldValue::LongLongInt(7),
            FieldValue::Boolean(true),
            FieldValue::Void,
            long_string(""),
            long_string(&EXAMPLE.to_uppercase()),
        ] {
            let props = headers_with(TRACEPARENT, value.clone());
            assert_eq!(extract(&props), None, "{value:?}");
        }
        // No headers, or none of ours.
        assert_eq!(extract(&BasicProperties::default()), None);
        assert_eq!(
            extract(&headers_with("Traceparent", long_string(EXAMPLE))),
            None
        );
        // A tracestate without a valid traceparent is not read.
        assert_eq!(
            extract(&headers_with(TRACESTATE, long_string("rojo=1"))),
            None
        );
        // A tracestate of the wrong type is dropped, the traceparent kept.
        let mut props = headers_with(TRACEPARENT, long_string(EXAMPLE));
        props
            .headers
            .as_mut()
            .expect("headers")
            .insert(TRACESTATE, FieldValue::Double(1.0));
        assert_eq!(extract(&props), Some((example(), None)));
    }

    #[test]
    fn headers_read_text_and_name_keys() {
        let mut table = FieldTable::new();
        table.insert("s", "text");
        table.insert("x", byte_array(b"bytes"));
        table.insert("bad", byte_array(b"\xff"));
        table.insert("n", 1_i32);
        table.insert(&b"\xffname"[..], "hidden");
        let headers = Headers(&table);
        assert_eq!(headers.get("s"), Some("text"));
        assert_eq!(headers.get("x"), Some("bytes"));
        assert_eq!(headers.get("bad"), None);
        assert_eq!(headers.get("n"), None);
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["s", "x", "bad", "n"]);
    }

    #[test]
    fn headers_mut_writes_long_strings() {
        let mut table = FieldTable::new();
        table.insert("k", 5_u8);
        let mut headers = HeadersMut(&mut table);
        headers.set("k", "v");
        headers.set("other", "w");
        assert_eq!(headers.as_headers().get("k"), Some("v"));
        assert_eq!(table.get("k"), Some(&long_string("v")));
        assert_eq!(table.get("other"), Some(&long_string("w")));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn set_if_absent_keeps_a_users_traceparent() {
        let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut table = FieldTable::new();
        table.insert(TRACEPARENT, own);
        let mut headers = HeadersMut(&mut table);
        assert!(!headers.set_if_absent(TRACEPARENT, EXAMPLE));
        assert_eq!(headers.as_headers().get(TRACEPARENT), Some(own));
        assert!(headers.set_if_absent(TRACESTATE, "rojo=1"));
        assert!(!headers.set_if_absent(TRACESTATE, "rojo=2"));
        assert_eq!(headers.as_headers().get(TRACESTATE), Some("rojo=1"));
    }

    proptest! {
        /// Any table, with anything under our keys: no panic, and a
        /// context only from a readable, valid `traceparent`.
        #[test]
        fn arbitrary_tables_never_panic(
            mut table in arbitrary_value::<FieldTable>(),
            traceparent in proptest::option::of(arbitrary_value::<FieldValue>()),
            tracestate in proptest::option::of(arbitrary_value::<FieldValue>()),
        ) {
            if let Some(value) = traceparent {
                table.insert(TRACEPARENT, value);
            }
            if let Some(value) = tracestate {
                table.insert(TRACESTATE, value);
            }
            let headers = Headers(&table);
            let _ = headers.keys().count();
            let text = headers.get(TRACEPARENT);
            match table.get(TRACEPARENT) {
                Some(FieldValue::LongString(_) | FieldValue::ByteArray(_)) => {}
                _ => prop_assert_eq!(text, None),
            }
            let mut props = BasicProperties::default().headers(table.clone());
            let extracted = extract(&props);
            if let Some((parent, state)) = extracted {
                prop_assert_eq!(text.map(trim_ows).and_then(TraceParent::parse), Some(parent));
                prop_assert!(state.map_or(true, |state| state.len() <= TRACESTATE_MAX_LEN));
            }
            let had_traceparent = table.get(TRACEPARENT).is_some();
            let injected = inject(&mut props, &example(), Some("rojo=1"));
            prop_assert_eq!(injected, !had_traceparent);
            if injected {
                prop_assert_eq!(extract(&props), Some((example(), Some("rojo=1"))));
            } else {
                prop_assert_eq!(props.headers.as_ref(), Some(&table));
            }
        }
    }
}
