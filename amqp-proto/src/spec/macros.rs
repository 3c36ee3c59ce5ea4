//! The macro that turns the method table in `spec/mod.rs` into typed method
//! structs, the [`Method`](super::Method) enum, their codec and their
//! metadata. The table is the only place a method's shape is written.

/// The Rust type of each AMQP domain.
macro_rules! field_type {
    (octet) => {
        u8
    };
    (short) => {
        u16
    };
    (long) => {
        u32
    };
    (longlong) => {
        u64
    };
    (bit) => {
        bool
    };
    (shortstr) => {
        $crate::codec::ShortString
    };
    (longstr) => {
        $crate::codec::LongString
    };
    (table) => {
        $crate::codec::FieldTable
    };
    (timestamp) => {
        u64
    };
}

/// Writes one field of a method.
macro_rules! encode_field {
    ($writer:ident, octet, $value:expr) => {
        $writer.octet(*$value)
    };
    ($writer:ident, short, $value:expr) => {
        $writer.short(*$value)
    };
    ($writer:ident, long, $value:expr) => {
        $writer.long(*$value)
    };
    ($writer:ident, longlong, $value:expr) => {
        $writer.longlong(*$value)
    };
    ($writer:ident, timestamp, $value:expr) => {
        $writer.timestamp(*$value)
    };
    ($writer:ident, bit, $value:expr) => {
        $writer.bit(*$value)
    };
    ($writer:ident, shortstr, $value:expr) => {
        $writer.shortstr($value)?
    };
    ($writer:ident, longstr, $value:expr) => {
        $writer.longstr($value)?
    };
    ($writer:ident, table, $value:expr) => {
        $writer.table($value)?
    };
}

/// The name the specification gives a field: the explicit one when the table
/// renames a field (a Rust keyword), else the Rust name.
macro_rules! spec_field_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident $spec:literal) => {
        $spec
    };
}

/// `true`, whatever was matched: turns an optional table entry into a flag.
macro_rules! present {
    ($($anything:tt)*) => {
        true
    };
}

/// Which peers send a method.
macro_rules! direction {
    (client) => {
        (true, false)
    };
    (server) => {
        (false, true)
    };
    (both) => {
        (true, true)
    };
}

macro_rules! amqp_methods {
    ($(
        $(#[$class_doc:meta])*
        class $class:ident = $class_id:literal {
            $(
                $(#[$doc:meta])*
                $Method:ident = $method_id:literal $spec_name:literal,
                sent by $sender:ident,
                $(replies [$($Reply:ident),*],)?
                $(with $content:ident,)?
                {
                    $($(#[$field_doc:meta])* $field:ident $(as $field_spec:literal)?: $type:ident),* $(,)?
                }
            )*
        }
    )*) => {
        $($(
            $(#[$doc])*
            #[doc = ""]
            #[doc = concat!("Wire id ", stringify!($class_id), ".", stringify!($method_id),
                "; `", stringify!($class), ".", $spec_name, "`.")]
            #[derive(Debug, Clone, Default, PartialEq)]
            #[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
            pub struct $Method {
                $(
                    #[doc = concat!("`", spec_field_name!($field $($field_spec)?), "`: a `", stringify!($type), "`.")]
                    $(#[doc = ""] #[$field_doc])*
                    pub $field: field_type!($type),
                )*
            }

            impl $Method {
                /// The class and method ids this method is framed with.
                pub const ID: MethodId = MethodId {
                    class_id: $class_id,
                    method_id: $method_id,
                };
                /// The specification's name, `class.method`.
                pub const NAME: &'static str = concat!(stringify!($class), ".", $spec_name);
                /// True for requests that expect a reply (spec "synchronous").
                pub const SYNCHRONOUS: bool = false $(|| present!($($Reply)*))?;
                /// True when a content header and body frames follow.
                pub const HAS_CONTENT: bool = false $(|| present!($content))?;
                /// The methods that may answer this one.
                pub const REPLIES: &'static [MethodId] = &[$($($Reply::ID),*)?];

                #[allow(unused_variables, unused_mut)]
                fn decode_fields(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                    Ok(Self {
                        $($field: reader.$type()?,)*
                    })
                }

                #[allow(unused_variables, clippy::unnecessary_wraps)]
                pub(crate) fn encode_fields(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
                    $(encode_field!(writer, $type, &self.$field);)*
                    Ok(())
                }
            }

            impl From<$Method> for Method {
                fn from(method: $Method) -> Self {
                    Self::$Method(method)
                }
            }
        )*)*

        /// Every method of AMQP 0-9-1 and RabbitMQ's extensions.
        #[derive(Debug, Clone, PartialEq)]
        #[cfg_attr(any(test, feature = "arbitrary"), derive(arbitrary::Arbitrary))]
        #[non_exhaustive]
        pub enum Method {
            $($(
                #[doc = concat!("`", stringify!($class), ".", $spec_name, "`")]
                $Method($Method),
            )*)*
        }

        impl Method {
            /// The class and method ids this method is framed with.
            #[must_use]
            pub fn id(&self) -> MethodId {
                match self {
                    $($(Self::$Method(_) => $Method::ID,)*)*
                }
            }

            /// The specification's name, `class.method`.
            #[must_use]
            pub fn name(&self) -> &'static str {
                match self {
                    $($(Self::$Method(_) => $Method::NAME,)*)*
                }
            }

            /// True when a content header and body frames follow this method.
            #[must_use]
            pub fn has_content(&self) -> bool {
                match self {
                    $($(Self::$Method(_) => $Method::HAS_CONTENT,)*)*
                }
            }

            /// True for requests that expect a reply.
            #[must_use]
            pub fn is_synchronous(&self) -> bool {
                match self {
                    $($(Self::$Method(_) => $Method::SYNCHRONOUS,)*)*
                }
            }

            /// True when a server may send this method.
            #[must_use]
            pub fn sent_by_server(&self) -> bool {
                match self {
                    $($(Self::$Method(_) => direction!($sender).1,)*)*
                }
            }

            /// True when a client may send this method.
            #[must_use]
            pub fn sent_by_client(&self) -> bool {
                match self {
                    $($(Self::$Method(_) => direction!($sender).0,)*)*
                }
            }

            /// The methods that may answer this one (empty unless synchronous).
            #[must_use]
            pub fn replies(&self) -> &'static [MethodId] {
                match self {
                    $($(Self::$Method(_) => $Method::REPLIES,)*)*
                }
            }

            /// An arbitrary method of the given id, for property tests that must
            /// reach every method rather than whichever the input picks.
            #[cfg(test)]
            pub(crate) fn arbitrary_of(
                id: MethodId,
                u: &mut arbitrary::Unstructured<'_>,
            ) -> arbitrary::Result<Option<Self>> {
                Ok(match (id.class_id, id.method_id) {
                    $($(($class_id, $method_id) => Some(Self::$Method(u.arbitrary()?)),)*)*
                    _ => None,
                })
            }

            /// The specification's name of the method with these ids.
            #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
            pub(crate) fn name_of(class_id: u16, method_id: u16) -> Option<&'static str> {
                match (class_id, method_id) {
                    $($(($class_id, $method_id) => Some($Method::NAME),)*)*
                    _ => None,
                }
            }

            /// Decodes a method frame's payload: class id, method id, fields.
            pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let class_id = reader.short()?;
                let method_id = reader.short()?;
                let method = match (class_id, method_id) {
                    $($(($class_id, $method_id) => {
                        reader.set_context($Method::NAME);
                        Self::$Method($Method::decode_fields(reader)?)
                    })*)*
                    _ => return Err(DecodeError::UnknownMethod { class_id, method_id }),
                };
                reader.finish()?;
                Ok(method)
            }

            /// Encodes a method frame's payload.
            pub(crate) fn encode(&self, writer: &mut Writer<'_>) -> Result<(), EncodeError> {
                let id = self.id();
                writer.short(id.class_id);
                writer.short(id.method_id);
                match self {
                    $($(Self::$Method(method) => method.encode_fields(writer),)*)*
                }
            }
        }

        /// What the table says of every method, in table order.
        pub const METHODS: &[MethodInfo] = &[
            $($(MethodInfo {
                class: stringify!($class),
                name: $spec_name,
                id: $Method::ID,
                synchronous: $Method::SYNCHRONOUS,
                has_content: $Method::HAS_CONTENT,
                sent_by_client: direction!($sender).0,
                sent_by_server: direction!($sender).1,
                replies: $Method::REPLIES,
                fields: &[$(FieldInfo {
                    name: spec_field_name!($field $($field_spec)?),
                    field_type: FieldType::$type,
                }),*],
            },)*)*
        ];

        /// The classes of the table: name and id.
        pub const CLASSES: &[(&str, u16)] = &[$((stringify!($class), $class_id)),*];
    };
}
