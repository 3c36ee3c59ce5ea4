//! What the application chooses before connecting: credentials, virtual
//! host, limits and client properties.

use std::time::Duration;

use crate::codec::{
    FieldTable, FieldValue, LongString, DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_TABLE_DEPTH,
};

/// How to authenticate (spec 1.4.2.2, RabbitMQ's access control guide).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password in the clear (use TLS).
    Plain {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `AMQPLAIN`: the same credentials as a field table (older servers).
    AmqPlain {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `EXTERNAL`: identity from outside AMQP, typically the TLS client
    /// certificate.
    External,
    /// Any other mechanism: its name and initial response. Challenges
    /// arrive as [`Event::SaslChallenge`](crate::Event::SaslChallenge) and
    /// are answered with [`Connection::respond_to_challenge`](crate::Connection::respond_to_challenge).
    Custom {
        /// Mechanism name as the server lists it.
        name: String,
        /// The initial response.
        initial_response: Vec<u8>,
    },
}

impl SaslMechanism {
    /// The mechanism's name on the wire.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Plain { .. } => "PLAIN",
            Self::AmqPlain { .. } => "AMQPLAIN",
            Self::External => "EXTERNAL",
            Self::Custom { name, .. } => name,
        }
    }

    pub(crate) fn initial_response(&self) -> LongString {
        match self {
            Self::Plain { username, password } => {
                let mut response = Vec::with_capacity(username.len() + password.len() + 2);
                response.push(0);
                response.extend_from_slice(username.as_bytes());
                response.push(0);
                response.extend_from_slice(password.as_bytes());
                LongString::from(response)
            }
            Self::AmqPlain { username, password } => {
                // AMQPLAIN's response is a field table without its length prefix.
                let table: FieldTable = [
                    ("LOGIN", FieldValue::from(username.as_str())),
                    ("PASSWORD", FieldValue::from(password.as_str())),
                ]
                .into_iter()
                .collect();
                let mut encoded = bytes::BytesMut::new();
                let _ = crate::codec::encode_field_table(&table, &mut encoded);
                LongString::from(encoded.get(4..).unwrap_or_default().to_vec())
            }
            Self::External => LongString::default(),
            Self::Custom {
                initial_response, ..
            } => LongString::from(initial_response.clone()),
        }
    }

    /// The user name, where the mechanism carries one.
    #[must_use]
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Plain { username, .. } | Self::AmqPlain { username, .. } => Some(username),
            Self::External | Self::Custom { .. } => None,
        }
    }
}

/// Credentials never appear in debug output.
impl std::fmt::Debug for SaslMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain { username, .. } => write!(f, "Plain {{ username: {username:?}, .. }}"),
            Self::AmqPlain { username, .. } => {
                write!(f, "AmqPlain {{ username: {username:?}, .. }}")
            }
            Self::External => f.write_str("External"),
            Self::Custom { name, .. } => write!(f, "Custom {{ name: {name:?}, .. }}"),
        }
    }
}

/// Connection settings. `Config::default()` connects as guest/guest to the
/// virtual host `/`, as RabbitMQ's clients do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How to authenticate.
    pub mechanism: SaslMechanism,
    /// The virtual host to open.
    pub virtual_host: String,
    /// The locale to ask for (the server's first is used if it lacks this one).
    pub locale: String,
    /// Highest channel id wanted; 0 accepts the server's limit.
    pub channel_max: u16,
    /// Largest frame wanted, in bytes; 0 accepts the server's limit. Never
    /// below 4096 once negotiated.
    pub frame_max: u32,
    /// Heartbeat interval wanted, in seconds; 0 accepts the server's.
    pub heartbeat: u16,
    /// How long the handshake may take, from [`Connection::new`](crate::Connection::new)
    /// to `open-ok`.
    pub handshake_timeout: Duration,
    /// How long to wait for `close-ok` after sending a `connection.close`.
    pub close_timeout: Duration,
    /// Largest message body accepted from the server (64 MiB by default).
    pub max_body_size: u64,
    /// How deeply field tables may nest in what the server sends.
    pub max_table_depth: usize,
    /// Publishes awaiting confirmation on one channel beyond which the
    /// back-pressure signal asks publishers to wait.
    pub max_unconfirmed: usize,
    /// Bytes queued for sending beyond which the back-pressure signal asks
    /// publishers to wait.
    pub max_queued_output: usize,
    /// Message bodies of at most this many bytes are copied into the output
    /// buffer with their method and header frames, so a small publish is
    /// one contiguous run of bytes (and many of them one write); larger
    /// bodies are queued as chunks of their own and sent from the
    /// application's memory without a copy. 0 copies no body. 2048 by
    /// default.
    pub copy_bodies_up_to: usize,
    /// Events (deliveries included) buffered in the core beyond which
    /// [`Connection::wants_input`](crate::Connection::wants_input) asks the
    /// adapter to stop reading.
    pub max_buffered_events: usize,
    /// Bytes the buffered events may hold (message bodies and decoded
    /// headers tables, which take several times their wire size) beyond
    /// which [`Connection::wants_input`](crate::Connection::wants_input)
    /// asks the adapter to stop reading. 64 MiB by default.
    pub max_buffered_bytes: usize,
    /// The total size the content headers announced of message bodies
    /// still being received, across all channels: a server interleaving
    /// large messages on many channels cannot hold more than this in
    /// partial bodies. A message that would pass it is refused alone, as
    /// one over [`max_body_size`](Self::max_body_size) is. 256 MiB by
    /// default.
    pub max_bodies_in_progress: u64,
    /// A name shown in the management UI (`connection_name`).
    pub connection_name: Option<String>,
    /// Extra client properties, merged over the defaults (product, version,
    /// platform, capabilities).
    pub client_properties: FieldTable,
    /// Record the topology this connection declares (exchanges, queues,
    /// bindings, qos, consumers), for
    /// [`Connection::recover`](crate::Connection::recover). Off by default:
    /// recording costs a look at every event.
    pub record_topology: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mechanism: SaslMechanism::Plain {
                username: "guest".into(),
                password: "guest".into(),
            },
            virtual_host: "/".into(),
            locale: "en_US".into(),
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            max_table_depth: DEFAULT_MAX_TABLE_DEPTH,
            max_unconfirmed: 1_000,
            max_queued_output: 1 << 20,
            copy_bodies_up_to: 2048,
            max_buffered_events: 4_096,
            max_buffered_bytes: 64 << 20,
            max_bodies_in_progress: 256 << 20,
            connection_name: None,
            client_properties: FieldTable::new(),
            record_topology: false,
        }
    }
}

impl Config {
    /// The client-properties table sent in `start-ok`: product, version,
    /// platform, the capabilities this core implements, then the
    /// application's own.
    #[must_use]
    pub fn client_properties_table(&self) -> FieldTable {
        let capabilities: FieldTable = [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ]
        .into_iter()
        .map(|name| (name, FieldValue::Boolean(true)))
        .collect();
        let mut table = FieldTable::new();
        table.insert("product", "amqp-proto");
        table.insert("version", env!("CARGO_PKG_VERSION"));
        table.insert("platform", "Rust");
        table.insert("information", "https://github.com/amqp-rs/amqp-foundation");
        table.insert("capabilities", capabilities);
        if let Some(name) = &self.connection_name {
            table.insert("connection_name", name.as_str());
        }
        for (key, value) in &self.client_properties {
            table.insert(key.clone(), value.clone());
        }
        table
    }
}

/// The limits both sides settled on in `tune`/`tune-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Highest usable channel id.
    pub channel_max: u16,
    /// Largest frame, header and end octet included.
    pub frame_max: u32,
    /// Heartbeat interval in seconds; 0 disables heartbeats.
    pub heartbeat: u16,
}

/// RabbitMQ's clients' rule: zero on either side means "no limit", so the
/// other side's value wins; otherwise the lower value.
pub(crate) fn negotiate<T: Ord + Default + Copy>(client: T, server: T) -> T {
    let zero = T::default();
    if client == zero || server == zero {
        client.max(server)
    } else {
        client.min(server)
    }
}

impl Tuning {
    /// The negotiated values for a client wanting `config` and a server
    /// proposing `server`. Channel-max 0 means 65535; frame-max is never
    /// below the protocol's minimum of 4096.
    #[must_use]
    pub fn negotiate(config: &Config, server: Self) -> Self {
        let channel_max = match negotiate(config.channel_max, server.channel_max) {
            0 => u16::MAX,
            other => other,
        };
        let frame_max = match negotiate(config.frame_max, server.frame_max) {
            0 => u32::MAX,
            other => other,
        }
        .max(crate::spec::constants::FRAME_MIN_SIZE);
        Self {
            channel_max,
            frame_max,
            heartbeat: negotiate(config.heartbeat, server.heartbeat),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(channel_max: u16, frame_max: u32, heartbeat: u16) -> Config {
        Config {
            channel_max,
            frame_max,
            heartbeat,
            ..Config::default()
        }
    }

    #[test]
    fn tune_matrix() {
        // (client, server) -> negotiated, for each of the three values.
        let cases = [
            ((0, 0, 0), (0, 0, 0), (u16::MAX, u32::MAX, 0)),
            ((0, 0, 0), (2047, 131_072, 60), (2047, 131_072, 60)),
            ((100, 65_536, 10), (0, 0, 0), (100, 65_536, 10)),
            ((100, 65_536, 10), (2047, 131_072, 60), (100, 65_536, 10)),
            (
                (4000, 1_000_000, 600),
                (2047, 131_072, 60),
                (2047, 131_072, 60),
            ),
            ((1, 1024, 1), (2047, 131_072, 60), (1, 4096, 1)),
        ];
        for ((cc, cf, ch), (sc, sf, sh), (ec, ef, eh)) in cases {
            let negotiated = Tuning::negotiate(
                &config(cc, cf, ch),
                Tuning {
                    channel_max: sc,
                    frame_max: sf,
                    heartbeat: sh,
                },
            );
            assert_eq!(
                negotiated,
                Tuning {
                    channel_max: ec,
                    frame_max: ef,
                    heartbeat: eh
                },
                "client ({cc}, {cf}, {ch}) server ({sc}, {sf}, {sh})"
            );
        }
    }

    #[test]
    fn plain_response_and_debug_hide_nothing_but_the_password() {
        let mechanism = SaslMechanism::Plain {
            username: "user".into(),
            password: "secret".into(),
        };
        assert_eq!(mechanism.initial_response(), "\0user\0secret");
        assert!(!format!("{mechanism:?}").contains("secret"));
    }

    #[test]
    fn amqplain_response_is_a_table_without_its_length() {
        let mechanism = SaslMechanism::AmqPlain {
            username: "u".into(),
            password: "p".into(),
        };
        let expected: &[u8] = b"\x05LOGINS\x00\x00\x00\x01u\x08PASSWORDS\x00\x00\x00\x01p";
        assert_eq!(mechanism.initial_response().as_bytes(), expected);
    }

    #[test]
    fn client_properties_announce_every_capability_and_keep_overrides() {
        let mut config = Config {
            connection_name: Some("orders".into()),
            ..Config::default()
        };
        config.client_properties.insert("product", "my-app");
        let table = config.client_properties_table();
        assert_eq!(table.get("product"), Some(&FieldValue::from("my-app")));
        assert_eq!(
            table.get("connection_name"),
            Some(&FieldValue::from("orders"))
        );
        let Some(FieldValue::Table(capabilities)) = table.get("capabilities") else {
            panic!("capabilities table");
        };
        assert_eq!(capabilities.len(), 8);
        assert_eq!(
            capabilities.get("basic.nack"),
            Some(&FieldValue::Boolean(true))
        );
    }
}
