//! Where and how to connect: the options both adapters open connections
//! with, built from a URL.

use std::sync::Arc;
use std::time::Duration;

use amqp_proto::uri::AmqpUri;
use amqp_proto::Config;

use crate::error::Result;

/// Answers a custom SASL mechanism's challenges.
///
/// ```
/// use std::sync::Arc;
/// use amqp_io_common::ConnectOptions;
/// use amqp_proto::SaslMechanism;
///
/// let mut options = ConnectOptions::from_url("amqp://localhost")?;
/// options.config.mechanism = SaslMechanism::Custom {
///     name: "X-TOKEN".into(),
///     initial_response: b"first".to_vec(),
/// };
/// options.sasl_responder = Some(Arc::new(|challenge: &[u8]| {
///     // Each challenge the server sends gets this answer.
///     [b"answer to ".as_slice(), challenge].concat()
/// }));
/// # Ok::<(), amqp_io_common::Error>(())
/// ```
pub type SaslResponder = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// One broker node a connection may be opened to.
///
/// ```
/// use amqp_io_common::Address;
///
/// let node = Address::new("rabbit-2.internal", 5671).with_server_name("rabbit.internal");
/// assert_eq!(node.to_string(), "rabbit-2.internal:5671");
/// assert_eq!(Address::new("::1", 5672).to_string(), "[::1]:5672");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Address {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The name TLS checks this node's certificate against (and sends in
    /// SNI), when it is not the one of [`TlsSettings`](crate::TlsSettings)
    /// (`amqps://` URLs set it from their host or their
    /// `server_name_indication`).
    pub server_name: Option<String>,
}

impl Address {
    /// `host:port`, with the TLS server name of the options.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            server_name: None,
        }
    }

    /// The same address with its own TLS server name.
    #[must_use]
    pub fn with_server_name(mut self, server_name: impl Into<String>) -> Self {
        self.server_name = Some(server_name.into());
        self
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The order a connection tries its [`addresses`](ConnectOptions::addresses)
/// in when it opens. A recovery starts after the node it lost, whatever the
/// order, so it lands on another node first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AddressOrder {
    /// As listed (a primary first, then fallbacks).
    #[default]
    InOrder,
    /// Shuffled for each opening, so that a fleet of clients spreads over
    /// the cluster (what RabbitMQ's documentation advises for clusters).
    Shuffled,
}

/// Where and how to connect; built from a URL with
/// [`ConnectOptions::from_url`] (or several, one per cluster node, with
/// [`ConnectOptions::from_urls`]), then adjusted field by field.
///
/// ```
/// use std::time::Duration;
/// use amqp_io_common::{Address, AddressOrder, ConnectOptions};
///
/// let mut options = ConnectOptions::from_url("amqp://guest:guest@rabbit-1/%2f?heartbeat=10")?;
/// options.operation_timeout = Duration::from_secs(5);
/// options.addresses.push(Address::new("rabbit-2", 5672));
/// options.addresses.push(Address::new("rabbit-3", 5672));
/// options.address_order = AddressOrder::Shuffled;
/// assert_eq!(options.config.heartbeat, 10);
/// # Ok::<(), amqp_io_common::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The nodes to connect to, at least one: opening tries them in
    /// [`address_order`](Self::address_order), each within
    /// [`connection_timeout`](Self::connection_timeout), until one
    /// completes the handshake; a recovery tries them starting after the
    /// node it lost. They share the credentials, virtual host and TLS
    /// settings.
    pub addresses: Vec<Address>,
    /// In which order opening tries [`addresses`](Self::addresses).
    pub address_order: AddressOrder,
    /// Credentials, virtual host, tuning and limits for the core.
    pub config: Config,
    /// How long the TCP (and TLS) connect to each address may take (the
    /// AMQP handshake has its own deadline, [`Config::handshake_timeout`]).
    pub connection_timeout: Duration,
    /// The default time a call on a channel may wait for its reply (the
    /// adapters' channels can change it).
    pub operation_timeout: Duration,
    /// Answers challenges of a [`SaslMechanism::Custom`](amqp_proto::SaslMechanism::Custom).
    pub sasl_responder: Option<SaslResponder>,
    /// TLS, for `amqps://` (the `tls` feature).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::TlsSettings>,
    /// Automatic recovery (off with `None`, the default): when the
    /// connection fails for a reason a new one may cure
    /// ([`ConnectionError::is_recoverable`](amqp_proto::ConnectionError::is_recoverable)),
    /// reconnect waiting as this says between attempts, and declare again
    /// what the connection declared; see [`amqp_proto::recovery`].
    pub recovery: Option<amqp_proto::Backoff>,
    /// How trace context crosses the broker (the `tracing` feature):
    /// written into each publish's headers from its span, read from each
    /// delivery's headers into its `process` span. `None` propagates
    /// nothing; see [`crate::telemetry::TraceContext`]. The default is
    /// `None`, or OpenTelemetry's propagation with the `opentelemetry`
    /// feature.
    #[cfg(feature = "tracing")]
    pub trace_context: Option<Arc<dyn crate::telemetry::TraceContext>>,
    /// The application's metrics hook (`None`, the default: nothing is
    /// measured for it); see [`crate::telemetry::Observer`].
    pub observer: Option<Arc<dyn crate::telemetry::Observer>>,
    /// Which message spans are made and how they are named (the `tracing`
    /// feature); see [`crate::telemetry::SpanOptions`].
    pub spans: crate::telemetry::SpanOptions,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("addresses", &self.addresses)
            .field("address_order", &self.address_order)
            .field("config", &self.config)
            .field("connection_timeout", &self.connection_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Options from an `amqp://` URL (RabbitMQ's URI specification; see
    /// [`amqp_proto::uri`]). `amqps://` needs the `tls` feature.
    ///
    /// ```no_run
    /// let options = amqp_io_common::ConnectOptions::from_url("amqp://alice:secret@broker:5673/prod?frame_max=65536")?;
    /// assert_eq!(options.addresses, [amqp_io_common::Address::new("broker", 5673)]);
    /// assert_eq!(options.config.virtual_host, "prod");
    /// # Ok::<(), amqp_io_common::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let uri: AmqpUri = url.parse()?;
        Self::from_uri(uri)
    }

    /// Options for a cluster: one URL per node, tried as
    /// [`addresses`](Self::addresses) says. The first URL gives the
    /// credentials, virtual host, tuning and TLS settings; the others give
    /// their host and port (and, for `amqps://`, their server name), and
    /// must use the same scheme.
    ///
    /// ```
    /// use amqp_io_common::{Address, ConnectOptions};
    ///
    /// let options = ConnectOptions::from_urls([
    ///     "amqp://app:secret@10.0.0.1/prod",
    ///     "amqp://10.0.0.2",
    ///     "amqp://10.0.0.3:5673",
    /// ])?;
    /// assert_eq!(options.addresses[2], Address::new("10.0.0.3", 5673));
    /// assert_eq!(options.config.virtual_host, "prod");
    /// assert!(ConnectOptions::from_urls(Vec::<&str>::new()).is_err());
    /// # Ok::<(), amqp_io_common::Error>(())
    /// ```
    pub fn from_urls<I>(urls: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut urls = urls.into_iter();
        let first = urls.next().ok_or(crate::Error::NoAddress)?;
        let first: AmqpUri = first.as_ref().parse()?;
        let tls = first.tls;
        let mut options = Self::from_uri(first)?;
        for url in urls {
            let uri: AmqpUri = url.as_ref().parse()?;
            if uri.tls != tls {
                return Err(crate::Error::MixedSchemes);
            }
            let mut address = Address::new(uri.host, uri.port);
            if uri.tls {
                address.server_name = uri.tls_options.server_name.or(Some(address.host.clone()));
            }
            options.addresses.push(address);
        }
        Ok(options)
    }

    /// Options from a parsed URI.
    ///
    /// ```no_run
    /// use amqp_proto::uri::AmqpUri;
    ///
    /// let uri: AmqpUri = "amqp://localhost/%2f".parse()?;
    /// let options = amqp_io_common::ConnectOptions::from_uri(uri)?;
    /// # Ok::<(), amqp_io_common::Error>(())
    /// ```
    pub fn from_uri(uri: AmqpUri) -> Result<Self> {
        #[cfg(feature = "tls")]
        let tls = if uri.tls {
            Some(crate::TlsSettings::from_options(
                &uri.tls_options,
                &uri.host,
            )?)
        } else {
            None
        };
        #[cfg(not(feature = "tls"))]
        if uri.tls {
            return Err(crate::Error::Tls(
                "amqps:// URLs need the `tls` feature of the adapter".into(),
            ));
        }
        let mut address = Address::new(uri.host, uri.port);
        if uri.tls {
            address.server_name = uri.tls_options.server_name;
        }
        Ok(Self {
            addresses: vec![address],
            address_order: AddressOrder::InOrder,
            config: uri.config,
            connection_timeout: uri.connection_timeout.unwrap_or(DEFAULT_CONNECTION_TIMEOUT),
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            sasl_responder: None,
            #[cfg(feature = "tls")]
            tls,
            recovery: None,
            #[cfg(all(feature = "tracing", not(feature = "opentelemetry")))]
            trace_context: None,
            #[cfg(feature = "opentelemetry")]
            trace_context: Some(Arc::new(
                crate::opentelemetry::OpenTelemetryContext::default(),
            )),
            observer: None,
            spans: crate::telemetry::SpanOptions::default(),
        })
    }
}

/// The TCP connect timeout when the URL names none (RabbitMQ's Java
/// client waits as long).
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a blocking channel call waits for its reply by default.
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    #[test]
    fn each_amqps_url_of_a_cluster_keeps_its_own_server_name() {
        let options = ConnectOptions::from_urls([
            "amqps://app:secret@10.0.0.1:5671/prod?server_name_indication=rabbit-1.internal",
            "amqps://10.0.0.2:5671?server_name_indication=rabbit-2.internal",
            "amqps://rabbit-3.internal:5671",
        ])
        .expect("valid URLs");
        let tls = options.tls.as_ref().expect("amqps");
        let names: Vec<String> = options
            .addresses
            .iter()
            .map(|address| tls.for_address(address).server_name)
            .collect();
        assert_eq!(
            names,
            [
                "rabbit-1.internal",
                "rabbit-2.internal",
                "rabbit-3.internal"
            ]
        );
        assert_eq!(options.config.virtual_host, "prod");
    }

    #[test]
    fn a_cluster_cannot_mix_amqp_and_amqps() {
        let mixed = ConnectOptions::from_urls(["amqps://a:5671", "amqp://b"]);
        assert!(
            matches!(mixed, Err(crate::Error::MixedSchemes)),
            "{mixed:?}"
        );
    }
}
