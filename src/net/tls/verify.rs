//! The certificate checks beyond rustls's own: the identity a peer's certificate must
//! have (`--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname`), and a client that
//! trusts any server certificate (auto-TLS peers, whose certificates are self-signed).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The Common Name of a certificate's subject, if it has one.
pub(super) fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_string)
}

/// What a verified client certificate must also say of its owner.
#[derive(Debug)]
pub(super) enum IdentityRule {
    /// This subject Common Name (`--peer-cert-allowed-cn`).
    CommonName(String),
    /// This host among its subject alternative names (`--peer-cert-allowed-hostname`).
    Hostname(String),
}

/// A client certificate verifier that also applies an [`IdentityRule`]: the chain is
/// checked first, the identity after.
#[derive(Debug)]
pub(super) struct AllowedIdentity {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) rule: IdentityRule,
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
pub(super) enum SubjectName {
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
pub(super) fn names_host(names: &[SubjectName], host: &str) -> bool {
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
pub(super) struct AnyServerCertificate {
    pub(super) provider: Arc<CryptoProvider>,
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
