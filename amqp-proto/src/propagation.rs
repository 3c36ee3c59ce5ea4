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
