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
        let class_id = reader.short()?;
        if class_id != BASIC_CLASS_ID {
            return Err(DecodeError::UnknownContentClass(class_id));
        }
        let weight = reader.short()?;
        let body_size = reader.longlong()?;
        let properties = BasicProperties::decode(reader)?;
        reader.finish()?;
        Ok(Self {
            class_id,
            weight,
            body_size,
            properties,
        })
    }

    pub(crate) fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
        writer.short(self.class_id);
        writer.short(self.weight);
        writer.longlong(self.body_size);
        self.properties.encode(writer)
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

            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let flags = reader.short()?;
                if flags & UNUSED_FLAGS != 0 {
                    return Err(DecodeError::InvalidPropertyFlags { flags });
                }
                let mut properties = Self::default();
                let mut bit = 15u32;
                $(
                    if flags & (1 << bit) != 0 {
                        properties.$field = Some(reader.$wire()?);
                    }
                    bit -= 1;
                )*
                let _ = bit;
                Ok(properties)
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
