//! What the application chooses before connecting: credentials, virtual
//! host, limits and client properties.

use std::time::Duration;

use crate::codec::{
    FieldTable, FieldValue, LongString, ShortString, DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_TABLE_DEPTH,
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

/// Connection settings.
///
/// `Config::default()` connects as guest/guest to the virtual host `/`, as
/// RabbitMQ's clients do, with these defaults:
///
/// | field | default |
/// |---|---|
/// | [`mechanism`](Self::mechanism) | `PLAIN`, user `guest`, password `guest` |
/// | [`virtual_host`](Self::virtual_host) | `/` |
/// | [`locale`](Self::locale) | `en_US` |
/// | [`channel_max`](Self::channel_max) | 2047 |
/// | [`frame_max`](Self::frame_max) | 131,072 bytes (128 KiB) |
/// | [`heartbeat`](Self::heartbeat) | 60 s |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s |
/// | [`close_timeout`](Self::close_timeout) | 5 s |
/// | [`max_body_size`](Self::max_body_size) | 64 MiB |
/// | [`max_table_depth`](Self::max_table_depth) | 32 |
/// | [`max_unconfirmed`](Self::max_unconfirmed) | 1,000 per channel |
/// | [`max_queued_output`](Self::max_queued_output) | 1 MiB |
/// | [`copy_bodies_up_to`](Self::copy_bodies_up_to) | 1,024 bytes |
/// | [`max_buffered_events`](Self::max_buffered_events) | 4,096 |
/// | [`max_buffered_bytes`](Self::max_buffered_bytes) | 64 MiB |
/// | [`max_bodies_in_progress`](Self::max_bodies_in_progress) | 256 MiB |
/// | [`connection_name`](Self::connection_name) | none |
/// | [`client_properties`](Self::client_properties) | none beyond the defaults |
/// | [`record_topology`](Self::record_topology) | off |
/// | [`reopen_unacked_channels`](Self::reopen_unacked_channels) | on |
/// | [`reopen_timed_out_channels`](Self::reopen_timed_out_channels) | off |
///
/// The struct is `#[non_exhaustive]`, so outside this crate it is made
/// from the default and changed field by field, or with the chained
/// `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use amqp_proto::Config;
///
/// let config = Config::default()
///     .with_credentials("app", "secret")
///     .with_virtual_host("orders")
///     .with_heartbeat(30)
///     .with_handshake_timeout(Duration::from_secs(5))
///     .with_connection_name("order-service");
/// assert_eq!(config.heartbeat, 30);
/// assert_eq!(config.mechanism.username(), Some("app"));
///
/// let mut config = Config::default();
/// config.max_unconfirmed = 10_000;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How to authenticate. Default: `PLAIN` as `guest`/`guest` (which
    /// RabbitMQ accepts only from localhost unless configured otherwise).
    pub mechanism: SaslMechanism,
    /// The virtual host to open. Default: `/`.
    pub virtual_host: String,
    /// The locale to ask for (the server's first is used if it lacks this
    /// one). Default: `en_US`.
    pub locale: String,
    /// Highest channel id wanted; 0 accepts the server's limit. Default:
    /// 2047 (RabbitMQ's own default limit).
    pub channel_max: u16,
    /// Largest frame wanted, in bytes; 0 accepts the server's limit. Never
    /// below 4096 once negotiated. Default: 131,072 (RabbitMQ's default).
    pub frame_max: u32,
    /// Heartbeat interval wanted, in seconds; 0 accepts the server's (and
    /// heartbeats are off only if both sides say 0). The lower non-zero
    /// value of the two is used. A heartbeat goes out after half the
    /// negotiated interval without a write; the server is dead after two
    /// intervals without a byte from it. Default: 60 (RabbitMQ's default).
    pub heartbeat: u16,
    /// How long the handshake may take, from [`Connection::new`](crate::Connection::new)
    /// to `open-ok`. Default: 10 s.
    pub handshake_timeout: Duration,
    /// How long to wait for `close-ok` after sending a `connection.close`.
    /// Default: 5 s.
    pub close_timeout: Duration,
    /// Largest message body accepted from the server; a larger one is
    /// refused alone ([`Event::MessageRefused`](crate::Event::MessageRefused)).
    /// Default: 64 MiB ([`DEFAULT_MAX_BODY_SIZE`], as RabbitMQ's Java client).
    pub max_body_size: u64,
    /// How deeply field tables may nest in what the server sends. Default:
    /// 32 ([`DEFAULT_MAX_TABLE_DEPTH`]).
    pub max_table_depth: usize,
    /// Publishes awaiting confirmation on one channel beyond which the
    /// back-pressure signal asks publishers to wait
    /// ([`Readiness::ConfirmWindowFull`](crate::Readiness::ConfirmWindowFull)).
    /// Default: 1,000.
    pub max_unconfirmed: usize,
    /// Bytes queued for sending beyond which the back-pressure signal asks
    /// publishers to wait ([`Readiness::OutputFull`](crate::Readiness::OutputFull));
    /// the queue is what the adapter has not taken yet, so the signal works
    /// when the adapter takes only what the socket accepts
    /// ([`Connection::write_to`](crate::Connection::write_to)). Default: 1 MiB.
    pub max_queued_output: usize,
    /// Message bodies of at most this many bytes are copied into the output
    /// buffer with their method and header frames, so a small publish is
    /// one contiguous run of bytes (and many of them one write); larger
    /// bodies are queued as chunks of their own and sent from the
    /// application's memory without a copy. 0 copies no body. Default:
    /// 1,024, about where copying starts to cost more than a chunk of its
    /// own (`benches/output.rs`, `docs/performance.md`).
    pub copy_bodies_up_to: usize,
    /// Events (deliveries included) buffered in the core beyond which
    /// [`Connection::wants_input`](crate::Connection::wants_input) asks the
    /// adapter to stop reading (asked between reads: one read can go past
    /// it). Default: 4,096.
    pub max_buffered_events: usize,
    /// Bytes the buffered events may hold (message bodies and decoded
    /// headers tables, which take several times their wire size) beyond
    /// which [`Connection::wants_input`](crate::Connection::wants_input)
    /// asks the adapter to stop reading. Default: 64 MiB.
    pub max_buffered_bytes: usize,
    /// The total size the content headers announced of message bodies
    /// still being received, across all channels: a server interleaving
    /// large messages on many channels cannot hold more than this in
    /// partial bodies. A message that would pass it is refused alone, as
    /// one over [`max_body_size`](Self::max_body_size) is. Default: 256 MiB.
    pub max_bodies_in_progress: u64,
    /// A name shown in the management UI (`connection_name`). Default:
    /// none.
    pub connection_name: Option<String>,
    /// Extra client properties, merged over the defaults (product, version,
    /// platform, capabilities; see
    /// [`client_properties_table`](Self::client_properties_table)).
    /// Default: empty.
    pub client_properties: FieldTable,
    /// Record the topology this connection declares (exchanges, queues,
    /// bindings, qos, consumers), for
    /// [`Connection::recover`](crate::Connection::recover). Default: off,
    /// since recording costs a look at every event.
    pub record_topology: bool,
    /// With [`record_topology`](Self::record_topology): a channel whose
    /// publish is nacked before any of its publishes was acked is closed
    /// and opened again under the same handle (same id, confirm mode,
    /// qos, consumers and their tags, numbering continued) before it
    /// publishes again; its publishes still unconfirmed then fail
    /// ([`ConfirmOutcome::Failed`](crate::ConfirmOutcome::Failed)), so each
    /// is resolved once and may be published again. Why: RabbitMQ (seen
    /// with 3.10) nacks every publish of a channel whose first publish to a
    /// quorum queue came while the queue had no leader (its leader's node
    /// had just died) for as long as that node stays down, while a new
    /// channel's publishes are acked as soon as a new leader is elected; a
    /// client retrying on the same channel never gets through. A channel
    /// that has had acks keeps its nacks as they are (a full queue's
    /// `reject-publish`, say). The application sees
    /// [`Event::ChannelRecovering`](crate::Event::ChannelRecovering), then
    /// [`Event::ChannelRecovered`](crate::Event::ChannelRecovered), as for
    /// [`reopen_timed_out_channels`](Self::reopen_timed_out_channels).
    /// Default: on (it acts only with the record).
    pub reopen_unacked_channels: bool,
    /// Reopen a channel the server closed because a consumer on it held a
    /// delivery unacknowledged past the broker's `consumer_timeout`
    /// ([`CloseReason::is_consumer_timeout`](crate::CloseReason::is_consumer_timeout)):
    /// under the same handle, with its confirm or transaction mode, qos
    /// and consumers (same tags), as a connection recovery would. Needs
    /// [`record_topology`](Self::record_topology) (the channel's record is
    /// what is replayed). The application sees
    /// [`Event::ChannelRecovering`](crate::Event::ChannelRecovering), then
    /// [`Event::ChannelRecovered`](crate::Event::ChannelRecovered), in
    /// place of [`Event::ChannelClosed`](crate::Event::ChannelClosed).
    /// Default: off; the adapters turn it on with automatic recovery.
    pub reopen_timed_out_channels: bool,
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
            copy_bodies_up_to: 1024,
            max_buffered_events: 4_096,
            max_buffered_bytes: 64 << 20,
            max_bodies_in_progress: 256 << 20,
            connection_name: None,
            client_properties: FieldTable::new(),
            record_topology: false,
            reopen_unacked_channels: true,
            reopen_timed_out_channels: false,
        }
    }
}

/// Chained setters, one per field (`Config::default().with_heartbeat(30)`),
/// for code outside this crate, where the `#[non_exhaustive]` struct cannot
/// be written as a literal.
impl Config {
    /// Sets [`mechanism`](Self::mechanism).
    #[must_use]
    pub fn with_mechanism(mut self, mechanism: SaslMechanism) -> Self {
        self.mechanism = mechanism;
        self
    }

    /// Sets [`mechanism`](Self::mechanism) to `PLAIN` with these
    /// credentials.
    #[must_use]
    pub fn with_credentials(
        self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.with_mechanism(SaslMechanism::Plain {
            username: username.into(),
            password: password.into(),
        })
    }

    /// Sets [`virtual_host`](Self::virtual_host).
    #[must_use]
    pub fn with_virtual_host(mut self, virtual_host: impl Into<String>) -> Self {
        self.virtual_host = virtual_host.into();
        self
    }

    /// Sets [`locale`](Self::locale).
    #[must_use]
    pub fn with_locale(mut self, locale: impl Into<String>) -> Self {
        self.locale = locale.into();
        self
    }

    /// Sets [`channel_max`](Self::channel_max).
    #[must_use]
    pub fn with_channel_max(mut self, channel_max: u16) -> Self {
        self.channel_max = channel_max;
        self
    }

    /// Sets [`frame_max`](Self::frame_max).
    #[must_use]
    pub fn with_frame_max(mut self, frame_max: u32) -> Self {
        self.frame_max = frame_max;
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat), in seconds.
    #[must_use]
    pub fn with_heartbeat(mut self, seconds: u16) -> Self {
        self.heartbeat = seconds;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    #[must_use]
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`max_body_size`](Self::max_body_size).
    #[must_use]
    pub fn with_max_body_size(mut self, bytes: u64) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Sets [`max_table_depth`](Self::max_table_depth).
    #[must_use]
    pub fn with_max_table_depth(mut self, depth: usize) -> Self {
        self.max_table_depth = depth;
        self
    }

    /// Sets [`max_unconfirmed`](Self::max_unconfirmed).
    #[must_use]
    pub fn with_max_unconfirmed(mut self, publishes: usize) -> Self {
        self.max_unconfirmed = publishes;
        self
    }

    /// Sets [`max_queued_output`](Self::max_queued_output).
    #[must_use]
    pub fn with_max_queued_output(mut self, bytes: usize) -> Self {
        self.max_queued_output = bytes;
        self
    }

    /// Sets [`copy_bodies_up_to`](Self::copy_bodies_up_to).
    #[must_use]
    pub fn with_copy_bodies_up_to(mut self, bytes: usize) -> Self {
        self.copy_bodies_up_to = bytes;
        self
    }

    /// Sets [`max_buffered_events`](Self::max_buffered_events).
    #[must_use]
    pub fn with_max_buffered_events(mut self, events: usize) -> Self {
        self.max_buffered_events = events;
        self
    }

    /// Sets [`max_buffered_bytes`](Self::max_buffered_bytes).
    #[must_use]
    pub fn with_max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sets [`max_bodies_in_progress`](Self::max_bodies_in_progress).
    #[must_use]
    pub fn with_max_bodies_in_progress(mut self, bytes: u64) -> Self {
        self.max_bodies_in_progress = bytes;
        self
    }

    /// Sets [`reopen_unacked_channels`](Self::reopen_unacked_channels).
    #[must_use]
    pub fn with_reopen_unacked_channels(mut self, reopen: bool) -> Self {
        self.reopen_unacked_channels = reopen;
        self
    }

    /// Sets [`connection_name`](Self::connection_name).
    #[must_use]
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Adds one entry to [`client_properties`](Self::client_properties)
    /// (replacing one of the same key).
    #[must_use]
    pub fn with_client_property(
        mut self,
        key: impl Into<ShortString>,
        value: impl Into<FieldValue>,
    ) -> Self {
        self.client_properties.insert(key, value);
        self
    }

    /// Sets [`record_topology`](Self::record_topology).
    #[must_use]
    pub fn with_record_topology(mut self, record: bool) -> Self {
        self.record_topology = record;
        self
    }

    /// Sets [`reopen_timed_out_channels`](Self::reopen_timed_out_channels)
    /// (and [`record_topology`](Self::record_topology), which it needs,
    /// when turning it on).
    #[must_use]
    pub fn with_reopen_timed_out_channels(mut self, reopen: bool) -> Self {
        self.reopen_timed_out_channels = reopen;
        self.record_topology |= reopen;
        self
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

    /// The defaults the struct's docs list, one by one.
    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::default();
        assert_eq!(
            config.mechanism,
            SaslMechanism::Plain {
                username: "guest".into(),
                password: "guest".into()
            }
        );
        assert_eq!(config.virtual_host, "/");
        assert_eq!(config.locale, "en_US");
        assert_eq!(config.channel_max, 2047);
        assert_eq!(config.frame_max, 131_072);
        assert_eq!(config.heartbeat, 60);
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.close_timeout, Duration::from_secs(5));
        assert_eq!(config.max_body_size, 64 << 20);
        assert_eq!(config.max_table_depth, 32);
        assert_eq!(config.max_unconfirmed, 1000);
        assert_eq!(config.max_queued_output, 1 << 20);
        assert_eq!(config.copy_bodies_up_to, 1024);
        assert_eq!(config.max_buffered_events, 4096);
        assert_eq!(config.max_buffered_bytes, 64 << 20);
        assert_eq!(config.max_bodies_in_progress, 256 << 20);
        assert_eq!(config.connection_name, None);
        assert!(config.client_properties.is_empty());
        assert!(!config.record_topology);
    }

    #[test]
    fn each_setter_sets_its_field() {
        let config = Config::default()
            .with_credentials("u", "p")
            .with_virtual_host("v")
            .with_locale("de_DE")
            .with_channel_max(7)
            .with_frame_max(8192)
            .with_heartbeat(9)
            .with_handshake_timeout(Duration::from_secs(11))
            .with_close_timeout(Duration::from_secs(12))
            .with_max_body_size(13)
            .with_max_table_depth(14)
            .with_max_unconfirmed(15)
            .with_max_queued_output(16)
            .with_copy_bodies_up_to(17)
            .with_max_buffered_events(18)
            .with_max_buffered_bytes(19)
            .with_max_bodies_in_progress(20)
            .with_connection_name("n")
            .with_client_property("k", "x")
            .with_client_property("k", "y")
            .with_record_topology(true);
        assert_eq!(config.mechanism.username(), Some("u"));
        assert_eq!(config.mechanism.initial_response(), "\0u\0p");
        assert_eq!(config.virtual_host, "v");
        assert_eq!(config.locale, "de_DE");
        assert_eq!(config.channel_max, 7);
        assert_eq!(config.frame_max, 8192);
        assert_eq!(config.heartbeat, 9);
        assert_eq!(config.handshake_timeout, Duration::from_secs(11));
        assert_eq!(config.close_timeout, Duration::from_secs(12));
        assert_eq!(config.max_body_size, 13);
        assert_eq!(config.max_table_depth, 14);
        assert_eq!(config.max_unconfirmed, 15);
        assert_eq!(config.max_queued_output, 16);
        assert_eq!(config.copy_bodies_up_to, 17);
        assert_eq!(config.max_buffered_events, 18);
        assert_eq!(config.max_buffered_bytes, 19);
        assert_eq!(config.max_bodies_in_progress, 20);
        assert_eq!(config.connection_name.as_deref(), Some("n"));
        assert_eq!(config.client_properties.len(), 1);
        assert_eq!(
            config.client_properties.get("k"),
            Some(&FieldValue::from("y"))
        );
        assert!(config.record_topology);
        let external = Config::default().with_mechanism(SaslMechanism::External);
        assert_eq!(external.mechanism, SaslMechanism::External);
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
