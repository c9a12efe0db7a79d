//! The TLS layer against real loopback connections and real files.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tokio::net::{TcpListener, TcpStream};

use super::verify::{names_host, SubjectName};
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
