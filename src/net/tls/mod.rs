//! Transport security for the client and peer listeners, and for the connections a member
//! opens to its peers: rustls (ring provider) with etcd's semantics.
//!
//! # Design
//!
//! - [`TlsOptions`] is what the flags say, in the words of this module (it knows nothing of
//!   the server): a certificate and key, a trusted CA bundle, whether a client certificate is
//!   required, the Common Name or host a client certificate must have, revoked
//!   certificates, cipher suites, protocol versions.
//! - [`ServerTls`] turns the options into a `rustls::ServerConfig` and keeps it current:
//!   before each handshake it compares the files' modification stamps with those it built
//!   from and rebuilds when they changed, so an operator rotates certificates by replacing
//!   the files (etcd reloads on each handshake as well). A rebuild that fails (files half
//!   written) keeps the previous configuration and says so. Connections already open keep
//!   the keys they negotiated.
//! - [`Incoming`] is a listener's stream of accepted connections. For a TLS listener one
//!   task accepts TCP connections and starts a handshake task for each, with a timeout and
//!   a bound on handshakes in flight, so a slow or silent client holds nobody up; only
//!   connections whose handshake succeeded are yielded, so a refused client never ends the
//!   listener. Every refusal is logged on one line with the reason, rate-limited.
//! - [`ClientTls`] is the other side, for the peer transport: a connector for tonic's
//!   channel that dials TCP and runs the client handshake. Without a trusted CA it accepts
//!   any server certificate (what etcd does with `--peer-auto-tls`, whose certificates are
//!   self-signed); with one it verifies the chain and the host name of the URL.
//! - [`self_signed`] makes the certificate of `--auto-tls` and `--peer-auto-tls`.
//!
//! The files: this one (options, loading, building and reloading configurations, the
//! client connector, auto-TLS), `verify.rs` (the certificate checks rustls does not do
//! itself), `listener.rs` (accepting: handshakes, connections, the refusal log).
//!
//! A connection carries a [`ConnectionInfo`] (tonic hands it to each request as an
//! extension): when a verified client certificate was presented, its Common Name (the
//! user, with `--client-cert-auth`, as in etcd).
//!
//! # Errors
//!
//! Nothing a client sends may panic here: every handshake failure is an error value that
//! closes that one connection. Bad files at start are errors for the caller to report.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

mod listener;
mod verify;

use listener::RefusalLog;
pub(crate) use listener::{Connection, ConnectionInfo, Incoming};
use verify::{AllowedIdentity, AnyServerCertificate, IdentityRule};

/// What the TLS layer offers to negotiate: gRPC (HTTP/2), and HTTP/1.1 for the HTTP face.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A TLS protocol version, by etcd's names (`TLS1.2`, `TLS1.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// Parses etcd's spelling. TLS 1.0 and 1.1 are known names that rustls does not speak.
    pub fn parse(name: &str) -> Result<Self, TlsError> {
        match name {
            "TLS1.2" => Ok(TlsVersion::Tls12),
            "TLS1.3" => Ok(TlsVersion::Tls13),
            "TLS1.0" | "TLS1.1" => Err(TlsError::Config(format!(
                "{name} is not supported: oxcd speaks TLS1.2 and TLS1.3"
            ))),
            other => Err(TlsError::Config(format!(
                "unknown TLS version {other:?}: expected TLS1.2 or TLS1.3"
            ))),
        }
    }
}

/// What the flags say about one side's TLS (client or peer).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CAs a certificate of the other side must chain to. On a listener it makes a
    /// client certificate required, as in etcd; on a client it turns on verification of
    /// the server's certificate and host name.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require and verify a client certificate (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// The Common Name a client certificate must have (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// The host a client certificate must name among its subject alternative names
    /// (`--peer-cert-allowed-hostname`, `--client-cert-allowed-hostname`). At most one of
    /// this and `allowed_cn`, as in etcd.
    pub allowed_hostname: Option<String>,
    /// Revoked client certificates (`--client-crl-file`): a PEM file of CRLs issued by the
    /// trusted CAs. As in etcd, a certificate is refused if a CRL lists it; one no CRL
    /// speaks of is not.
    pub crl_file: Option<PathBuf>,
    /// TLS 1.2 cipher suites by their IANA names; empty means rustls's defaults.
    pub cipher_suites: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// A TLS set-up that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn file_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The certificate chain in a PEM file (at least one certificate).
fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certificates)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| file_error(path, error))
}

/// The CA certificates in a PEM bundle (at least one usable).
fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(path, format!("not a usable CA certificate: {error}")))?;
    }
    Ok(Arc::new(roots))
}

/// The certificate revocation lists in a PEM file (at least one).
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if crls.is_empty() {
        return Err(file_error(
            path,
            "no PEM certificate revocation list in the file",
        ));
    }
    Ok(crls)
}

/// The ring provider, limited to the chosen TLS 1.2 cipher suites. TLS 1.3 suites are not
/// configurable (as in Go, whose names etcd's `--cipher-suites` takes).
fn provider(options: &TlsOptions) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if options.cipher_suites.is_empty() {
        return Ok(Arc::new(provider));
    }
    if options.max_version < TlsVersion::Tls12 || options.min_version == TlsVersion::Tls13 {
        return Err(TlsError::Config(
            "--cipher-suites cannot be set when only TLS1.3 is enabled (TLS1.3 suites are \
             not configurable)"
                .into(),
        ));
    }
    let available = provider.cipher_suites.clone();
    let name_of = |suite: &rustls::SupportedCipherSuite| -> String {
        suite.suite().as_str().unwrap_or_default().to_string()
    };
    let mut chosen = Vec::new();
    for wanted in &options.cipher_suites {
        // Go also names the ChaCha20 suites without the trailing hash.
        let normalized = if wanted.ends_with("CHACHA20_POLY1305") {
            format!("{wanted}_SHA256")
        } else {
            wanted.clone()
        };
        let found = available
            .iter()
            .find(|suite| suite.tls13().is_none() && name_of(suite) == normalized);
        match found {
            Some(suite) => chosen.push(*suite),
            None => {
                let supported: Vec<String> = available
                    .iter()
                    .filter(|suite| suite.tls13().is_none())
                    .map(name_of)
                    .collect();
                return Err(TlsError::Config(format!(
                    "cipher suite {wanted:?} is not supported; supported: {}",
                    supported.join(", ")
                )));
            }
        }
    }
    chosen.extend(available.iter().filter(|suite| suite.tls13().is_some()));
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

fn versions(options: &TlsOptions) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    if options.min_version > options.max_version {
        return Err(TlsError::Config(format!(
            "--tls-min-version {:?} is above --tls-max-version {:?}",
            options.min_version, options.max_version
        )));
    }
    let mut versions = Vec::new();
    if options.min_version <= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if options.max_version >= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    Ok(versions)
}

fn build_server_config(options: &TlsOptions) -> Result<ServerConfig, TlsError> {
    let provider = provider(options)?;
    let certificates = load_certificates(&options.cert_file)?;
    let key = load_key(&options.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(options)?)?;
    let builder = match &options.trusted_ca_file {
        Some(ca) => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider);
            if let Some(crl_file) = &options.crl_file {
                verifier = verifier
                    .with_crls(load_crls(crl_file)?)
                    .allow_unknown_revocation_status();
            }
            let verifier = verifier
                .build()
                .map_err(|error| TlsError::Config(format!("client verifier: {error}")))?;
            let rule = match (&options.allowed_cn, &options.allowed_hostname) {
                (Some(_), Some(_)) => {
                    return Err(TlsError::Config(
                        "an allowed Common Name and an allowed hostname cannot both be set".into(),
                    ))
                }
                (Some(name), None) => Some(IdentityRule::CommonName(name.clone())),
                (None, Some(host)) => Some(IdentityRule::Hostname(host.clone())),
                (None, None) => None,
            };
            let verifier: Arc<dyn ClientCertVerifier> = match rule {
                Some(rule) => Arc::new(AllowedIdentity {
                    inner: verifier,
                    rule,
                }),
                None => verifier,
            };
            builder.with_client_cert_verifier(verifier)
        }
        None if options.client_cert_auth => {
            return Err(TlsError::Config(
                "client certificate authentication needs a trusted CA file".into(),
            ))
        }
        None if options.allowed_cn.is_some() || options.allowed_hostname.is_some() => {
            return Err(TlsError::Config(
                "an allowed certificate Common Name or hostname needs a trusted CA file".into(),
            ))
        }
        None if options.crl_file.is_some() => {
            return Err(TlsError::Config(
                "a certificate revocation list needs a trusted CA file".into(),
            ))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certificates, key)?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client's configuration; with empty `cert_file` and `key_file` paths, one that
/// presents no certificate (a server that does not ask for one, as etcdctl with `--cacert`
/// alone).
fn build_client_config(options: &TlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = provider(options)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(options)?)?;
    let builder = match &options.trusted_ca_file {
        Some(ca) => builder.with_root_certificates(load_roots(ca)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate { provider })),
    };
    let mut config = if options.cert_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let certificates = load_certificates(&options.cert_file)?;
        let key = load_key(&options.key_file)?;
        builder.with_client_auth_cert(certificates, key)?
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What identifies one version of a file: modification time, length and inode, so that a
/// file replaced by a rename is noticed even within the clock's granularity.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

/// A configuration built from files, rebuilt when the files change.
struct Reloading<T> {
    options: TlsOptions,
    build: fn(&TlsOptions) -> Result<T, TlsError>,
    /// The stamps of the files the current configuration was built from, and it. A mutex
    /// rather than a lock-free swap: it is held for a few `stat` calls per handshake, and a
    /// rebuild (rare) should happen once, not in every handshake that notices the change.
    current: Mutex<(Vec<Stamp>, Arc<T>)>,
}

impl<T> Reloading<T> {
    fn new(
        options: TlsOptions,
        build: fn(&TlsOptions) -> Result<T, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamps = Self::stamps_of(&options);
        let built = build(&options)?;
        Ok(Reloading {
            options,
            build,
            current: Mutex::new((stamps, Arc::new(built))),
        })
    }

    fn stamps_of(options: &TlsOptions) -> Vec<Stamp> {
        let mut paths = vec![options.cert_file.as_path(), options.key_file.as_path()];
        paths.extend(options.trusted_ca_file.as_deref());
        paths.extend(options.crl_file.as_deref());
        paths.into_iter().map(stamp).collect()
    }

    /// The configuration for the next handshake: rebuilt first if a file changed. A
    /// rebuild that fails keeps the previous configuration (the files may be mid-rotation)
    /// and is tried again at the next handshake.
    fn get(&self) -> Arc<T> {
        let stamps = Self::stamps_of(&self.options);
        let mut current = self
            .current
            .lock()
            .expect("TLS configuration lock poisoned");
        if stamps != current.0 {
            match (self.build)(&self.options) {
                Ok(built) => {
                    tracing::info!(cert = %self.options.cert_file.display(), "reloaded TLS certificates");
                    *current = (stamps, Arc::new(built));
                }
                Err(error) => {
                    tracing::warn!(%error, "TLS files changed but cannot be loaded; keeping the previous certificates");
                }
            }
        }
        current.1.clone()
    }
}

/// The TLS side of a listener: its configuration, kept current, and its refusal log.
pub(crate) struct ServerTls {
    config: Reloading<ServerConfig>,
    refusals: RefusalLog,
}

impl ServerTls {
    /// Loads the files named by `options`; an error here is a start-up error.
    pub(crate) fn new(options: TlsOptions) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(ServerTls {
            config: Reloading::new(options, build_server_config)?,
            refusals: RefusalLog::default(),
        }))
    }
}

/// The client side of TLS, for connections to peers: a connector per connection, from the
/// configuration as it is on disk now.
pub struct ClientTls {
    config: Reloading<ClientConfig>,
}

impl ClientTls {
    pub fn new(options: TlsOptions) -> Result<Self, TlsError> {
        Ok(ClientTls {
            config: Reloading::new(options, build_client_config)?,
        })
    }

    /// A connector for tonic's `Endpoint::connect_with_connector`.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector {
            config: self.config.get(),
        }
    }
}

/// Dials a URI's host and port and runs the client handshake, naming the host as the
/// server (the name its certificate must carry when it is verified).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl tower_service::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let invalid = |what: &str| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{what} in {uri}"))
            };
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let server_name =
                ServerName::try_from(host.clone()).map_err(|_| invalid("not a server name"))?;
            let socket = TcpStream::connect((host.as_str(), port)).await?;
            socket.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, socket)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Makes a self-signed certificate for `hosts` in `dir` (`cert.pem`, `key.pem`) valid for
/// `validity_years`, unless both files are there already (then they are used as they are,
/// as etcd does). Returns the certificate and key paths.
pub(crate) fn self_signed(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    if validity_years == 0 {
        return Err(TlsError::Config(
            "--self-signed-cert-validity must be at least 1 (year)".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|error| file_error(dir, error))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    // A little before now, for members whose clocks run slightly behind this one.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * i64::from(validity_years));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certificate.pem()).map_err(|error| file_error(&cert_path, error))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

/// Writes a file only its owner may read (a private key).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|error| file_error(path, error))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|error| file_error(path, error))
}

#[cfg(test)]
mod tests;
