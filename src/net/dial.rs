//! How the command-line clients (`oxctl`, `oxbench`) reach an endpoint: plaintext, or TLS
//! with a client certificate, with etcdctl's flags (`--cacert`, `--cert`, `--key`,
//! `--insecure-skip-tls-verify`).

use std::path::PathBuf;
use std::sync::Arc;

use tonic::transport::Channel;

use super::tls::{ClientTls, TlsOptions, TlsVersion};

/// Plaintext, or TLS.
#[derive(Clone)]
pub enum Dialer {
    Plain,
    Tls(Arc<ClientTls>),
}

impl Dialer {
    /// The dialer etcdctl's TLS flags ask for: plaintext without any; TLS verifying the
    /// server against `cacert` (or not at all, with `insecure_skip_verify`), presenting the
    /// client certificate `cert` and `key` when given.
    pub fn from_flags(
        cacert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        insecure_skip_verify: bool,
    ) -> Result<Dialer, String> {
        let (cert_file, key_file) = match (cert, key) {
            (None, None) if cacert.is_none() && !insecure_skip_verify => return Ok(Dialer::Plain),
            (Some(cert), Some(key)) => (cert, key),
            // Without a client certificate: empty paths.
            (None, None) => (PathBuf::new(), PathBuf::new()),
            _ => return Err("--cert and --key go together".into()),
        };
        if cacert.is_none() && !insecure_skip_verify {
            return Err("TLS needs --cacert or --insecure-skip-tls-verify".into());
        }
        let tls = ClientTls::new(TlsOptions {
            cert_file,
            key_file,
            // Without a CA, the server's certificate is not verified.
            trusted_ca_file: cacert,
            client_cert_auth: false,
            allowed_cn: None,
            allowed_hostname: None,
            crl_file: None,
            cipher_suites: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
        })
        .map_err(|error| error.to_string())?;
        Ok(Dialer::Tls(Arc::new(tls)))
    }

    /// A connected channel to `endpoint` (`host:port`).
    pub async fn connect(&self, endpoint: &str) -> Result<Channel, String> {
        let failed = |error: tonic::transport::Error| {
            let mut reason = format!("cannot connect to {endpoint}: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                reason = format!("{reason}: {cause}");
                source = cause.source();
            }
            reason
        };
        match self {
            Dialer::Plain => Channel::from_shared(format!("http://{endpoint}"))
                .map_err(|error| error.to_string())?
                .connect()
                .await
                .map_err(failed),
            Dialer::Tls(tls) => Channel::from_shared(format!("https://{endpoint}"))
                .map_err(|error| error.to_string())?
                .connect_with_connector(tls.connector())
                .await
                .map_err(failed),
        }
    }
}
