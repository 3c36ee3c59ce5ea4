//! `amqp://` and `amqps://` URIs, as RabbitMQ's URI specification defines
//! them: `amqp[s]://[user[:password]@]host[:port][/vhost][?query]`, every
//! part percent-decoded. Parsing is pure, so both adapters share it.
//!
//! The virtual host follows the specification exactly: absent means the
//! default `/`, present but empty (`amqp://host/`) means the empty name,
//! and `/` itself is written `%2f`. An absent host means `localhost`, an
//! absent port 5672 (5671 for `amqps`), absent credentials guest/guest.
//!
//! Query parameters: `heartbeat` (seconds), `frame_max` (bytes),
//! `channel_max`, `connection_timeout` (milliseconds), `auth_mechanism`
//! (`plain`, `amqplain`, `external`), and for TLS `cacertfile`, `certfile`,
//! `keyfile`, `verify` (`verify_peer` or `verify_none`) and
//! `server_name_indication`. Any other parameter is an error, so a typo does
//! not silently fall back to a default.
//!
//! ```
//! use amqp_proto::uri::AmqpUri;
//!
//! let uri: AmqpUri = "amqps://alice:s%40cret@broker.example:5673/%2f?heartbeat=10".parse()?;
//! assert!(uri.tls);
//! assert_eq!((uri.host.as_str(), uri.port), ("broker.example", 5673));
//! assert_eq!(uri.config.virtual_host, "/");
//! assert_eq!(uri.config.heartbeat, 10);
//! assert_eq!(uri.config.mechanism.username(), Some("alice"));
//! # Ok::<(), amqp_proto::uri::UriError>(())
//! ```

use std::str::FromStr;
use std::time::Duration;

use crate::connection::{Config, SaslMechanism};

/// A parsed AMQP URI: where to connect, how, and the connection settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AmqpUri {
    /// True for `amqps://`.
    pub tls: bool,
    /// Host name or address (IPv6 without its brackets).
    pub host: String,
    /// Port: given, or 5672 (`amqp`) / 5671 (`amqps`).
    pub port: u16,
    /// Credentials, virtual host and tuning from the URI; defaults otherwise.
    pub config: Config,
    /// `connection_timeout`: how long the TCP (and TLS) connect may take.
    pub connection_timeout: Option<Duration>,
    /// TLS settings from the query.
    pub tls_options: TlsOptions,
}

/// TLS settings a URI may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust (`cacertfile`);
    /// the system's roots otherwise.
    pub ca_cert_file: Option<String>,
    /// PEM file of the client certificate (`certfile`), for EXTERNAL auth.
    pub cert_file: Option<String>,
    /// PEM file of the client key (`keyfile`).
    pub key_file: Option<String>,
    /// False when `verify=verify_none`: the server is not authenticated.
    pub verify_peer: bool,
    /// The name to send in SNI and check the certificate against, when it
    /// differs from the host (`server_name_indication`).
    pub server_name: Option<String>,
}

/// Why a URI could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The scheme is neither `amqp` nor `amqps`.
    #[error("scheme must be amqp:// or amqps://, got {0:?}")]
    Scheme(String),
    /// A malformed part: bad port, bad percent-encoding, bad IPv6 brackets.
    #[error("invalid {part}: {value:?}")]
    Invalid {
        /// Which part.
        part: &'static str,
        /// What it held.
        value: String,
    },
    /// A query parameter with a value it cannot take.
    #[error("invalid value {value:?} for query parameter {name}")]
    InvalidParameter {
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
    },
    /// A query parameter this client does not know.
    #[error("unknown query parameter {0:?}")]
    UnknownParameter(String),
}

fn percent_decode(part: &'static str, text: &str) -> Result<String, UriError> {
    let invalid = || UriError::Invalid {
        part,
        value: text.to_owned(),
    };
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2).ok_or_else(invalid)?;
            let hex = std::str::from_utf8(hex).map_err(|_| invalid())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            rest = tail.get(2..).unwrap_or_default();
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| invalid())
}

fn number<T: FromStr>(name: &str, value: &str) -> Result<T, UriError> {
    value.parse().map_err(|_| UriError::InvalidParameter {
        name: name.to_owned(),
        value: value.to_owned(),
    })
}

impl FromStr for AmqpUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| UriError::Scheme(text.to_owned()))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "amqp" => false,
            "amqps" => true,
            _ => return Err(UriError::Scheme(scheme.to_owned())),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, vhost) = match rest.split_once('/') {
            Some((authority, vhost)) => (authority, Some(vhost)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| UriError::Invalid {
                part: "host",
                value: hostport.to_owned(),
            })?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(port) => port.parse().map_err(|_| UriError::Invalid {
                part: "port",
                value: port.to_owned(),
            })?,
            None if tls => 5671,
            None => 5672,
        };
        let mut config = Config::default();
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            config.mechanism = SaslMechanism::Plain {
                username: percent_decode("user name", user)?,
                password: percent_decode("password", password)?,
            };
        }
        if let Some(vhost) = vhost {
            config.virtual_host = percent_decode("virtual host", vhost)?;
        }
        let mut uri = Self {
            tls,
            // The specification leaves an absent host to the client's
            // default, which is the local machine.
            host: match percent_decode("host", host)? {
                host if host.is_empty() => "localhost".to_owned(),
                host => host,
            },
            port,
            config,
            connection_timeout: None,
            tls_options: TlsOptions {
                verify_peer: true,
                ..TlsOptions::default()
            },
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode("query", name)?;
            let value = percent_decode("query", value)?;
            uri.apply(&name, value)?;
        }
        Ok(uri)
    }
}

impl AmqpUri {
    fn apply(&mut self, name: &str, value: String) -> Result<(), UriError> {
        match name {
            "heartbeat" => self.config.heartbeat = number(name, &value)?,
            "frame_max" => self.config.frame_max = number(name, &value)?,
            "channel_max" => self.config.channel_max = number(name, &value)?,
            "connection_timeout" => {
                self.connection_timeout = Some(Duration::from_millis(number(name, &value)?));
            }
            "auth_mechanism" => {
                let credentials = match &self.config.mechanism {
                    SaslMechanism::Plain { username, password }
                    | SaslMechanism::AmqPlain { username, password } => {
                        (username.clone(), password.clone())
                    }
                    _ => ("guest".to_owned(), "guest".to_owned()),
                };
                self.config.mechanism = match value.to_ascii_lowercase().as_str() {
                    "plain" => SaslMechanism::Plain {
                        username: credentials.0,
                        password: credentials.1,
                    },
                    "amqplain" => SaslMechanism::AmqPlain {
                        username: credentials.0,
                        password: credentials.1,
                    },
                    "external" => SaslMechanism::External,
                    _ => {
                        return Err(UriError::InvalidParameter {
                            name: name.to_owned(),
                            value,
                        })
                    }
                };
            }
            "cacertfile" => self.tls_options.ca_cert_file = Some(value),
            "certfile" => self.tls_options.cert_file = Some(value),
            "keyfile" => self.tls_options.key_file = Some(value),
            "server_name_indication" => self.tls_options.server_name = Some(value),
            "verify" => {
                self.tls_options.verify_peer = match value.as_str() {
                    "verify_peer" => true,
                    "verify_none" => false,
                    _ => {
                        return Err(UriError::InvalidParameter {
                            name: name.to_owned(),
                            value,
                        })
                    }
                };
            }
            other => return Err(UriError::UnknownParameter(other.to_owned())),
        }
        Ok(())
    }

    /// The address to connect to, `host:port` (IPv6 hosts bracketed).
    #[must_use]
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AmqpUri {
        text.parse()
            .unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn the_specification_examples() {
        // From RabbitMQ's URI specification.
        let cases = [
            (
                "amqp://user:pass@host:10000/vhost",
                "host",
                10000,
                "vhost",
                Some("user"),
            ),
            (
                "amqp://user%61:%61pass@ho%61st:10000/v%2fhost",
                "hoast",
                10000,
                "v/host",
                Some("usera"),
            ),
            ("amqp://", "localhost", 5672, "/", Some("guest")),
            ("amqp://:@/", "localhost", 5672, "", Some("")),
            ("amqp://user@", "localhost", 5672, "/", Some("user")),
            ("amqp://user:pass@", "localhost", 5672, "/", Some("user")),
            ("amqp://host", "host", 5672, "/", Some("guest")),
            ("amqp://:10000", "localhost", 10000, "/", None),
            ("amqp:///vhost", "localhost", 5672, "vhost", None),
            ("amqp://host/", "host", 5672, "", None),
            ("amqp://host/%2f", "host", 5672, "/", None),
            ("amqp://[::1]", "::1", 5672, "/", None),
        ];
        for (text, host, port, vhost, user) in cases {
            let uri = parse(text);
            assert_eq!((uri.host.as_str(), uri.port), (host, port), "{text}");
            assert_eq!(uri.config.virtual_host, vhost, "{text}");
            if let Some(user) = user {
                assert_eq!(uri.config.mechanism.username(), Some(user), "{text}");
            }
        }
        assert_eq!(parse("amqp://[::1]:5673").address(), "[::1]:5673");
    }

    #[test]
    fn amqps_defaults_to_5671_and_reads_tls_options() {
        let uri = parse(
            "amqps://host?cacertfile=/ca.pem&certfile=/c.pem&keyfile=/k.pem&verify=verify_none\
             &server_name_indication=broker.internal&auth_mechanism=external",
        );
        assert!(uri.tls);
        assert_eq!(uri.port, 5671);
        assert_eq!(
            uri.tls_options,
            TlsOptions {
                ca_cert_file: Some("/ca.pem".into()),
                cert_file: Some("/c.pem".into()),
                key_file: Some("/k.pem".into()),
                verify_peer: false,
                server_name: Some("broker.internal".into()),
            }
        );
        assert_eq!(uri.config.mechanism, SaslMechanism::External);
    }

    #[test]
    fn tuning_parameters_are_read_and_bad_ones_refused() {
        let uri =
            parse("amqp://h?heartbeat=5&frame_max=8192&channel_max=10&connection_timeout=1500");
        assert_eq!(
            (
                uri.config.heartbeat,
                uri.config.frame_max,
                uri.config.channel_max
            ),
            (5, 8192, 10)
        );
        assert_eq!(uri.connection_timeout, Some(Duration::from_millis(1500)));
        assert!(matches!(
            "amqp://h?heartbeat=x".parse::<AmqpUri>(),
            Err(UriError::InvalidParameter { .. })
        ));
        assert_eq!(
            "amqp://h?hearbeat=5".parse::<AmqpUri>().err(),
            Some(UriError::UnknownParameter("hearbeat".into()))
        );
        assert!(matches!(
            "http://h".parse::<AmqpUri>(),
            Err(UriError::Scheme(_))
        ));
        assert!(matches!(
            "amqp://h:99999".parse::<AmqpUri>(),
            Err(UriError::Invalid { part: "port", .. })
        ));
        assert!(matches!(
            "amqp://h/%zz".parse::<AmqpUri>(),
            Err(UriError::Invalid { .. })
        ));
        let amqplain = parse("amqp://u:p@h?auth_mechanism=amqplain");
        assert!(
            matches!(amqplain.config.mechanism, SaslMechanism::AmqPlain { ref username, .. } if username == "u")
        );
    }
}
