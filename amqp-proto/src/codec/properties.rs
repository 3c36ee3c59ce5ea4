//! The content header frame's payload: class, body size and the basic
//! properties with their property-flags word (spec 4.2.6.1).

use super::reader::Reader;
use super::strings::ShortString;
use super::table::FieldTable;
use super::writer::Writer;
use crate::error::{DecodeError, EncodeError};
use crate::spec::BASIC_CLASS_ID;

/// The payload of a content header frame.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
pub struct ContentHeader {
    /// The class of the method this content belongs to; always `basic` (60)
    /// in AMQP 0-9-1.
    pub class_id: u16,
    /// Unused; the specification requires zero.
    pub weight: u16,
    /// Total size of the body that follows, in bytes, over all body frames.
    pub body_size: u64,
    /// The message's properties.
    pub properties: BasicProperties,
}

impl ContentHeader {
    /// A `basic` content header for a body of `body_size` bytes.
    #[must_use]
    pub fn basic(body_size: u64, properties: BasicProperties) -> Self {
        Self {
            class_id: BASIC_CLASS_ID,
            weight: 0,
            body_size,
            properties,
        }
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut header = Self::default();
        header.decode_into(reader)?;
        Ok(header)
    }

    /// Decodes in place: a header is large, and building it where it will
    /// live saves moving it through every layer of the decoder.
    pub(crate) fn decode_into(&mut self, reader: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.class_id = reader.short()?;
        if self.class_id != BASIC_CLASS_ID {
            return Err(DecodeError::UnknownContentClass(self.class_id));
        }
        self.weight = reader.short()?;
        self.body_size = reader.longlong()?;
        self.properties.decode_into(reader)?;
        reader.finish()
    }

    pub(crate) fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        Self::encode_parts(
            self.class_id,
            self.weight,
            self.body_size,
            &self.properties,
            writer,
        )
    }

    /// Encodes a header from borrowed parts, so a publisher's properties
    /// need not be moved into a `ContentHeader` for every message.
    pub(crate) fn encode_parts(
        class_id: u16,
        weight: u16,
        body_size: u64,
        properties: &BasicProperties,
        writer: &mut Writer<'_>,
    ) -> Result<(), EncodeError> {
        writer.short(class_id);
        writer.short(weight);
        writer.longlong(body_size);
        properties.encode(writer)
    }
}

/// Declares the basic properties once: the struct, its flag bits (first
/// property in the highest bit), and its codec in wire order.
macro_rules! basic_properties {
    ($($(#[$doc:meta])* $field:ident: $type:ident as $wire:ident, $spec_name:literal;)*) => {
        /// The properties of a `basic` content (spec 1.8 "basic" class
        /// fields); each is present on the wire only when set.
        #[derive(Debug, Clone, Default, PartialEq)]
        #[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
        #[non_exhaustive]
        pub struct BasicProperties {
            $($(#[$doc])* pub $field: Option<$type>,)*
        }

        /// The names and wire types of the basic properties, in flag order
        /// (most significant flag bit first), as the specification spells them.
        pub const BASIC_PROPERTIES: &[(&str, crate::spec::FieldType)] = &[
            $(($spec_name, crate::spec::FieldType::$wire),)*
        ];

        impl BasicProperties {
            fn flags(&self) -> u16 {
                let mut flags = 0u16;
                let mut bit = 15u32;
                $(
                    if self.$field.is_some() {
                        flags |= 1 << bit;
                    }
                    bit -= 1;
                )*
                let _ = bit;
                flags
            }

            /// Decodes into `self`, which must hold no properties yet.
            fn decode_into(&mut self, reader: &mut Reader<'_>) -> Result<(), DecodeError> {
                let flags = reader.short()?;
                if flags & UNUSED_FLAGS != 0 {
                    return Err(DecodeError::InvalidPropertyFlags { flags });
                }
                let mut bit = 15u32;
                $(
                    if flags & (1 << bit) != 0 {
                        self.$field = Some(reader.$wire()?);
                    }
                    bit -= 1;
                )*
                let _ = bit;
                Ok(())
            }

            fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
                writer.short(self.flags());
                $(
                    if let Some(value) = &self.$field {
                        basic_properties!(@put writer, $wire, value);
                    }
                )*
                Ok(())
            }

            $(
                #[doc = concat!("Sets `", stringify!($field), "`; for building properties in one expression.")]
                #[must_use]
                pub fn $field(mut self, value: impl Into<$type>) -> Self {
                    self.$field = Some(value.into());
                    self
                }
            )*
        }
    };
    (@put $writer:ident, shortstr, $value:ident) => { $writer.shortstr($value)? };
    (@put $writer:ident, table, $value:ident) => { $writer.table($value)? };
    (@put $writer:ident, octet, $value:ident) => { $writer.octet(*$value) };
    (@put $writer:ident, timestamp, $value:ident) => { $writer.timestamp(*$value) };
}

/// Flag bits that name no basic property: bit 1 is unassigned and bit 0 would
/// announce a continuation word, which a class of 14 properties never needs.
const UNUSED_FLAGS: u16 = 0b11;

basic_properties! {
    /// MIME content type, such as `application/json`.
    content_type: ShortString as shortstr, "content-type";
    /// MIME content encoding, such as `gzip`.
    content_encoding: ShortString as shortstr, "content-encoding";
    /// Application headers; also used by RabbitMQ for `x-` extensions.
    headers: FieldTable as table, "headers";
    /// 1 for transient, 2 for persistent messages.
    delivery_mode: u8 as octet, "delivery-mode";
    /// Message priority, 0 to 9.
    priority: u8 as octet, "priority";
    /// Application correlation identifier, for RPC replies.
    correlation_id: ShortString as shortstr, "correlation-id";
    /// The queue (or `amq.rabbitmq.reply-to`) replies should go to.
    reply_to: ShortString as shortstr, "reply-to";
    /// Per-message TTL in milliseconds, as a decimal string.
    expiration: ShortString as shortstr, "expiration";
    /// Application message identifier.
    message_id: ShortString as shortstr, "message-id";
    /// Message timestamp, seconds since the Unix epoch.
    timestamp: u64 as timestamp, "timestamp";
    /// Message type name (the specification's `type`).
    message_type: ShortString as shortstr, "type";
    /// Creating user id; RabbitMQ checks it against the connection's user.
    user_id: ShortString as shortstr, "user-id";
    /// Creating application id.
    app_id: ShortString as shortstr, "app-id";
    /// Deprecated in 0-9-1; kept for completeness.
    cluster_id: ShortString as shortstr, "cluster-id";
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::test_support::arbitrary_value;
    use crate::codec::{decode_content_header, encode_content_header, DecodeLimits, FieldValue};
    use crate::spec::constants::ReplyCode;

    /// Properties with exactly the properties named by `mask` set (bit 13
    /// for the first property, as in the flags word shifted right by 2).
    fn with_mask(mask: u16) -> BasicProperties {
        let headers: FieldTable = [("h", FieldValue::LongInt(-1))].into_iter().collect();
        let set = |bit: u16| mask & (1 << (13 - bit)) != 0;
        let mut properties = BasicProperties::default();
        let text = |value: &str| Some(ShortString::from(value));
        if set(0) {
            properties.content_type = text("application/json");
        }
        if set(1) {
            properties.content_encoding = text("gzip");
        }
        if set(2) {
            properties.headers = Some(headers);
        }
        if set(3) {
            properties.delivery_mode = Some(2);
        }
        if set(4) {
            properties.priority = Some(9);
        }
        if set(5) {
            properties.correlation_id = text("corr");
        }
        if set(6) {
            properties.reply_to = text("amq.rabbitmq.reply-to");
        }
        if set(7) {
            properties.expiration = text("60000");
        }
        if set(8) {
            properties.message_id = text("id-1");
        }
        if set(9) {
            properties.timestamp = Some(1_700_000_000);
        }
        if set(10) {
            properties.message_type = text("kind");
        }
        if set(11) {
            properties.user_id = text("guest");
        }
        if set(12) {
            properties.app_id = text("app");
        }
        if set(13) {
            properties.cluster_id = text("cluster");
        }
        properties
    }

    #[test]
    fn every_property_combination_round_trips_with_the_right_flags() {
        let limits = DecodeLimits::default();
        for mask in 0..(1u16 << 14) {
            let header = ContentHeader::basic(u64::from(mask), with_mask(mask));
            let mut out = BytesMut::new();
            encode_content_header(&header, &mut out).unwrap();
            let flags = u16::from_be_bytes([out[12], out[13]]);
            assert_eq!(flags, mask << 2, "flags for mask {mask:#x}");
            assert_eq!(decode_content_header(&out, &limits), Ok(header));
        }
    }

    #[test]
    fn known_encoding_of_a_header() {
        let header = ContentHeader::basic(
            16,
            BasicProperties::default()
                .content_type("text/plain")
                .delivery_mode(2u8),
        );
        let mut out = BytesMut::new();
        encode_content_header(&header, &mut out).unwrap();
        let mut expected = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0b1001_0000, 0];
        expected.push(10);
        expected.extend_from_slice(b"text/plain");
        expected.push(2);
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn unassigned_flag_bits_are_syntax_errors() {
        for flags in [0x0001u16, 0x0002, 0x8001] {
            let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            payload.extend_from_slice(&flags.to_be_bytes());
            let error = decode_content_header(&payload, &DecodeLimits::default()).unwrap_err();
            assert_eq!(error, DecodeError::InvalidPropertyFlags { flags });
            assert_eq!(error.reply_code(), ReplyCode::SYNTAX_ERROR);
        }
    }

    #[test]
    fn headers_for_classes_without_content_are_refused() {
        let payload = [0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let error = decode_content_header(&payload, &DecodeLimits::default()).unwrap_err();
        assert_eq!(error, DecodeError::UnknownContentClass(50));
        // Spec 4.2.6: a wrong class id is a badly formatted content.
        assert_eq!(error.reply_code(), ReplyCode::UNEXPECTED_FRAME);
    }

    #[test]
    fn a_flag_without_its_value_is_truncated() {
        // content-type announced, nothing follows.
        let payload = [0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0];
        let error = decode_content_header(&payload, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(error, DecodeError::Truncated { .. }), "{error}");
    }

    proptest! {
        #[test]
        fn arbitrary_headers_round_trip(header in arbitrary_value::<ContentHeader>()) {
            let header = ContentHeader { class_id: BASIC_CLASS_ID, ..header };
            let mut out = BytesMut::new();
            if encode_content_header(&header, &mut out).is_ok() {
                let decoded = decode_content_header(&out, &DecodeLimits::default());
                let too_deep = matches!(decoded, Err(DecodeError::TableTooDeep { .. }));
                prop_assert!(too_deep || decoded == Ok(header.clone()), "{:?} != {:?}", decoded, header);
            } else {
                prop_assert!(out.is_empty());
            }
        }
    }
}
