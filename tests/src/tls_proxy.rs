//! A TLS-terminating proxy for tests: certificates made on the spot, TLS
//! on the client side, plain TCP to the broker, optionally requiring a
//! client certificate (as a broker set up for EXTERNAL authentication does).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// A certificate authority, a server certificate it signed for one name,
/// and a client certificate it signed.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The client certificate, PEM.
    pub client_cert_pem: String,
    /// The client's private key, PEM (PKCS #8).
    pub client_key_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
}

impl TestPki {
    /// Makes a fresh CA and certificates; the server's is valid for
    /// `server_name`.
    pub fn generate(server_name: &str) -> Result<Self, rcgen::Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "amqp-foundation test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let server_key = KeyPair::generate()?;
        let server =
            CertificateParams::new(vec![server_name.to_owned()])?.signed_by(&server_key, &ca)?;

        let client_key = KeyPair::generate()?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "amqp-foundation test client");
        let client = client_params.signed_by(&client_key, &ca)?;

        Ok(Self {
            ca_pem: ca.pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_der: ca.der().clone(),
            server_chain: vec![server.der().clone(), ca.der().clone()],
            server_key_der: server_key.serialize_der(),
        })
    }

    /// Writes the CA certificate, the client certificate and the client
    /// key to files (a fresh directory under the system's temporary one),
    /// returning their paths in that order, for a URL to name.
    pub fn write_files(&self) -> std::io::Result<(String, String, String)> {
        let directory = std::env::temp_dir().join(crate::unique("tls"));
        std::fs::create_dir_all(&directory)?;
        let write = |name: &str, contents: &str| -> std::io::Result<String> {
            let path = directory.join(name);
            std::fs::write(&path, contents)?;
            Ok(path.to_string_lossy().into_owned())
        };
        Ok((
            write("ca.pem", &self.ca_pem)?,
            write("client.pem", &self.client_cert_pem)?,
            write("client-key.pem", &self.client_key_pem)?,
        ))
    }

    fn server_config(&self, require_client_certificate: bool) -> Result<ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?;
        let builder = if require_client_certificate {
            let mut roots = RootCertStore::empty();
            roots
                .add(self.ca_der.clone())
                .map_err(|error| error.to_string())?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| error.to_string())?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        builder
            .with_single_cert(self.server_chain.clone(), key)
            .map_err(|error| error.to_string())
    }
}

/// A running TLS-terminating proxy in front of a plain TCP target.
pub struct TlsProxy {
    address: SocketAddr,
    client_certificates: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TlsProxy {
    /// Listens on an ephemeral loopback port; each TLS client is relayed
    /// to `target` in plain TCP.
    pub fn start(
        target: &str,
        pki: &TestPki,
        require_client_certificate: bool,
    ) -> io::Result<Self> {
        let config = Arc::new(
            pki.server_config(require_client_certificate)
                .map_err(io::Error::other)?,
        );
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let client_certificates = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&client_certificates);
        let target = target.to_owned();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (config, seen, target) =
                    (Arc::clone(&config), Arc::clone(&seen), target.clone());
                thread::spawn(move || {
                    let _ = relay(client, &target, config, &seen);
                });
            }
        });
        Ok(Self {
            address,
            client_certificates,
        })
    }

    /// Where TLS clients connect.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The DER of every client certificate presented so far.
    #[must_use]
    pub fn client_certificates(&self) -> Vec<Vec<u8>> {
        self.client_certificates
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }
}

/// Shuttles bytes both ways, polling each side briefly in turn.
fn relay(
    mut client: TcpStream,
    target: &str,
    config: Arc<ServerConfig>,
    seen: &Mutex<Vec<Vec<u8>>>,
) -> io::Result<()> {
    const POLL: Duration = Duration::from_millis(2);
    let mut server = TcpStream::connect(target)?;
    client.set_read_timeout(Some(POLL))?;
    server.set_read_timeout(Some(POLL))?;
    let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut recorded = false;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match tls.read_tls(&mut client) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
                loop {
                    match tls.reader().read(&mut buffer) {
                        Ok(0) => return Ok(()),
                        Ok(read) => server.write_all(&buffer[..read])?,
                        Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                        Err(error) => return Err(error),
                    }
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => return Err(error),
        }
        if !recorded && !tls.is_handshaking() {
            recorded = true;
            if let (Some(chain), Ok(mut seen)) = (tls.peer_certificates(), seen.lock()) {
                seen.extend(chain.iter().map(|certificate| certificate.to_vec()));
            }
        }
        match server.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => tls.writer().write_all(&buffer[..read])?,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => return Err(error),
        }
        while tls.wants_write() {
            tls.write_tls(&mut client)?;
        }
    }
}
