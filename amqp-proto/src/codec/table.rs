//! Field tables and arrays with every type tag RabbitMQ speaks.
//!
//! AMQP 0-9-1's own table grammar (spec 4.2.5.5) and RabbitMQ's differ; peers
//! follow RabbitMQ's, whose tags are listed on [`FieldValue`]. Tables keep
//! their entries in wire order, duplicates included, so re-encoding a decoded
//! table reproduces its bytes.

use bytes::Bytes;

use super::reader::Reader;
use super::strings::{LongString, ShortString};
use super::writer::Writer;
use crate::error::{DecodeError, EncodeError};

/// One value in a field table or array, tagged as RabbitMQ tags it.
#[derive(Debug, Clone)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum FieldValue {
    /// `t`: a boolean octet.
    Boolean(bool),
    /// `b`: a signed 8-bit integer.
    ShortShortInt(i8),
    /// `B`: an unsigned 8-bit integer.
    ShortShortUInt(u8),
    /// `s`: a signed 16-bit integer.
    ShortInt(i16),
    /// `u`: an unsigned 16-bit integer.
    ShortUInt(u16),
    /// `I`: a signed 32-bit integer.
    LongInt(i32),
    /// `i`: an unsigned 32-bit integer.
    LongUInt(u32),
    /// `l`: a signed 64-bit integer.
    LongLongInt(i64),
    /// `f`: an IEEE-754 single.
    Float(f32),
    /// `d`: an IEEE-754 double.
    Double(f64),
    /// `D`: a decimal, `value` × 10^-`scale`.
    Decimal {
        /// Number of decimal digits after the point.
        scale: u8,
        /// The unscaled value.
        value: u32,
    },
    /// `S`: a long string.
    LongString(LongString),
    /// `A`: an array of values.
    Array(FieldArray),
    /// `T`: a timestamp, seconds since the Unix epoch.
    Timestamp(u64),
    /// `F`: a nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
    /// `x`: a byte array (RabbitMQ extension).
    ByteArray(
        #[cfg_attr(any(test, feature = "arbitrary"), arbitrary(with = arbitrary_bytes))] Bytes,
    ),
}

#[cfg(any(test, feature = "arbitrary"))]
fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let bytes: &[u8] = u.arbitrary()?;
    Ok(Bytes::copy_from_slice(bytes))
}

/// Values compare bit for bit: a float NaN equals itself, so that a decoded
/// table always equals the table it was encoded from.
impl PartialEq for FieldValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Float(a), Self::Float(b)) => a.to_bits() == b.to_bits(),
            (Self::Double(a), Self::Double(b)) => a.to_bits() == b.to_bits(),
            (Self::Boolean(a), Self::Boolean(b)) => a == b,
            (Self::ShortShortInt(a), Self::ShortShortInt(b)) => a == b,
            (Self::ShortShortUInt(a), Self::ShortShortUInt(b)) => a == b,
            (Self::ShortInt(a), Self::ShortInt(b)) => a == b,
            (Self::ShortUInt(a), Self::ShortUInt(b)) => a == b,
            (Self::LongInt(a), Self::LongInt(b)) => a == b,
            (Self::LongUInt(a), Self::LongUInt(b)) => a == b,
            (Self::LongLongInt(a), Self::LongLongInt(b)) => a == b,
            (
                Self::Decimal { scale, value },
                Self::Decimal {
                    scale: other_scale,
                    value: other_value,
                },
            ) => scale == other_scale && value == other_value,
            (Self::LongString(a), Self::LongString(b)) => a == b,
            (Self::Array(a), Self::Array(b)) => a == b,
            (Self::Timestamp(a), Self::Timestamp(b)) => a == b,
            (Self::Table(a), Self::Table(b)) => a == b,
            (Self::Void, Self::Void) => true,
            (Self::ByteArray(a), Self::ByteArray(b)) => a == b,
            _ => false,
        }
    }
}

impl FieldValue {
    /// The type tag this value is written with.
    #[must_use]
    pub fn tag(&self) -> u8 {
        match self {
            Self::Boolean(_) => b't',
            Self::ShortShortInt(_) => b'b',
            Self::ShortShortUInt(_) => b'B',
            Self::ShortInt(_) => b's',
            Self::ShortUInt(_) => b'u',
            Self::LongInt(_) => b'I',
            Self::LongUInt(_) => b'i',
            Self::LongLongInt(_) => b'l',
            Self::Float(_) => b'f',
            Self::Double(_) => b'd',
            Self::Decimal { .. } => b'D',
            Self::LongString(_) => b'S',
            Self::Array(_) => b'A',
            Self::Timestamp(_) => b'T',
            Self::Table(_) => b'F',
            Self::Void => b'V',
            Self::ByteArray(_) => b'x',
        }
    }

    /// The value of any of the integer types (`b`, `B`, `s`, `u`, `I`,
    /// `i`, `l`) as an `i64`, which holds them all; `None` for every other
    /// type. Peers differ in which width they send a number with (RabbitMQ
    /// writes its own `x-` headers as `l`, other clients write `I`), so
    /// readers of a number should accept any of them.
    ///
    /// ```
    /// use amqp_proto::codec::FieldValue;
    ///
    /// assert_eq!(FieldValue::LongLongInt(-3).as_i64(), Some(-3));
    /// assert_eq!(FieldValue::LongUInt(u32::MAX).as_i64(), Some(i64::from(u32::MAX)));
    /// assert_eq!(FieldValue::Timestamp(7).as_i64(), None, "a timestamp is not a number");
    /// ```
    #[must_use]
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Self::ShortShortInt(value) => value.into(),
            Self::ShortShortUInt(value) => value.into(),
            Self::ShortInt(value) => value.into(),
            Self::ShortUInt(value) => value.into(),
            Self::LongInt(value) => value.into(),
            Self::LongUInt(value) => value.into(),
            Self::LongLongInt(value) => value,
            _ => return None,
        })
    }

    /// The bytes of a long string (`S`), or `None` for every other type.
    #[must_use]
    pub fn as_long_string(&self) -> Option<&LongString> {
        match self {
            Self::LongString(value) => Some(value),
            _ => None,
        }
    }

    /// How deeply tables and arrays nest inside this value: 0 for a scalar.
    #[must_use]
    pub fn depth(&self) -> usize {
        match self {
            Self::Table(table) => table.depth(),
            Self::Array(array) => array.depth(),
            _ => 0,
        }
    }

    /// Decodes one tagged value. `depth` counts the tables and arrays open
    /// around it.
    fn decode(reader: &mut Reader<'_>, depth: usize) -> Result<Self, DecodeError> {
        let tag = reader.octet()?;
        Ok(match tag {
            b't' => Self::Boolean(reader.octet()? != 0),
            b'b' => Self::ShortShortInt(i8::from_be_bytes([reader.octet()?])),
            b'B' => Self::ShortShortUInt(reader.octet()?),
            b's' => Self::ShortInt(i16::from_be_bytes(reader.short()?.to_be_bytes())),
            b'u' => Self::ShortUInt(reader.short()?),
            b'I' => Self::LongInt(i32::from_be_bytes(reader.long()?.to_be_bytes())),
            b'i' => Self::LongUInt(reader.long()?),
            b'l' => Self::LongLongInt(i64::from_be_bytes(reader.longlong()?.to_be_bytes())),
            b'f' => Self::Float(f32::from_bits(reader.long()?)),
            b'd' => Self::Double(f64::from_bits(reader.longlong()?)),
            b'D' => Self::Decimal {
                scale: reader.octet()?,
                value: reader.long()?,
            },
            b'S' => Self::LongString(reader.longstr()?),
            b'A' => Self::Array(FieldArray::decode(reader, depth)?),
            b'T' => Self::Timestamp(reader.timestamp()?),
            b'F' => Self::Table(FieldTable::decode(reader, depth)?),
            b'V' => Self::Void,
            b'x' => {
                let len = reader.long()?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                Self::ByteArray(reader.raw_bytes(len)?)
            }
            tag => return Err(DecodeError::UnknownFieldType { tag }),
        })
    }

    fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.octet(self.tag());
        match self {
            Self::Boolean(value) => writer.octet(u8::from(*value)),
            Self::ShortShortInt(value) => writer.octet(value.to_be_bytes()[0]),
            Self::ShortShortUInt(value) => writer.octet(*value),
            Self::ShortInt(value) => writer.short(u16::from_be_bytes(value.to_be_bytes())),
            Self::ShortUInt(value) => writer.short(*value),
            Self::LongInt(value) => writer.long(u32::from_be_bytes(value.to_be_bytes())),
            Self::LongUInt(value) => writer.long(*value),
            Self::LongLongInt(value) => writer.longlong(u64::from_be_bytes(value.to_be_bytes())),
            Self::Float(value) => writer.long(value.to_bits()),
            Self::Double(value) => writer.longlong(value.to_bits()),
            Self::Decimal { scale, value } => {
                writer.octet(*scale);
                writer.long(*value);
            }
            Self::LongString(value) => writer.longstr(value)?,
            Self::Array(array) => array.encode(writer)?,
            Self::Timestamp(value) => writer.timestamp(*value),
            Self::Table(table) => table.encode(writer)?,
            Self::Void => {}
            Self::ByteArray(bytes) => writer.long_bytes(bytes)?,
        }
        Ok(())
    }
}

macro_rules! field_value_from {
    ($($type:ty => $variant:ident),* $(,)?) => {
        $(impl From<$type> for FieldValue {
            fn from(value: $type) -> Self {
                Self::$variant(value.into())
            }
        })*
    };
}

field_value_from! {
    bool => Boolean,
    i8 => ShortShortInt,
    u8 => ShortShortUInt,
    i16 => ShortInt,
    u16 => ShortUInt,
    i32 => LongInt,
    u32 => LongUInt,
    i64 => LongLongInt,
    f32 => Float,
    f64 => Double,
    LongString => LongString,
    &str => LongString,
    String => LongString,
    FieldArray => Array,
    FieldTable => Table,
}

fn check_depth(reader: &Reader<'_>, depth: usize) -> Result<(), DecodeError> {
    if depth > reader.max_depth() {
        Err(DecodeError::TableTooDeep {
            max: reader.max_depth(),
        })
    } else {
        Ok(())
    }
}

/// A field table: named values in wire order (`F`, and every `arguments`,
/// `headers` and peer-properties field).
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FieldTable(Vec<(ShortString, FieldValue)>);

impl FieldTable {
    /// An empty table.
    #[must_use]
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// The value of the first entry named `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(name, _)| name.as_bytes() == key.as_bytes())
            .map(|(_, value)| value)
    }

    /// Sets `key` to `value`, replacing the first entry of that name or
    /// appending a new one; returns the value replaced.
    pub fn insert(
        &mut self,
        key: impl Into<ShortString>,
        value: impl Into<FieldValue>,
    ) -> Option<FieldValue> {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(name, _)| *name == key) {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes every entry named `key`; returns the first value removed.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let mut removed = None;
        self.0.retain_mut(|(name, value)| {
            if name.as_bytes() != key.as_bytes() {
                return true;
            }
            if removed.is_none() {
                removed = Some(std::mem::replace(value, FieldValue::Void));
            }
            false
        });
        removed
    }

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShortString, &FieldValue)> {
        self.0.iter().map(|(name, value)| (name, value))
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the table has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How deeply tables and arrays nest in this table: 1 for a table of
    /// scalars (or an empty one).
    #[must_use]
    pub fn depth(&self) -> usize {
        1 + self
            .0
            .iter()
            .map(|(_, value)| value.depth())
            .max()
            .unwrap_or(0)
    }

    /// Decodes a table whose 32-bit length prefix comes next; `depth` counts
    /// the containers already open around it.
    pub(crate) fn decode(reader: &mut Reader<'_>, depth: usize) -> Result<Self, DecodeError> {
        check_depth(reader, depth + 1)?;
        let len = reader.long()?;
        let mut body = reader.sub_reader(usize::try_from(len).unwrap_or(usize::MAX))?;
        let mut entries = Vec::new();
        while !body.is_empty() {
            let name = body.shortstr()?;
            let value = FieldValue::decode(&mut body, depth + 1)?;
            entries.push((name, value));
        }
        Ok(Self(entries))
    }

    pub(crate) fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.nested(|writer| {
            for (name, value) in &self.0 {
                writer.shortstr(name)?;
                value.encode(writer)?;
            }
            Ok(())
        })
    }
}

impl<K: Into<ShortString>, V: Into<FieldValue>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut table = Self::new();
        for (key, value) in iter {
            table.insert(key, value);
        }
        table
    }
}

impl<'a> IntoIterator for &'a FieldTable {
    type Item = (&'a ShortString, &'a FieldValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (ShortString, FieldValue)>,
        fn(&'a (ShortString, FieldValue)) -> (&'a ShortString, &'a FieldValue),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(name, value)| (name, value))
    }
}

/// A field array (`A`): values without names.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct FieldArray(Vec<FieldValue>);

impl FieldArray {
    /// An empty array.
    #[must_use]
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a value.
    pub fn push(&mut self, value: impl Into<FieldValue>) {
        self.0.push(value.into());
    }

    /// The values in order.
    #[must_use]
    pub fn as_slice(&self) -> &[FieldValue] {
        &self.0
    }

    /// Number of values.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the array has no values.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How deeply tables and arrays nest in this array: 1 for an array of
    /// scalars (or an empty one).
    #[must_use]
    pub fn depth(&self) -> usize {
        1 + self.0.iter().map(FieldValue::depth).max().unwrap_or(0)
    }

    fn decode(reader: &mut Reader<'_>, depth: usize) -> Result<Self, DecodeError> {
        check_depth(reader, depth + 1)?;
        let len = reader.long()?;
        let mut body = reader.sub_reader(usize::try_from(len).unwrap_or(usize::MAX))?;
        let mut values = Vec::new();
        while !body.is_empty() {
            values.push(FieldValue::decode(&mut body, depth + 1)?);
        }
        Ok(Self(values))
    }

    fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.nested(|writer| {
            for value in &self.0 {
                value.encode(writer)?;
            }
            Ok(())
        })
    }
}

impl From<Vec<FieldValue>> for FieldArray {
    fn from(values: Vec<FieldValue>) -> Self {
        Self(values)
    }
}

impl<V: Into<FieldValue>> FromIterator<V> for FieldArray {
    fn from_iter<I: IntoIterator<Item = V>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use proptest::prelude::*;

    use super::*;
    use crate::codec::test_support::arbitrary_value;
    use crate::codec::{decode_field_table, encode_field_table, DEFAULT_MAX_TABLE_DEPTH};
    use crate::spec::constants::ReplyCode;

    fn encode(table: &FieldTable) -> BytesMut {
        let mut out = BytesMut::new();
        encode_field_table(table, &mut out).expect("encodable table");
        out
    }

    /// One value of every type tag RabbitMQ defines.
    fn every_tag() -> FieldTable {
        let mut nested = FieldTable::new();
        nested.insert("inner", FieldValue::Void);
        [
            ("t", FieldValue::Boolean(true)),
            ("b", FieldValue::ShortShortInt(-3)),
            ("B", FieldValue::ShortShortUInt(250)),
            ("s", FieldValue::ShortInt(-300)),
            ("u", FieldValue::ShortUInt(60_000)),
            ("I", FieldValue::LongInt(-70_000)),
            ("i", FieldValue::LongUInt(4_000_000_000)),
            ("l", FieldValue::LongLongInt(-5_000_000_000)),
            ("f", FieldValue::Float(1.5)),
            ("d", FieldValue::Double(-2.25)),
            (
                "D",
                FieldValue::Decimal {
                    scale: 2,
                    value: 12_345,
                },
            ),
            ("S", FieldValue::LongString("text".into())),
            (
                "A",
                FieldValue::Array(vec![FieldValue::LongUInt(1), FieldValue::Void].into()),
            ),
            ("T", FieldValue::Timestamp(1_700_000_000)),
            ("F", FieldValue::Table(nested)),
            ("V", FieldValue::Void),
            ("x", FieldValue::ByteArray(Bytes::from_static(&[0, 1, 2]))),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn every_tag_is_written_with_its_letter_and_round_trips() {
        let table = every_tag();
        let bytes = encode(&table);
        for (name, value) in &table {
            assert_eq!(name.as_bytes(), &[value.tag()], "tag of {value:?}");
        }
        assert_eq!(
            decode_field_table(&bytes, DEFAULT_MAX_TABLE_DEPTH),
            Ok(table)
        );
    }

    #[test]
    fn known_encoding_of_a_small_table() {
        let table: FieldTable = [
            ("a", FieldValue::Boolean(true)),
            ("n", FieldValue::LongInt(-1)),
        ]
        .into_iter()
        .collect();
        let expected: &[u8] = &[
            0, 0, 0, 11, // table length
            1, b'a', b't', 1, // a: true
            1, b'n', b'I', 0xff, 0xff, 0xff, 0xff, // n: -1
        ];
        assert_eq!(&encode(&table)[..], expected);
    }

    #[test]
    fn unknown_tag_is_a_syntax_error() {
        let bytes: &[u8] = &[0, 0, 0, 3, 1, b'k', b'Z'];
        let error = decode_field_table(bytes, DEFAULT_MAX_TABLE_DEPTH).unwrap_err();
        assert_eq!(error, DecodeError::UnknownFieldType { tag: b'Z' });
        assert_eq!(error.reply_code(), ReplyCode::SYNTAX_ERROR);
    }

    #[test]
    fn truncated_tables_are_frame_errors() {
        let full = encode(&every_tag());
        for cut in 0..full.len() {
            let error = decode_field_table(&full[..cut], DEFAULT_MAX_TABLE_DEPTH).unwrap_err();
            assert_eq!(
                error.reply_code(),
                ReplyCode::FRAME_ERROR,
                "cut at {cut}: {error}"
            );
        }
        // A length prefix promising more than the value holds.
        let mut lying = BytesMut::new();
        lying.put_u32(5);
        lying.put_slice(&[1, b'k', b'S', 0, 0, 0, 9]);
        let error = decode_field_table(&lying, DEFAULT_MAX_TABLE_DEPTH).unwrap_err();
        assert!(matches!(error, DecodeError::Truncated { .. }), "{error}");
    }

    #[test]
    fn huge_announced_lengths_do_not_allocate() {
        // A string claiming 4 GiB inside a table claiming 4 GiB: the decoder
        // must notice the bytes are not there instead of reserving for them.
        let bytes: &[u8] = &[
            0xff, 0xff, 0xff, 0xff, 1, b'k', b'S', 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(matches!(
            decode_field_table(bytes, DEFAULT_MAX_TABLE_DEPTH),
            Err(DecodeError::Truncated { .. })
        ));
    }

    fn nested(depth: usize) -> FieldTable {
        let mut table = FieldTable::new();
        for _ in 1..depth {
            let mut outer = FieldTable::new();
            outer.insert("n", table);
            table = outer;
        }
        table
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted_and_beyond_it_refused() {
        let limit = 8;
        let at_limit = nested(limit);
        assert_eq!(at_limit.depth(), limit);
        assert_eq!(decode_field_table(&encode(&at_limit), limit), Ok(at_limit));

        let error = decode_field_table(&encode(&nested(limit + 1)), limit).unwrap_err();
        assert_eq!(error, DecodeError::TableTooDeep { max: limit });
        assert_eq!(error.reply_code(), ReplyCode::RESOURCE_ERROR);
    }

    #[test]
    fn arrays_count_towards_nesting() {
        let mut value = FieldValue::Void;
        for _ in 0..40 {
            value = FieldValue::Array(vec![value].into());
        }
        let table: FieldTable = [("a", value)].into_iter().collect();
        // The encoder refuses what a decoder would.
        let mut out = BytesMut::new();
        assert_eq!(
            encode_field_table(&table, &mut out),
            Err(EncodeError::TableTooDeep {
                max: DEFAULT_MAX_TABLE_DEPTH
            })
        );
        assert!(
            out.is_empty(),
            "a refused encode leaves the buffer as it was"
        );
        // The same nesting written by hand: a table holding 40 arrays, each
        // the only value of the one around it.
        let mut array = vec![b'V'];
        for _ in 0..40 {
            let mut outer = vec![b'A'];
            outer.extend_from_slice(&u32::try_from(array.len()).unwrap().to_be_bytes());
            outer.extend_from_slice(&array);
            array = outer;
        }
        let mut bytes = u32::try_from(array.len() + 2)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        bytes.extend_from_slice(&[1, b'a']);
        bytes.extend_from_slice(&array);
        let error = decode_field_table(&bytes, DEFAULT_MAX_TABLE_DEPTH).unwrap_err();
        assert_eq!(
            error,
            DecodeError::TableTooDeep {
                max: DEFAULT_MAX_TABLE_DEPTH
            }
        );
    }

    #[test]
    fn hostile_deep_nesting_fails_without_exhausting_the_stack() {
        // 100 000 nested tables written by hand: each level is a 4-byte
        // length, a 1-byte name, the name and the `F` tag.
        let levels = 100_000usize;
        let mut bytes = Vec::with_capacity(levels * 7);
        for level in 0..levels {
            let inner = (levels - level - 1) * 7;
            bytes.extend_from_slice(&u32::try_from(inner + 3).unwrap().to_be_bytes());
            bytes.extend_from_slice(&[1, b'n', b'F']);
        }
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let error = decode_field_table(&bytes, DEFAULT_MAX_TABLE_DEPTH).unwrap_err();
        assert_eq!(
            error,
            DecodeError::TableTooDeep {
                max: DEFAULT_MAX_TABLE_DEPTH
            }
        );
    }

    #[test]
    fn insert_replaces_and_remove_deletes_every_duplicate() {
        let mut table = FieldTable::new();
        assert_eq!(table.insert("k", 1u8), None);
        assert_eq!(table.insert("k", 2u8), Some(FieldValue::ShortShortUInt(1)));
        assert_eq!(table.len(), 1);
        assert_eq!(table.get("k"), Some(&FieldValue::ShortShortUInt(2)));
        assert_eq!(table.remove("k"), Some(FieldValue::ShortShortUInt(2)));
        assert!(table.is_empty());
    }

    #[test]
    fn nan_equals_itself_so_round_trips_compare() {
        assert_eq!(FieldValue::Double(f64::NAN), FieldValue::Double(f64::NAN));
        assert_ne!(FieldValue::Float(0.0), FieldValue::Float(-0.0));
    }

    proptest! {
        #[test]
        fn any_table_round_trips_or_is_refused_for_depth(table in arbitrary_value::<FieldTable>()) {
            let mut out = BytesMut::new();
            match encode_field_table(&table, &mut out) {
                Ok(()) => {
                    prop_assert!(table.depth() <= DEFAULT_MAX_TABLE_DEPTH);
                    let decoded = decode_field_table(&out, DEFAULT_MAX_TABLE_DEPTH);
                    prop_assert_eq!(decoded, Ok(table));
                }
                // Names longer than 255 bytes, and nesting deeper than a
                // decoder accepts, cannot be encoded.
                Err(EncodeError::TableTooDeep { max }) => {
                    prop_assert_eq!(max, DEFAULT_MAX_TABLE_DEPTH);
                    prop_assert!(table.depth() > DEFAULT_MAX_TABLE_DEPTH);
                    prop_assert!(out.is_empty());
                }
                Err(error) => {
                    prop_assert!(matches!(error, EncodeError::ShortStringTooLong { .. }), "unexpected {:?}", error);
                    prop_assert!(out.is_empty());
                }
            }
        }

        #[test]
        fn any_value_round_trips_inside_a_table(value in arbitrary_value::<FieldValue>()) {
            prop_assume!(value.depth() < DEFAULT_MAX_TABLE_DEPTH);
            let table: FieldTable = [("v", value)].into_iter().collect();
            let mut out = BytesMut::new();
            if encode_field_table(&table, &mut out).is_ok() {
                prop_assert_eq!(decode_field_table(&out, DEFAULT_MAX_TABLE_DEPTH), Ok(table));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_table_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_field_table(&bytes, DEFAULT_MAX_TABLE_DEPTH);
        }
    }
}
