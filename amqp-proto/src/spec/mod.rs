//! The classes and methods of AMQP 0-9-1 with RabbitMQ's extensions.
//!
//! One declarative table below generates, for every method, a struct with the
//! specification's fields (reserved ones included, so that decoding and
//! re-encoding reproduces the bytes), its class/method [`MethodId`], whether
//! it is synchronous and carries content, the methods that may answer it, and
//! a variant of [`Method`]. [`METHODS`] describes the same table as data.
//!
//! Field names follow the specification with `-` written `_`; exchange
//! `type` is [`ExchangeDeclare::exchange_type`] because `type` is a keyword.
//! `Default` gives zero, `false` and empty values, which is not always the
//! specification's default (`basic.reject` requeues by default, for one):
//! callers set every field they mean.

pub mod constants;
#[macro_use]
mod macros;

use crate::codec::reader::Reader;
use crate::codec::writer::Writer;
use crate::error::{DecodeError, EncodeError};

/// The id of the `basic` class, the only one that carries content.
pub const BASIC_CLASS_ID: u16 = 60;

/// A method's wire identity: class id and method id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MethodId {
    /// The class id (10 connection, 20 channel, 40 exchange, 50 queue, 60
    /// basic, 85 confirm, 90 tx; 30 access is deprecated).
    pub class_id: u16,
    /// The method id within the class.
    pub method_id: u16,
}

impl MethodId {
    /// What the table says of the method with this id, if it exists.
    #[must_use]
    pub fn info(self) -> Option<&'static MethodInfo> {
        METHODS.iter().find(|info| info.id == self)
    }
}

impl std::fmt::Display for MethodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.info() {
            Some(info) => write!(f, "{}.{}", info.class, info.name),
            None => write!(f, "{}.{}", self.class_id, self.method_id),
        }
    }
}

/// The wire type of a method field or property (spec 4.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FieldType {
    /// 8-bit unsigned integer.
    octet,
    /// 16-bit unsigned integer.
    short,
    /// 32-bit unsigned integer.
    long,
    /// 64-bit unsigned integer.
    longlong,
    /// One bit, packed with its neighbours.
    bit,
    /// Length-prefixed (8-bit) string of at most 255 bytes.
    shortstr,
    /// Length-prefixed (32-bit) string.
    longstr,
    /// Field table.
    table,
    /// 64-bit POSIX time.
    timestamp,
}

/// One field of a method, as the table declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// The specification's name (`routing-key` is written `routing_key`).
    pub name: &'static str,
    /// The wire type.
    pub field_type: FieldType,
}

/// One method, as the table declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The class name (`basic`).
    pub class: &'static str,
    /// The method name within its class (`get-ok`).
    pub name: &'static str,
    /// Class and method ids.
    pub id: MethodId,
    /// True for requests that expect a reply.
    pub synchronous: bool,
    /// True when content (header and body frames) follows.
    pub has_content: bool,
    /// True when a client may send it.
    pub sent_by_client: bool,
    /// True when a server may send it.
    pub sent_by_server: bool,
    /// The methods that may answer it.
    pub replies: &'static [MethodId],
    /// Its fields in wire order.
    pub fields: &'static [FieldInfo],
}

amqp_methods! {
    /// Work with socket connections.
    class connection = 10 {
        /// Starts connection negotiation: the server's version, properties,
        /// SASL mechanisms and locales.
        ConnectionStart = 10 "start", sent by server, replies [ConnectionStartOk], {
            version_major: octet,
            version_minor: octet,
            server_properties: table,
            /// Space-separated SASL mechanisms.
            mechanisms: longstr,
            /// Space-separated locales.
            locales: longstr,
        }
        /// Selects a SASL mechanism and locale and sends the first response.
        ConnectionStartOk = 11 "start-ok", sent by client, {
            client_properties: table,
            mechanism: shortstr,
            response: longstr,
            locale: shortstr,
        }
        /// A SASL challenge.
        ConnectionSecure = 20 "secure", sent by server, replies [ConnectionSecureOk], {
            challenge: longstr,
        }
        /// A SASL response to a challenge.
        ConnectionSecureOk = 21 "secure-ok", sent by client, {
            response: longstr,
        }
        /// The server's proposed limits.
        ConnectionTune = 30 "tune", sent by server, replies [ConnectionTuneOk], {
            channel_max: short,
            frame_max: long,
            heartbeat: short,
        }
        /// The limits the client settled on.
        ConnectionTuneOk = 31 "tune-ok", sent by client, {
            channel_max: short,
            frame_max: long,
            heartbeat: short,
        }
        /// Opens a virtual host.
        ConnectionOpen = 40 "open", sent by client, replies [ConnectionOpenOk], {
            virtual_host: shortstr,
            /// Reserved; must be empty.
            capabilities: shortstr,
            /// Reserved; must be false.
            insist: bit,
        }
        /// The virtual host is open.
        ConnectionOpenOk = 41 "open-ok", sent by server, {
            /// Reserved.
            known_hosts: shortstr,
        }
        /// Requests a connection close, giving the reason.
        ConnectionClose = 50 "close", sent by both, replies [ConnectionCloseOk], {
            reply_code: short,
            reply_text: shortstr,
            /// Class of the method that caused the close, or 0.
            class_id: short,
            /// Method that caused the close, or 0.
            method_id: short,
        }
        /// Confirms a connection close.
        ConnectionCloseOk = 51 "close-ok", sent by both, {}
        /// RabbitMQ: the server stopped reading publishes (resource alarm).
        ConnectionBlocked = 60 "blocked", sent by server, {
            reason: shortstr,
        }
        /// RabbitMQ: the server reads publishes again.
        ConnectionUnblocked = 61 "unblocked", sent by server, {}
        /// RabbitMQ: replaces the connection's secret (an expiring token).
        ConnectionUpdateSecret = 70 "update-secret", sent by client, replies [ConnectionUpdateSecretOk], {
            new_secret: longstr,
            reason: shortstr,
        }
        /// RabbitMQ: the new secret is in force.
        ConnectionUpdateSecretOk = 71 "update-secret-ok", sent by server, {}
    }

    /// Work with channels.
    class channel = 20 {
        /// Opens a channel.
        ChannelOpen = 10 "open", sent by client, replies [ChannelOpenOk], {
            /// Reserved; must be empty.
            out_of_band: shortstr,
        }
        /// The channel is open.
        ChannelOpenOk = 11 "open-ok", sent by server, {
            /// Reserved.
            channel_id: longstr,
        }
        /// Asks the peer to pause or resume sending content.
        ChannelFlow = 20 "flow", sent by both, replies [ChannelFlowOk], {
            active: bit,
        }
        /// Confirms a flow request.
        ChannelFlowOk = 21 "flow-ok", sent by both, {
            active: bit,
        }
        /// Requests a channel close, giving the reason.
        ChannelClose = 40 "close", sent by both, replies [ChannelCloseOk], {
            reply_code: short,
            reply_text: shortstr,
            class_id: short,
            method_id: short,
        }
        /// Confirms a channel close.
        ChannelCloseOk = 41 "close-ok", sent by both, {}
    }

    /// Deprecated access tickets (RabbitMQ answers them and ignores them).
    class access = 30 {
        /// Requests an access ticket.
        AccessRequest = 10 "request", sent by client, replies [AccessRequestOk], {
            realm: shortstr,
            exclusive: bit,
            passive: bit,
            active: bit,
            write: bit,
            read: bit,
        }
        /// Grants an access ticket.
        AccessRequestOk = 11 "request-ok", sent by server, {
            ticket: short,
        }
    }

    /// Work with exchanges.
    class exchange = 40 {
        /// Declares (or checks, when passive) an exchange.
        ExchangeDeclare = 10 "declare", sent by client, replies [ExchangeDeclareOk], {
            /// Reserved.
            ticket: short,
            exchange: shortstr,
            /// The exchange type (`direct`, `fanout`, `topic`, `headers`, ...).
            exchange_type as "type": shortstr,
            passive: bit,
            durable: bit,
            auto_delete: bit,
            internal: bit,
            nowait: bit,
            arguments: table,
        }
        /// The exchange exists.
        ExchangeDeclareOk = 11 "declare-ok", sent by server, {}
        /// Deletes an exchange.
        ExchangeDelete = 20 "delete", sent by client, replies [ExchangeDeleteOk], {
            ticket: short,
            exchange: shortstr,
            if_unused: bit,
            nowait: bit,
        }
        /// The exchange is deleted.
        ExchangeDeleteOk = 21 "delete-ok", sent by server, {}
        /// RabbitMQ: binds an exchange to an exchange.
        ExchangeBind = 30 "bind", sent by client, replies [ExchangeBindOk], {
            ticket: short,
            destination: shortstr,
            source: shortstr,
            routing_key: shortstr,
            nowait: bit,
            arguments: table,
        }
        /// RabbitMQ: the exchange binding exists.
        ExchangeBindOk = 31 "bind-ok", sent by server, {}
        /// RabbitMQ: removes an exchange-to-exchange binding.
        ExchangeUnbind = 40 "unbind", sent by client, replies [ExchangeUnbindOk], {
            ticket: short,
            destination: shortstr,
            source: shortstr,
            routing_key: shortstr,
            nowait: bit,
            arguments: table,
        }
        /// RabbitMQ: the binding is removed. Its method id is 51, not 41.
        ExchangeUnbindOk = 51 "unbind-ok", sent by server, {}
    }

    /// Work with queues.
    class queue = 50 {
        /// Declares (or checks, when passive) a queue; an empty name asks the
        /// server to make one up.
        QueueDeclare = 10 "declare", sent by client, replies [QueueDeclareOk], {
            ticket: short,
            queue: shortstr,
            passive: bit,
            durable: bit,
            exclusive: bit,
            auto_delete: bit,
            nowait: bit,
            arguments: table,
        }
        /// The queue exists; its name and counts.
        QueueDeclareOk = 11 "declare-ok", sent by server, {
            queue: shortstr,
            message_count: long,
            consumer_count: long,
        }
        /// Binds a queue to an exchange.
        QueueBind = 20 "bind", sent by client, replies [QueueBindOk], {
            ticket: short,
            queue: shortstr,
            exchange: shortstr,
            routing_key: shortstr,
            nowait: bit,
            arguments: table,
        }
        /// The binding exists.
        QueueBindOk = 21 "bind-ok", sent by server, {}
        /// Removes every ready message from a queue.
        QueuePurge = 30 "purge", sent by client, replies [QueuePurgeOk], {
            ticket: short,
            queue: shortstr,
            nowait: bit,
        }
        /// The queue is purged; how many messages went.
        QueuePurgeOk = 31 "purge-ok", sent by server, {
            message_count: long,
        }
        /// Deletes a queue.
        QueueDelete = 40 "delete", sent by client, replies [QueueDeleteOk], {
            ticket: short,
            queue: shortstr,
            if_unused: bit,
            if_empty: bit,
            nowait: bit,
        }
        /// The queue is deleted; how many messages went with it.
        QueueDeleteOk = 41 "delete-ok", sent by server, {
            message_count: long,
        }
        /// Removes a queue binding (there is no nowait flag).
        QueueUnbind = 50 "unbind", sent by client, replies [QueueUnbindOk], {
            ticket: short,
            queue: shortstr,
            exchange: shortstr,
            routing_key: shortstr,
            arguments: table,
        }
        /// The binding is removed.
        QueueUnbindOk = 51 "unbind-ok", sent by server, {}
    }

    /// Work with messages.
    class basic = 60 {
        /// Sets the prefetch window.
        BasicQos = 10 "qos", sent by client, replies [BasicQosOk], {
            prefetch_size: long,
            prefetch_count: short,
            /// RabbitMQ: true applies the limit per channel, false per consumer.
            global: bit,
        }
        /// The prefetch window is set.
        BasicQosOk = 11 "qos-ok", sent by server, {}
        /// Starts a consumer.
        BasicConsume = 20 "consume", sent by client, replies [BasicConsumeOk], {
            ticket: short,
            queue: shortstr,
            consumer_tag: shortstr,
            no_local: bit,
            no_ack: bit,
            exclusive: bit,
            nowait: bit,
            arguments: table,
        }
        /// The consumer is started, under this tag.
        BasicConsumeOk = 21 "consume-ok", sent by server, {
            consumer_tag: shortstr,
        }
        /// Cancels a consumer; RabbitMQ also sends it to notify that a
        /// consumer was cancelled (its queue was deleted, ...).
        BasicCancel = 30 "cancel", sent by both, replies [BasicCancelOk], {
            consumer_tag: shortstr,
            nowait: bit,
        }
        /// The consumer is cancelled.
        BasicCancelOk = 31 "cancel-ok", sent by both, {
            consumer_tag: shortstr,
        }
        /// Publishes a message.
        BasicPublish = 40 "publish", sent by client, with content, {
            ticket: short,
            exchange: shortstr,
            routing_key: shortstr,
            mandatory: bit,
            immediate: bit,
        }
        /// Returns an unroutable mandatory message to its publisher.
        BasicReturn = 50 "return", sent by server, with content, {
            reply_code: short,
            reply_text: shortstr,
            exchange: shortstr,
            routing_key: shortstr,
        }
        /// Delivers a message to a consumer.
        BasicDeliver = 60 "deliver", sent by server, with content, {
            consumer_tag: shortstr,
            delivery_tag: longlong,
            redelivered: bit,
            exchange: shortstr,
            routing_key: shortstr,
        }
        /// Fetches one message.
        BasicGet = 70 "get", sent by client, replies [BasicGetOk, BasicGetEmpty], {
            ticket: short,
            queue: shortstr,
            no_ack: bit,
        }
        /// The fetched message follows.
        BasicGetOk = 71 "get-ok", sent by server, with content, {
            delivery_tag: longlong,
            redelivered: bit,
            exchange: shortstr,
            routing_key: shortstr,
            message_count: long,
        }
        /// The queue had no message.
        BasicGetEmpty = 72 "get-empty", sent by server, {
            /// Reserved.
            cluster_id: shortstr,
        }
        /// Acknowledges messages; from a server in confirm mode, confirms
        /// publishes.
        BasicAck = 80 "ack", sent by both, {
            delivery_tag: longlong,
            multiple: bit,
        }
        /// Rejects one message.
        BasicReject = 90 "reject", sent by client, {
            delivery_tag: longlong,
            requeue: bit,
        }
        /// Redelivers unacknowledged messages, without a reply (deprecated).
        BasicRecoverAsync = 100 "recover-async", sent by client, {
            requeue: bit,
        }
        /// Redelivers unacknowledged messages.
        BasicRecover = 110 "recover", sent by client, replies [BasicRecoverOk], {
            requeue: bit,
        }
        /// Unacknowledged messages are being redelivered.
        BasicRecoverOk = 111 "recover-ok", sent by server, {}
        /// RabbitMQ: rejects one or many messages; from a server in confirm
        /// mode, reports publishes it could not take.
        BasicNack = 120 "nack", sent by both, {
            delivery_tag: longlong,
            multiple: bit,
            requeue: bit,
        }
    }

    /// RabbitMQ: publisher confirms.
    class confirm = 85 {
        /// Puts the channel in confirm mode.
        ConfirmSelect = 10 "select", sent by client, replies [ConfirmSelectOk], {
            nowait: bit,
        }
        /// The channel is in confirm mode.
        ConfirmSelectOk = 11 "select-ok", sent by server, {}
    }

    /// Transactions.
    class tx = 90 {
        /// Puts the channel in transaction mode.
        TxSelect = 10 "select", sent by client, replies [TxSelectOk], {}
        /// The channel is transactional.
        TxSelectOk = 11 "select-ok", sent by server, {}
        /// Commits the current transaction.
        TxCommit = 20 "commit", sent by client, replies [TxCommitOk], {}
        /// The transaction is committed.
        TxCommitOk = 21 "commit-ok", sent by server, {}
        /// Abandons the current transaction.
        TxRollback = 30 "rollback", sent by client, replies [TxRollbackOk], {}
        /// The transaction is rolled back.
        TxRollbackOk = 31 "rollback-ok", sent by server, {}
    }
}

impl Method {
    /// True when the method asks the server not to reply (`nowait`).
    #[must_use]
    pub fn nowait(&self) -> bool {
        match self {
            Self::ExchangeDeclare(method) => method.nowait,
            Self::ExchangeDelete(method) => method.nowait,
            Self::ExchangeBind(method) => method.nowait,
            Self::ExchangeUnbind(method) => method.nowait,
            Self::QueueDeclare(method) => method.nowait,
            Self::QueueBind(method) => method.nowait,
            Self::QueuePurge(method) => method.nowait,
            Self::QueueDelete(method) => method.nowait,
            Self::BasicConsume(method) => method.nowait,
            Self::BasicCancel(method) => method.nowait,
            Self::ConfirmSelect(method) => method.nowait,
            _ => false,
        }
    }

    /// True when the method expects a reply as sent: synchronous and not
    /// `nowait`.
    #[must_use]
    pub fn expects_reply(&self) -> bool {
        self.is_synchronous() && !self.nowait()
    }
}

#[cfg(test)]
mod tests {
    use arbitrary::Unstructured;
    use bytes::BytesMut;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{decode_method, encode_method, DecodeLimits};
    use crate::spec::constants::ReplyCode;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Every method in the table, with arbitrary field values, decodes to
        /// itself; the index picks the method so that none is left to chance.
        #[test]
        fn every_method_round_trips(
            index in 0..METHODS.len(),
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            let info = METHODS[index];
            let Ok(Some(method)) = Method::arbitrary_of(info.id, &mut Unstructured::new(&bytes)) else {
                return Err(TestCaseError::reject("arbitrary gave up"));
            };
            prop_assert_eq!(method.id(), info.id);
            prop_assert_eq!(method.name(), format!("{}.{}", info.class, info.name));
            let mut out = BytesMut::new();
            match encode_method(&method, &mut out) {
                Ok(()) => {
                    let limits = DecodeLimits::default();
                    let decoded = decode_method(&out, &limits);
                    let too_deep = matches!(decoded, Err(crate::DecodeError::TableTooDeep { .. }));
                    prop_assert!(too_deep || decoded == Ok(method.clone()), "{:?} != {:?}", decoded, method);
                }
                Err(error) => {
                    prop_assert!(matches!(error, EncodeError::ShortStringTooLong { .. }), "{:?}", error);
                    prop_assert!(out.is_empty());
                }
            }
        }

        #[test]
        fn arbitrary_payloads_never_panic_the_method_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = decode_method(&bytes, &DecodeLimits::default());
        }
    }

    #[test]
    fn ids_are_unique_and_replies_exist() {
        for (index, info) in METHODS.iter().enumerate() {
            assert!(
                METHODS[index + 1..].iter().all(|other| other.id != info.id),
                "{} is declared twice",
                info.id
            );
            for reply in info.replies {
                let reply_info = reply.info().expect("replies name declared methods");
                assert_eq!(
                    reply_info.class, info.class,
                    "{} answers {}",
                    reply, info.id
                );
            }
            assert_eq!(info.synchronous, !info.replies.is_empty());
        }
    }

    #[test]
    fn bits_pack_into_one_octet_least_significant_first() {
        let declare = Method::QueueDeclare(QueueDeclare {
            queue: "q".into(),
            durable: true,
            auto_delete: true,
            ..Default::default()
        });
        let mut out = BytesMut::new();
        encode_method(&declare, &mut out).unwrap();
        // class, method, ticket, "q", flags, empty table
        let expected: &[u8] = &[0, 50, 0, 10, 0, 0, 1, b'q', 0b0000_1010, 0, 0, 0, 0];
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn unknown_ids_are_not_implemented() {
        for payload in [
            &[0, 10, 0, 99][..],
            &[0, 99, 0, 10][..],
            &[0, 30, 0, 20][..],
        ] {
            let error = decode_method(payload, &DecodeLimits::default()).unwrap_err();
            assert!(
                matches!(error, crate::DecodeError::UnknownMethod { .. }),
                "{error}"
            );
            assert_eq!(error.reply_code(), ReplyCode::NOT_IMPLEMENTED);
        }
    }

    #[test]
    fn truncated_and_overlong_method_payloads_are_frame_errors() {
        let mut out = BytesMut::new();
        let deliver = Method::BasicDeliver(BasicDeliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 7,
            exchange: "ex".into(),
            routing_key: "rk".into(),
            ..Default::default()
        });
        encode_method(&deliver, &mut out).unwrap();
        for cut in 0..out.len() {
            let error = decode_method(&out[..cut], &DecodeLimits::default()).unwrap_err();
            assert_eq!(
                error.reply_code(),
                ReplyCode::FRAME_ERROR,
                "cut at {cut}: {error}"
            );
        }
        out.extend_from_slice(&[0]);
        assert_eq!(
            decode_method(&out, &DecodeLimits::default()),
            Err(crate::DecodeError::TrailingBytes {
                context: "basic.deliver",
                extra: 1
            })
        );
    }

    #[test]
    fn table_metadata_matches_the_generated_constants() {
        assert_eq!(BasicPublish::NAME, "basic.publish");
        const { assert!(BasicPublish::HAS_CONTENT && !BasicPublish::SYNCHRONOUS) };
        assert_eq!(BasicGet::REPLIES, &[BasicGetOk::ID, BasicGetEmpty::ID]);
        assert_eq!(
            ExchangeUnbindOk::ID,
            MethodId {
                class_id: 40,
                method_id: 51
            }
        );
        let declare = ExchangeDeclare::ID.info().unwrap();
        assert_eq!(declare.fields[2].name, "type");
        assert_eq!(declare.fields[2].field_type, FieldType::shortstr);
        assert_eq!(METHODS.iter().filter(|info| info.has_content).count(), 4);
        assert_eq!(ConnectionStart::ID.to_string(), "connection.start");
        assert_eq!(
            MethodId {
                class_id: 1,
                method_id: 2
            }
            .to_string(),
            "1.2"
        );
    }
}
