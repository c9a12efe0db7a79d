//! Transport security for the client and peer listeners, and for the connections a member
//! opens to its peers: rustls (ring provider) with etcd's semantics.
//!
//! # Design
//!
//! - [`TlsOptions`] is what the flags say, in the words of this module (it knows nothing of
//!   the server): a certificate and key, a trusted CA bundle, whether a client certificate is
//!   required, the Common Name a peer must have, cipher suites, protocol versions.
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
//! A connection carries a [`ConnectionInfo`] (tonic hands it to each request as an
//! extension): the remote address and, when a verified client certificate was presented,
//! its Common Name (the user, with `--client-cert-auth`, as in etcd).
//!
//! # Errors
//!
//! Nothing a client sends may panic here: every handshake failure is an error value that
//! closes that one connection. Bad files at start are errors for the caller to report.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_core::Stream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::{Connected, TcpIncoming};

/// How long a client has to complete its handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight per listener at most; beyond it, accepting waits for one to end.
const HANDSHAKES_IN_FLIGHT_MAX: usize = 1_024;
/// Connections handshaken and not yet taken by the HTTP/2 server.
const READY_CONNECTIONS_MAX: usize = 64;
/// A failed `accept` (out of file descriptors) is retried after this pause, not at once.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Refusals logged per window at most; the rest are counted and reported with the next.
const REFUSALS_LOGGED_PER_WINDOW: u32 = 10;
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);
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

/// The Common Name of a certificate's subject, if it has one.
pub(crate) fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_string)
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

fn build_client_config(options: &TlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = provider(options)?;
    let certificates = load_certificates(&options.cert_file)?;
    let key = load_key(&options.key_file)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(options)?)?;
    let builder = match &options.trusted_ca_file {
        Some(ca) => builder.with_root_certificates(load_roots(ca)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate { provider })),
    };
    let mut config = builder.with_client_auth_cert(certificates, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What a verified client certificate must also say of its owner.
#[derive(Debug)]
enum IdentityRule {
    /// This subject Common Name (`--peer-cert-allowed-cn`).
    CommonName(String),
    /// This host among its subject alternative names (`--peer-cert-allowed-hostname`).
    Hostname(String),
}

/// A client certificate verifier that also applies an [`IdentityRule`]: the chain is
/// checked first, the identity after.
#[derive(Debug)]
struct AllowedIdentity {
    inner: Arc<dyn ClientCertVerifier>,
    rule: IdentityRule,
}

/// Why a verified certificate was still refused.
#[derive(Debug)]
struct IdentityNotAllowed(String);

impl fmt::Display for IdentityNotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityNotAllowed {}

/// A name a certificate's subject alternative names give.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SubjectName {
    Dns(String),
    Ip(IpAddr),
}

/// The DNS names and IP addresses among a certificate's subject alternative names.
fn subject_names(certificate: &CertificateDer<'_>) -> Vec<SubjectName> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(names)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(SubjectName::Dns(dns.to_ascii_lowercase())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            }
            .map(SubjectName::Ip),
            _ => None,
        })
        .collect()
}

/// Whether `names` include `host`: an IP address equal to it, or a DNS name equal to it
/// (case aside) or a wildcard matching its first label (`*.example.com`), as Go's
/// `VerifyHostname`, which etcd uses, decides.
fn names_host(names: &[SubjectName], host: &str) -> bool {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return names.contains(&SubjectName::Ip(ip));
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|name| match name {
        SubjectName::Dns(pattern) => match pattern.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
            None => pattern.trim_end_matches('.') == host,
        },
        SubjectName::Ip(_) => false,
    })
}

impl AllowedIdentity {
    /// `Err` with the reason when `certificate` does not satisfy the rule.
    fn check(&self, certificate: &CertificateDer<'_>) -> Result<(), String> {
        match &self.rule {
            IdentityRule::CommonName(allowed) => {
                let found = common_name(certificate);
                if found.as_deref() == Some(allowed.as_str()) {
                    return Ok(());
                }
                Err(format!(
                    "certificate Common Name {:?} is not the allowed {allowed:?}",
                    found.unwrap_or_default()
                ))
            }
            IdentityRule::Hostname(allowed) => {
                let names = subject_names(certificate);
                if names_host(&names, allowed) {
                    return Ok(());
                }
                Err(format!(
                    "certificate does not name the allowed host {allowed:?} (it names {names:?})"
                ))
            }
        }
    }
}

impl ClientCertVerifier for AllowedIdentity {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match self.check(end_entity) {
            Ok(()) => Ok(verified),
            Err(reason) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(IdentityNotAllowed(reason))),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate, still checking that the server holds its key: what a
/// client without a trusted CA does (`--peer-auto-tls`: every member's certificate is
/// self-signed, so there is nothing to verify it against; the channel is encrypted).
#[derive(Debug)]
struct AnyServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCertificate {
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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

/// Who is on the other end of an accepted connection; tonic adds it to every request's
/// extensions.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionInfo {
    /// The Common Name of the client's verified certificate (TLS listeners that asked for
    /// one only).
    pub common_name: Option<Arc<str>>,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, plaintext or TLS, with what is known of its client.
pub(crate) struct Connection {
    transport: Transport,
    info: ConnectionInfo,
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_read(context, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_write(context, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_write_vectored(context, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(socket) => socket.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_flush(context),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_shutdown(context),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

/// The accepted connections of one listener: plaintext as accepted, or TLS once the
/// handshake succeeded.
pub(crate) enum Incoming {
    Plain(TcpIncoming),
    Tls {
        /// Handshaken connections, from the handshake tasks. Bounded: if the HTTP/2 server
        /// stops taking them, handshakes wait rather than pile up.
        ready: mpsc::Receiver<Connection>,
        acceptor: tokio::task::JoinHandle<()>,
    },
}

impl Incoming {
    /// Accepts on `listener`, with TLS when `tls` is given.
    pub(crate) fn new(listener: TcpListener, tls: Option<Arc<ServerTls>>) -> Self {
        match tls {
            None => Incoming::Plain(TcpIncoming::from(listener).with_nodelay(Some(true))),
            Some(tls) => {
                let (sender, ready) = mpsc::channel(READY_CONNECTIONS_MAX);
                let acceptor = tokio::spawn(accept_loop(listener, tls, sender));
                Incoming::Tls { ready, acceptor }
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // The listener stops with the server that reads it: the accept task owns the
        // socket, so ending it closes the port.
        if let Incoming::Tls { acceptor, .. } = self {
            acceptor.abort();
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Incoming::Plain(tcp) => Pin::new(tcp).poll_next(context).map(|accepted| {
                accepted.map(|socket| {
                    socket.map(|socket| Connection {
                        info: ConnectionInfo::default(),
                        transport: Transport::Plain(socket),
                    })
                })
            }),
            Incoming::Tls { ready, .. } => ready.poll_recv(context).map(|next| next.map(Ok)),
        }
    }
}

/// Accepts TCP connections and hands each to a handshake task of its own, so that one
/// slow client never delays the next.
async fn accept_loop(listener: TcpListener, tls: Arc<ServerTls>, ready: mpsc::Sender<Connection>) {
    let local = listener.local_addr().ok();
    // Bounds the handshakes in flight: a flood of clients that never finish their
    // handshake costs at most this many tasks, each ended by the timeout.
    let in_flight = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (socket, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, ?local, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let tls = tls.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(&tls, socket).await {
                Ok(connection) => {
                    let _ = ready.send(connection).await;
                }
                Err(reason) => tls.refusals.refused(remote, local, &reason),
            }
        });
    }
}

/// Runs the server handshake on `socket` with the current configuration; `Err` is the
/// reason, in words, for the log.
async fn handshake(tls: &ServerTls, socket: TcpStream) -> Result<Connection, String> {
    let _ = socket.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.get());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(describe(&error)),
        Err(_) => return Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
    };
    let common_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(common_name)
        .map(Arc::from);
    Ok(Connection {
        transport: Transport::Tls(Box::new(stream)),
        info: ConnectionInfo { common_name },
    })
}

/// A handshake error in words an operator can act on.
fn describe(error: &io::Error) -> String {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            "the client does not speak TLS (a plaintext client on a TLS port?)".to_string()
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            "the client presented no certificate and one is required".to_string()
        }
        Some(rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown),
        )) => format!(
            "the client refused this server's certificate (alert {alert:?}): it does not \
             trust its CA, or the certificate does not name the address the client dialled"
        ),
        // Our own reasons (a Common Name not allowed) read better through their Display.
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(reason))) => {
            format!("invalid peer certificate: {reason}")
        }
        Some(tls_error) => tls_error.to_string(),
        None => error.to_string(),
    }
}

/// Logs refused handshakes, at most `REFUSALS_LOGGED_PER_WINDOW` per window: a client
/// retrying in a loop must not flood the log. The rest are counted and the count is
/// reported with the next line logged.
#[derive(Default)]
struct RefusalLog {
    /// Window start, lines logged in it, refusals not logged since the last line. A mutex:
    /// taken once per refused handshake, for a few arithmetic operations.
    state: Mutex<Option<(Instant, u32, u64)>>,
}

impl RefusalLog {
    fn refused(&self, remote: SocketAddr, local: Option<SocketAddr>, reason: &str) {
        let mut state = self.state.lock().expect("refusal log lock poisoned");
        let now = Instant::now();
        let (start, logged, suppressed) = state.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= REFUSAL_LOG_WINDOW {
            *start = now;
            *logged = 0;
        }
        if *logged >= REFUSALS_LOGGED_PER_WINDOW {
            *suppressed += 1;
            return;
        }
        *logged += 1;
        let not_logged = std::mem::take(suppressed);
        drop(state);
        let local = local.map(|address| address.to_string()).unwrap_or_default();
        if not_logged > 0 {
            tracing::warn!(
                "refused a TLS connection from {remote} on {local}: {reason} ({not_logged} more refused and not logged before it)"
            );
        } else {
            tracing::warn!("refused a TLS connection from {remote} on {local}: {reason}");
        }
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
mod tests {
    use super::*;

    /// A CA that signs certificates into a temporary directory.
    struct Authority {
        params: rcgen::CertificateParams,
        key: rcgen::KeyPair,
        dir: tempfile::TempDir,
    }

    impl Authority {
        fn new(name: &str) -> Authority {
            let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            let key = rcgen::KeyPair::generate().expect("CA key");
            let certificate = params.self_signed(&key).expect("CA certificate");
            let dir = tempfile::tempdir().expect("a temp dir");
            std::fs::write(dir.path().join("ca.pem"), certificate.pem()).expect("writing");
            Authority { params, key, dir }
        }

        fn ca_file(&self) -> PathBuf {
            self.dir.path().join("ca.pem")
        }

        /// Signs a certificate for `common_name` valid for 127.0.0.1; returns its files.
        fn sign(&self, common_name: &str) -> (PathBuf, PathBuf) {
            self.sign_serial(common_name, 1)
        }

        fn sign_serial(&self, common_name: &str, serial: u64) -> (PathBuf, PathBuf) {
            let mut params =
                rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
            params.serial_number = Some(rcgen::SerialNumber::from(serial));
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
            let key = rcgen::KeyPair::generate().expect("key");
            let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
            let certificate = params.signed_by(&key, &issuer).expect("signing");
            let cert_file = self.dir.path().join(format!("{common_name}.pem"));
            let key_file = self.dir.path().join(format!("{common_name}-key.pem"));
            std::fs::write(&cert_file, certificate.pem()).expect("writing");
            std::fs::write(&key_file, key.serialize_pem()).expect("writing");
            (cert_file, key_file)
        }

        /// A CRL revoking the certificates with `serials`; returns its file.
        fn revoke(&self, serials: &[u64]) -> PathBuf {
            let now = time::OffsetDateTime::now_utc();
            let params = rcgen::CertificateRevocationListParams {
                this_update: now - time::Duration::hours(1),
                next_update: now + time::Duration::days(1),
                crl_number: rcgen::SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: serials
                    .iter()
                    .map(|serial| rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from(*serial),
                        revocation_time: now - time::Duration::minutes(1),
                        reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            };
            let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
            let crl = params.signed_by(&issuer).expect("signing the CRL");
            let path = self.dir.path().join("revoked.crl");
            std::fs::write(&path, crl.pem().expect("PEM")).expect("writing");
            path
        }
    }

    fn options(cert: (PathBuf, PathBuf), ca: Option<PathBuf>) -> TlsOptions {
        TlsOptions {
            cert_file: cert.0,
            key_file: cert.1,
            trusted_ca_file: ca,
            client_cert_auth: false,
            allowed_cn: None,
            allowed_hostname: None,
            crl_file: None,
            cipher_suites: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
        }
    }

    /// Dials `address` with `client`; the connection stays open while the result lives.
    async fn dial(
        client: &ClientTls,
        address: SocketAddr,
    ) -> io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
        use tower_service::Service;
        let uri: tonic::codegen::http::Uri = format!("https://{address}").parse().expect("uri");
        client.connector().call(uri).await
    }

    async fn next(incoming: &mut Incoming) -> Connection {
        let next = std::future::poll_fn(|context| Pin::new(&mut *incoming).poll_next(context));
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("a connection within 5 s")
            .expect("the listener goes on")
            .expect("a handshaken connection")
    }

    /// Asserts that no other connection comes through (the refused ones were dialled
    /// before, and their handshakes have had time to end).
    async fn no_more(incoming: &mut Incoming) {
        let next = std::future::poll_fn(|context| Pin::new(&mut *incoming).poll_next(context));
        let more = tokio::time::timeout(Duration::from_millis(300), next).await;
        assert!(more.is_err(), "a refused connection came through");
    }

    #[tokio::test]
    async fn only_allowed_verified_clients_come_through_and_neither_refusals_nor_silence_stop_the_listener(
    ) {
        let authority = Authority::new("test CA");
        let stranger = Authority::new("another CA");
        let mut server_options = options(authority.sign("server"), Some(authority.ca_file()));
        server_options.client_cert_auth = true;
        server_options.allowed_cn = Some("m1".into());
        let server = ServerTls::new(server_options).expect("server TLS");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut incoming = Incoming::new(listener, Some(server));
        // A client that connects and never says a word holds only its own handshake.
        let _silent = TcpStream::connect(address).await.expect("connect");

        let allowed = ClientTls::new(options(authority.sign("m1"), Some(authority.ca_file())))
            .expect("client TLS");
        let _first = dial(&allowed, address).await.expect("handshake");
        let accepted = next(&mut incoming).await;
        assert_eq!(accepted.info.common_name.as_deref(), Some("m1"));

        // Refused: a certificate of the right CA with another name, one of an unknown CA,
        // and a client that does not speak TLS at all.
        let other_name = ClientTls::new(options(authority.sign("m2"), Some(authority.ca_file())))
            .expect("client TLS");
        let _ = dial(&other_name, address).await;
        let unknown_ca = ClientTls::new(options(stranger.sign("m1"), Some(authority.ca_file())))
            .expect("client TLS");
        let _ = dial(&unknown_ca, address).await;
        let mut plain = TcpStream::connect(address).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut plain, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("write");

        // The next connection to come through is the next allowed one.
        let _second = dial(&allowed, address).await.expect("handshake");
        let accepted = next(&mut incoming).await;
        assert_eq!(accepted.info.common_name.as_deref(), Some("m1"));
        no_more(&mut incoming).await;
    }

    #[test]
    fn hostnames_match_like_go() {
        let names = vec![
            SubjectName::Dns("etcd-0.example.com".into()),
            SubjectName::Dns("*.peers.example.com".into()),
            SubjectName::Ip("127.0.0.1".parse().unwrap()),
            SubjectName::Ip("::1".parse().unwrap()),
        ];
        let table = [
            ("etcd-0.example.com", true),
            ("ETCD-0.example.com.", true),
            ("etcd-1.example.com", false),
            ("m1.peers.example.com", true),
            ("peers.example.com", false),
            ("a.m1.peers.example.com", false),
            ("127.0.0.1", true),
            ("[::1]", true),
            ("127.0.0.2", false),
            ("", false),
        ];
        for (host, want) in table {
            assert_eq!(names_host(&names, host), want, "host {host:?}");
        }
    }

    #[tokio::test]
    async fn an_allowed_hostname_admits_only_certificates_naming_it() {
        let authority = Authority::new("test CA");
        let client = ClientTls::new(options(authority.sign("m1"), Some(authority.ca_file())))
            .expect("client TLS");
        for (allowed, admitted) in [("127.0.0.1", true), ("10.0.0.1", false)] {
            let mut server_options = options(authority.sign("server"), Some(authority.ca_file()));
            server_options.allowed_hostname = Some(allowed.into());
            let server = ServerTls::new(server_options).expect("server TLS");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let mut incoming = Incoming::new(listener, Some(server));
            let _connection = dial(&client, address).await;
            if admitted {
                next(&mut incoming).await;
            } else {
                no_more(&mut incoming).await;
            }
        }
        let mut both = options(authority.sign("server"), Some(authority.ca_file()));
        both.allowed_cn = Some("m1".into());
        both.allowed_hostname = Some("127.0.0.1".into());
        assert!(build_server_config(&both).is_err());
    }

    #[tokio::test]
    async fn a_revoked_client_certificate_is_refused_and_others_pass() {
        let authority = Authority::new("test CA");
        let mut server_options = options(authority.sign("server"), Some(authority.ca_file()));
        server_options.crl_file = Some(authority.revoke(&[66]));
        let server = ServerTls::new(server_options).expect("server TLS");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut incoming = Incoming::new(listener, Some(server));
        let revoked = ClientTls::new(options(
            authority.sign_serial("revoked", 66),
            Some(authority.ca_file()),
        ))
        .expect("client TLS");
        let _ = dial(&revoked, address).await;
        let valid = ClientTls::new(options(
            authority.sign_serial("valid", 67),
            Some(authority.ca_file()),
        ))
        .expect("client TLS");
        let _valid = dial(&valid, address).await.expect("handshake");
        let accepted = next(&mut incoming).await;
        assert_eq!(accepted.info.common_name.as_deref(), Some("valid"));
        no_more(&mut incoming).await;
    }

    #[test]
    fn a_configuration_follows_its_files_and_survives_a_bad_rewrite() {
        let authority = Authority::new("test CA");
        let (cert, key) = authority.sign("before");
        let reloading = Reloading::new(
            options((cert.clone(), key.clone()), None),
            build_server_config,
        )
        .expect("loads");
        let first = reloading.get();
        assert!(
            Arc::ptr_eq(&first, &reloading.get()),
            "unchanged files, same configuration"
        );
        // A half-written certificate: the previous configuration stays.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").expect("writing");
        assert!(Arc::ptr_eq(&first, &reloading.get()));
        // The new pair in place: a new configuration.
        let (new_cert, new_key) = authority.sign("after");
        std::fs::rename(new_cert, &cert).expect("rename");
        std::fs::rename(new_key, &key).expect("rename");
        assert!(!Arc::ptr_eq(&first, &reloading.get()));
    }

    #[test]
    fn versions_and_cipher_suites_by_etcd_names() {
        assert_eq!(TlsVersion::parse("TLS1.3").ok(), Some(TlsVersion::Tls13));
        assert!(TlsVersion::parse("TLS1.1").is_err());
        assert!(TlsVersion::parse("tls12").is_err());
        let authority = Authority::new("test CA");
        let mut options = options(authority.sign("server"), None);
        options.cipher_suites = vec![
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into(),
        ];
        let chosen = provider(&options).expect("known suites");
        let tls12: Vec<_> = chosen
            .cipher_suites
            .iter()
            .filter(|suite| suite.tls13().is_none())
            .collect();
        assert_eq!(tls12.len(), 2);
        assert!(build_server_config(&options).is_ok());
        options.cipher_suites = vec!["TLS_RSA_WITH_3DES_EDE_CBC_SHA".into()];
        let error = provider(&options).expect_err("unsupported suite");
        assert!(error.to_string().contains("is not supported"), "{error}");
        options.cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()];
        options.min_version = TlsVersion::Tls13;
        assert!(provider(&options).is_err(), "suites with TLS1.3 only");
        options.cipher_suites.clear();
        options.max_version = TlsVersion::Tls12;
        assert!(versions(&options).is_err(), "min above max");
    }

    #[test]
    fn auto_tls_makes_a_pair_once_and_keeps_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let fixtures = dir.path().join("fixtures/client");
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let (cert, key) = self_signed(&fixtures, &hosts, 1).expect("generated");
        let first = std::fs::read(&cert).expect("certificate");
        assert!(build_server_config(&options((cert.clone(), key.clone()), None)).is_ok());
        self_signed(&fixtures, &hosts, 1).expect("reused");
        assert_eq!(std::fs::read(&cert).expect("certificate"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(self_signed(&dir.path().join("other"), &hosts, 0).is_err());
    }

    #[test]
    fn missing_and_malformed_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let missing = dir.path().join("missing.pem");
        let error = build_server_config(&options((missing.clone(), missing.clone()), None))
            .expect_err("missing files");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not PEM").expect("writing");
        let error = build_server_config(&options((garbage.clone(), garbage), None))
            .expect_err("no certificate");
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
    }
}
