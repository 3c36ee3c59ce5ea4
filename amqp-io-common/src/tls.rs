//! TLS settings (the `tls` feature): the rustls client configuration an
//! `amqps://` URL asks for.

use std::sync::Arc;

use amqp_proto::uri::TlsOptions;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// How to speak TLS to the broker: a rustls configuration and the name
/// to send in SNI and check the certificate against.
///
/// [`TlsSettings::from_options`] builds one from a URL's TLS options;
/// applications with their own rustls setup (pinned roots, a custom
/// verifier, client certificates from a keystore) give their own
/// [`ClientConfig`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TlsSettings {
    /// The rustls client configuration.
    pub config: Arc<ClientConfig>,
    /// The server's name, for SNI and certificate verification.
    pub server_name: String,
}

impl TlsSettings {
    /// Settings from an explicit configuration.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use amqp_io_common::{ConnectOptions, TlsSettings};
    ///
    /// // A configuration of the application's own making.
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    /// let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
    ///     .with_safe_default_protocol_versions()
    ///     .expect("TLS 1.2 and 1.3")
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let mut options = ConnectOptions::from_url("amqp://broker.example:5671")?;
    /// options.tls = Some(TlsSettings::new(Arc::new(config), "broker.example"));
    /// # Ok::<(), amqp_io_common::Error>(())
    /// ```
    #[must_use]
    pub fn new(config: Arc<ClientConfig>, server_name: impl Into<String>) -> Self {
        Self {
            config,
            server_name: server_name.into(),
        }
    }

    /// The settings for connecting to `address`: its own server name when
    /// it has one (a node of a cluster with a certificate of its own).
    ///
    /// ```no_run
    /// # let settings: amqp_io_common::TlsSettings = todo!();
    /// use amqp_io_common::Address;
    ///
    /// let node = Address::new("10.0.0.2", 5671).with_server_name("rabbit-2.internal");
    /// assert_eq!(settings.for_address(&node).server_name, "rabbit-2.internal");
    /// ```
    #[must_use]
    pub fn for_address(&self, address: &crate::Address) -> Self {
        match &address.server_name {
            Some(name) => Self::new(Arc::clone(&self.config), name.clone()),
            None => self.clone(),
        }
    }

    /// Settings as an `amqps://` URL's query asks: trust `cacertfile` (or
    /// the system's roots), present `certfile`/`keyfile` (for EXTERNAL
    /// authentication), skip verification for `verify=verify_none`, and
    /// name `server_name_indication` (or `host`) in SNI.
    ///
    /// ```no_run
    /// use amqp_proto::uri::AmqpUri;
    /// use amqp_io_common::TlsSettings;
    ///
    /// let uri: AmqpUri = "amqps://broker.example/%2f?cacertfile=/etc/ssl/ca.pem".parse()?;
    /// let settings = TlsSettings::from_options(&uri.tls_options, &uri.host)?;
    /// assert_eq!(settings.server_name, "broker.example");
    /// # Ok::<(), amqp_io_common::Error>(())
    /// ```
    pub fn from_options(options: &TlsOptions, host: &str) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::Tls(error.to_string()))?;
        let builder = if options.verify_peer {
            builder.with_root_certificates(roots(options.ca_cert_file.as_deref())?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        };
        let config = match (&options.cert_file, &options.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let chain = certificates(cert_file)?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|error| Error::Tls(format!("cannot read key {key_file}: {error}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| Error::Tls(error.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::Tls(
                    "certfile and keyfile must be given together".into(),
                ))
            }
        };
        let server_name = options
            .server_name
            .clone()
            .unwrap_or_else(|| host.to_owned());
        Ok(Self::new(Arc::new(config), server_name))
    }
}

fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let read_error = |error: &dyn std::fmt::Display| {
        Error::Tls(format!("cannot read certificates from {path}: {error}"))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| read_error(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read_error(&error))?;
    if certificates.is_empty() {
        return Err(read_error(&"no certificate in the file"));
    }
    Ok(certificates)
}

fn roots(ca_cert_file: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_cert_file {
        Some(path) => {
            for certificate in certificates(path)? {
                roots.add(certificate).map_err(|error| {
                    Error::Tls(format!("bad CA certificate in {path}: {error}"))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(Error::Tls(
                    "no system root certificates found; give cacertfile".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// `verify=verify_none`: any certificate is accepted, signatures are still
/// checked so the handshake itself stays sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
