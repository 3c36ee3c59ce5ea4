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

/// Where and how to connect; built from a URL with
/// [`ConnectOptions::from_url`], then adjusted field by field.
///
/// ```
/// use std::time::Duration;
/// use amqp_io_common::ConnectOptions;
///
/// let mut options = ConnectOptions::from_url("amqp://guest:guest@localhost/%2f?heartbeat=10")?;
/// options.operation_timeout = Duration::from_secs(5);
/// assert_eq!(options.config.heartbeat, 10);
/// # Ok::<(), amqp_io_common::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Credentials, virtual host, tuning and limits for the core.
    pub config: Config,
    /// How long the TCP connect may take (the handshake has its own
    /// deadline, [`Config::handshake_timeout`]).
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
            .field("host", &self.host)
            .field("port", &self.port)
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
    /// assert_eq!((options.host.as_str(), options.port), ("broker", 5673));
    /// assert_eq!(options.config.virtual_host, "prod");
    /// # Ok::<(), amqp_io_common::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let uri: AmqpUri = url.parse()?;
        Self::from_uri(uri)
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
        Ok(Self {
            host: uri.host,
            port: uri.port,
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
