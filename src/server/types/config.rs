//! The member's configuration: etcd's flag names and defaults, so that a command line written
//! for etcd starts oxcd unchanged. Every `--foo-bar` flag can also be set with the environment
//! variable `OXCD_FOO_BAR` (etcd's convention with our prefix); a flag wins over the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The etcd API level oxcd implements. Clients (Kubernetes, Cilium) gate features on the
/// version in `Maintenance.Status`, so it reports the etcd release whose behaviour it matches.
pub const ETCD_API_VERSION: &str = "3.4.23";

/// The cluster version oxcd reports (`/version`'s `etcdcluster`): the API level's
/// major.minor, as etcd reports a decided cluster version. etcd 3.4 clients (Patroni among
/// them) pick the `/v3/` API from it.
#[cfg_attr(madsim, allow(dead_code))]
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

/// etcd's default request limit: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1_572_864;
/// etcd's default backend quota when `--quota-backend-bytes` is 0: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "oxcd",
    version,
    about = "oxcd: an etcd-compatible, distributed, reliable key-value store"
)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "OXCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory. Defaults to `${name}.oxcd`.
    #[arg(long, env = "OXCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Path to a dedicated WAL directory. Defaults to `${data-dir}/member/wal`.
    #[arg(long, env = "OXCD_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,

    /// Comma-separated URLs to listen on for client traffic.
    #[arg(
        long,
        env = "OXCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,

    /// Comma-separated client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "OXCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,

    /// Comma-separated URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "OXCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,

    /// Comma-separated peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "OXCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,

    /// Initial cluster configuration for bootstrapping: `name=peer-url,...`.
    #[arg(long, env = "OXCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state: `new` or `existing`.
    #[arg(long, env = "OXCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,

    /// Initial cluster token, mixed into the cluster and member ids.
    #[arg(
        long,
        env = "OXCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Number of committed entries between Raft snapshots.
    #[arg(long, env = "OXCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Number of entries kept behind a snapshot for slow followers to catch up from.
    #[arg(
        long = "experimental-snapshot-catchup-entries",
        env = "OXCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5_000
    )]
    pub snapshot_catchup_entries: u64,

    /// A WAL segment is cut once it holds this many bytes (etcd's 64 MiB; not a flag:
    /// the simulator sets it smaller, so that segments roll over within a run).
    #[arg(skip = crate::wal::WalOptions::default().segment_bytes)]
    pub wal_segment_bytes: u64,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "OXCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to time out.
    #[arg(long, env = "OXCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Serve the v2 API (`/v2/keys`, `/v2/members`, `/v2/stats`, `/v2/machines`) on the
    /// client URLs, with its own keyspace, as etcd 3.4 does with `--enable-v2=true`.
    #[arg(long, env = "OXCD_ENABLE_V2", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_v2: bool,

    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "OXCD_STRICT_RECONFIG_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_reconfig_check: bool,

    /// Enable the Raft pre-vote phase.
    #[arg(long, env = "OXCD_PRE_VOTE", default_value_t = true, action = clap::ArgAction::Set)]
    pub pre_vote: bool,

    /// Raise the NOSPACE alarm when the backend exceeds this size. 0 means 2 GiB.
    #[arg(long, env = "OXCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "OXCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u64,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "OXCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Maximum time (in milliseconds) before committing the backend transaction.
    #[arg(long, env = "OXCD_BACKEND_BATCH_INTERVAL", default_value_t = 100)]
    pub backend_batch_interval: u64,

    /// Maximum number of applied entries before committing the backend transaction.
    #[arg(long, env = "OXCD_BACKEND_BATCH_LIMIT", default_value_t = 10_000)]
    pub backend_batch_limit: u64,

    /// Interval (in milliseconds) between watch progress notifications.
    #[arg(
        long = "experimental-watch-progress-notify-interval",
        env = "OXCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value_t = 600_000
    )]
    pub watch_progress_notify_interval_ms: u64,

    /// Comma-separated URLs to serve `/metrics` and the health endpoints on, over plain
    /// HTTP/1.1, beside the client URLs (which serve them too).
    #[arg(long, env = "OXCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,

    /// Level of detail of the metrics: `basic`, or `extensive` (adds gRPC latency
    /// histograms).
    #[arg(long, env = "OXCD_METRICS", default_value = "basic", value_parser = ["basic", "extensive"])]
    pub metrics: String,

    /// Log level: debug, info, warn, error.
    #[arg(long, env = "OXCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Accepted for etcd compatibility; oxcd always logs through tracing.
    #[arg(long, env = "OXCD_LOGGER", default_value = "zap")]
    pub logger: String,

    /// Where logs go, comma-separated: `stderr` (also `default`), `stdout`, or file paths
    /// (appended to; created when missing).
    #[arg(long, env = "OXCD_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,

    /// Log format: `console` (one human-readable line per event, colored on a terminal)
    /// or `json` (one JSON object per line, as etcd's zap logger writes).
    #[arg(long, env = "OXCD_LOG_FORMAT", default_value = "console", value_parser = ["console", "json"])]
    pub log_format: String,

    /// Path to the client server TLS certificate file (for `https://` client URLs).
    #[arg(long, env = "OXCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Path to the client server TLS key file.
    #[arg(long, env = "OXCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Path to the client server TLS trusted CA file; clients must then present a
    /// certificate it signed.
    #[arg(long, env = "OXCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// A host a client certificate must name (among its subject alternative names).
    #[arg(long, env = "OXCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,

    /// Path to the client certificate revocation list (PEM).
    #[arg(long, env = "OXCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,

    /// Require and verify client certificates; the certificate's Common Name names the user.
    #[arg(long, env = "OXCD_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,

    /// Client TLS using a generated self-signed certificate (when no --cert-file is given).
    #[arg(long, env = "OXCD_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub auto_tls: bool,

    /// Path to the peer server TLS certificate file (for `https://` peer URLs).
    #[arg(long, env = "OXCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Path to the peer server TLS key file.
    #[arg(long, env = "OXCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "OXCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Path to the peer certificate revocation list (PEM).
    #[arg(long, env = "OXCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,

    /// Require and verify peer client certificates.
    #[arg(long, env = "OXCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,

    /// Peer TLS using generated self-signed certificates (when no --peer-cert-file is given).
    #[arg(long, env = "OXCD_PEER_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_auto_tls: bool,

    /// The Common Name a peer's client certificate must have.
    #[arg(long, env = "OXCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,

    /// A host a peer's client certificate must name (among its subject alternative names).
    #[arg(long, env = "OXCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,

    /// Validity of the self-signed certificates of --auto-tls and --peer-auto-tls, in years.
    #[arg(long, env = "OXCD_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1)]
    pub self_signed_cert_validity: u32,

    /// Comma-separated TLS 1.2 cipher suites (IANA names) for client and peer TLS; empty
    /// means the defaults. TLS 1.3 suites are not configurable.
    #[arg(long, env = "OXCD_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,

    /// The kind of auth token: `simple` (opaque tokens held in members' memory), or
    /// `jwt,sign-method=...,pub-key=...,priv-key=...,ttl=...` (signed tokens).
    #[arg(long, env = "OXCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// Seconds a simple token lives without use.
    #[arg(long, env = "OXCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// The bcrypt cost of password hashes (4 to 31; anything else means the default, 10).
    #[arg(long, env = "OXCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,

    /// Minimum TLS version: TLS1.2 or TLS1.3.
    #[arg(long, env = "OXCD_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,

    /// Maximum TLS version: TLS1.2 or TLS1.3; empty means the highest supported.
    #[arg(long, env = "OXCD_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,
}

/// Which side's TLS flags: the client listeners' or the peers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    Client,
    Peer,
}

/// The TLS files of one side, as the flags (or auto-TLS) name them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `true` when the files are the self-signed pair auto-TLS generates at start.
    pub generated: bool,
}

/// A configuration error, reported before anything is started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]")]
    ElectionTooShort { election_ms: u64, heartbeat_ms: u64 },
    #[error("--election-timeout[{0}ms] is too long, and should be set less than 50000ms")]
    ElectionTooLong(u64),
    #[error("--heartbeat-interval must be positive")]
    ZeroHeartbeat,
    #[error("--initial-cluster-state must be 'new' or 'existing', got {0:?}")]
    ClusterState(String),
    #[error("--initial-cluster {0:?}: {1}")]
    InitialCluster(String, &'static str),
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    NameNotInCluster(String),
    #[error("TLS key/cert (--{flags}) must be provided for {side} url {url} with HTTPS scheme")]
    TlsNeedsCertificate {
        flags: &'static str,
        side: &'static str,
        url: String,
    },
    #[error("--{0}-file and --{1}-file must be given together")]
    TlsHalfPair(&'static str, &'static str),
    #[error("failed to create token provider: {0}")]
    AuthToken(String),
}

impl Config {
    /// Checks the values that clap cannot check by itself.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        // etcd refuses an election timeout under 5 heartbeats: followers would campaign while
        // the leader is healthy and merely between heartbeats.
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::ElectionTooShort {
                election_ms: self.election_timeout,
                heartbeat_ms: self.heartbeat_interval,
            });
        }
        if self.election_timeout > 50_000 {
            return Err(ConfigError::ElectionTooLong(self.election_timeout));
        }
        if self.initial_cluster_state != "new" && self.initial_cluster_state != "existing" {
            return Err(ConfigError::ClusterState(
                self.initial_cluster_state.clone(),
            ));
        }
        self.client_listen_addrs()?;
        self.peer_listen_addrs()?;
        self.metrics_listen_addrs()?;
        for side in [TlsSide::Client, TlsSide::Peer] {
            let (cert, key) = match side {
                TlsSide::Client => (&self.cert_file, &self.key_file),
                TlsSide::Peer => (&self.peer_cert_file, &self.peer_key_file),
            };
            if cert.is_some() != key.is_some() {
                return Err(match side {
                    TlsSide::Client => ConfigError::TlsHalfPair("cert", "key"),
                    TlsSide::Peer => ConfigError::TlsHalfPair("peer-cert", "peer-key"),
                });
            }
            let https = match side {
                TlsSide::Client => split_list(&self.listen_client_urls),
                TlsSide::Peer => split_list(&self.listen_peer_urls),
            };
            let https = https.into_iter().find(|url| is_https(url));
            if let (Some(url), None) = (https, self.tls_files(side)) {
                return Err(ConfigError::TlsNeedsCertificate {
                    flags: match side {
                        TlsSide::Client => "cert-file, --key-file",
                        TlsSide::Peer => "peer-cert-file, --peer-key-file",
                    },
                    side: match side {
                        TlsSide::Client => "client",
                        TlsSide::Peer => "peer",
                    },
                    url,
                });
            }
        }
        match self.auth_token.split(',').next().unwrap_or_default() {
            "simple" | "jwt" => {}
            other => {
                return Err(ConfigError::AuthToken(format!(
                    "unknown token type: {other}"
                )))
            }
        }
        let cluster = self.initial_cluster_members()?;
        if !cluster.iter().any(|(name, _)| *name == self.name) {
            return Err(ConfigError::NameNotInCluster(self.name.clone()));
        }
        Ok(())
    }

    /// The bcrypt cost of password hashes: `--bcrypt-cost`, or etcd's default when it is out
    /// of bcrypt's range.
    pub fn bcrypt_cost(&self) -> u32 {
        if (4..=31).contains(&self.bcrypt_cost) {
            self.bcrypt_cost
        } else {
            tracing::warn!(
                given = self.bcrypt_cost,
                "use default bcrypt cost instead of the invalid given cost"
            );
            10
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.oxcd", self.name)))
    }

    pub fn member_dir(&self) -> PathBuf {
        self.data_dir().join("member")
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.member_dir().join("wal"))
    }

    pub fn snap_dir(&self) -> PathBuf {
        self.member_dir().join("snap")
    }

    /// The backend database file (etcd's `member/snap/db`).
    pub fn backend_path(&self) -> PathBuf {
        self.snap_dir().join("db")
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval)
    }

    pub fn election(&self) -> Duration {
        Duration::from_millis(self.election_timeout)
    }

    /// Election timeout in heartbeat ticks (the Raft core counts ticks, not time).
    pub fn election_ticks(&self) -> usize {
        (self.election_timeout / self.heartbeat_interval).max(2) as usize
    }

    /// The quota the NOSPACE alarm is checked against.
    pub fn quota_bytes(&self) -> u64 {
        match self.quota_backend_bytes {
            0 => DEFAULT_QUOTA_BACKEND_BYTES,
            quota => quota,
        }
    }

    /// The smallest lease TTL: ceil(1.5 × election timeout) in seconds, as etcd.
    pub fn min_lease_ttl_secs(&self) -> i64 {
        let ms = self.election_timeout * 3 / 2;
        ms.div_ceil(1000) as i64
    }

    pub fn client_listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        parse_url_list(&self.listen_client_urls)
    }

    /// The client listen addresses, each with whether its URL is `https://`.
    pub fn client_listeners(&self) -> Result<Vec<(SocketAddr, bool)>, ConfigError> {
        listeners(&self.listen_client_urls)
    }

    /// The peer listen addresses, each with whether its URL is `https://`.
    pub fn peer_listeners(&self) -> Result<Vec<(SocketAddr, bool)>, ConfigError> {
        listeners(&self.listen_peer_urls)
    }

    /// The certificate and key of `side`: the files given, or else with auto-TLS the pair
    /// generated under `<data-dir>/fixtures/{client,peer}` (etcd's place for them).
    pub fn tls_files(&self, side: TlsSide) -> Option<TlsFiles> {
        let (cert, key, auto) = match side {
            TlsSide::Client => (&self.cert_file, &self.key_file, self.auto_tls),
            TlsSide::Peer => (
                &self.peer_cert_file,
                &self.peer_key_file,
                self.peer_auto_tls,
            ),
        };
        match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert_file: cert.clone(),
                key_file: key.clone(),
                generated: false,
            }),
            _ if auto => {
                let dir = self.fixtures_dir(side);
                Some(TlsFiles {
                    cert_file: dir.join("cert.pem"),
                    key_file: dir.join("key.pem"),
                    generated: true,
                })
            }
            _ => None,
        }
    }

    /// Where auto-TLS keeps the self-signed pair of `side`.
    pub fn fixtures_dir(&self, side: TlsSide) -> PathBuf {
        let name = match side {
            TlsSide::Client => "client",
            TlsSide::Peer => "peer",
        };
        self.data_dir().join("fixtures").join(name)
    }

    /// The hosts a self-signed certificate of `side` names: those of its listen and
    /// advertised URLs.
    pub fn tls_hosts(&self, side: TlsSide) -> Vec<String> {
        let urls = match side {
            TlsSide::Client => [&self.listen_client_urls, &self.advertise_client_urls],
            TlsSide::Peer => [&self.listen_peer_urls, &self.initial_advertise_peer_urls],
        };
        let mut hosts: Vec<String> = Vec::new();
        for url in urls.into_iter().flat_map(|list| split_list(list)) {
            if let Some(host) = url_host(&url) {
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
        hosts
    }

    pub fn peer_listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        parse_url_list(&self.listen_peer_urls)
    }

    /// The addresses of `--listen-metrics-urls` (none by default).
    pub fn metrics_listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        parse_url_list(&self.listen_metrics_urls)
    }

    /// Whether `--metrics extensive` asks for the gRPC latency histograms.
    pub fn extensive_metrics(&self) -> bool {
        self.metrics == "extensive"
    }

    pub fn advertise_client_urls(&self) -> Vec<String> {
        split_list(&self.advertise_client_urls)
    }

    pub fn advertise_peer_urls(&self) -> Vec<String> {
        split_list(&self.initial_advertise_peer_urls)
    }

    /// `--initial-cluster` as (name, peer URLs) pairs, in the order given. Without the flag
    /// the cluster is this member alone at its advertised peer URLs, as etcd's default
    /// (`default=http://localhost:2380`) amounts to.
    pub fn initial_cluster_members(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let Some(spec) = &self.initial_cluster else {
            return Ok(vec![(self.name.clone(), self.advertise_peer_urls())]);
        };
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        for part in split_list(spec) {
            let Some((name, url)) = part.split_once('=') else {
                return Err(ConfigError::InitialCluster(part, "expected name=url"));
            };
            parse_url(url)?;
            match members.iter_mut().find(|(existing, _)| existing == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => members.push((name.to_string(), vec![url.to_string()])),
            }
        }
        if members.is_empty() {
            return Err(ConfigError::InitialCluster(spec.clone(), "no members"));
        }
        Ok(members)
    }
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

/// The TLS options of one side, for the production transport (the simulator has no TLS).
#[cfg(not(madsim))]
impl Config {
    /// `None` when the side has neither certificate files nor auto-TLS.
    pub(crate) fn tls_options(
        &self,
        side: TlsSide,
    ) -> Result<Option<crate::net::tls::TlsOptions>, crate::net::tls::TlsError> {
        use crate::net::tls::{TlsOptions, TlsVersion};
        let Some(files) = self.tls_files(side) else {
            return Ok(None);
        };
        let max_version = match self.tls_max_version.as_str() {
            "" => TlsVersion::Tls13,
            name => TlsVersion::parse(name)?,
        };
        let (trusted_ca_file, client_cert_auth, allowed_cn, allowed_hostname, crl_file) = match side
        {
            TlsSide::Client => (
                self.trusted_ca_file.clone(),
                self.client_cert_auth,
                None,
                self.client_cert_allowed_hostname.clone(),
                self.client_crl_file.clone(),
            ),
            TlsSide::Peer => (
                self.peer_trusted_ca_file.clone(),
                self.peer_client_cert_auth,
                self.peer_cert_allowed_cn.clone(),
                self.peer_cert_allowed_hostname.clone(),
                self.peer_crl_file.clone(),
            ),
        };
        Ok(Some(TlsOptions {
            cert_file: files.cert_file,
            key_file: files.key_file,
            trusted_ca_file,
            client_cert_auth,
            allowed_cn,
            allowed_hostname,
            crl_file,
            cipher_suites: split_list(&self.cipher_suites),
            min_version: TlsVersion::parse(&self.tls_min_version)?,
            max_version,
        }))
    }
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// The host of a URL (`[…]` removed from an IPv6 address).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.split('/').next()?;
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

fn listeners(list: &str) -> Result<Vec<(SocketAddr, bool)>, ConfigError> {
    split_list(list)
        .iter()
        .map(|url| Ok((parse_url(url)?, is_https(url))))
        .collect()
}

fn parse_url_list(list: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    split_list(list).iter().map(|url| parse_url(url)).collect()
}

/// Parses `http://host:port` (or `https://`, or a bare `host:port`) into a socket address.
/// `localhost` means 127.0.0.1 so that a default member never listens beyond the machine.
pub fn parse_url(url: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason| ConfigError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.strip_prefix("unix://").map(|_| ""))
        .unwrap_or(url);
    if rest.is_empty() {
        return Err(invalid("expected http://host:port"));
    }
    let host_port = rest.split('/').next().unwrap_or(rest);
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or_else(|| invalid("missing port"))?;
    let port: u16 = port.parse().map_err(|_| invalid("bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" | "" => std::net::IpAddr::from([127, 0, 0, 1]),
        other => other
            .parse()
            .map_err(|_| invalid("host must be an IP address or localhost"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["oxcd"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).expect("arguments parse")
    }

    #[test]
    fn defaults_match_etcd() {
        let config = config(&[]);
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir(), PathBuf::from("default.oxcd"));
        assert_eq!(config.snapshot_count, 100_000);
        assert_eq!(config.heartbeat(), Duration::from_millis(100));
        assert_eq!(config.election_ticks(), 10);
        assert_eq!(config.quota_bytes(), 2 * 1024 * 1024 * 1024);
        assert_eq!(config.max_request_bytes, 1_572_864);
        assert_eq!(config.max_txn_ops, 128);
        assert_eq!(config.min_lease_ttl_secs(), 2);
        assert_eq!(
            config.client_listen_addrs().unwrap(),
            vec!["127.0.0.1:2379".parse().unwrap()]
        );
        assert_eq!(config.metrics_listen_addrs().unwrap(), vec![]);
        assert!(!config.extensive_metrics());
        config.validate().expect("the defaults are valid");
    }

    #[test]
    fn urls_parse_like_etcd() {
        let table: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:2379", Some("127.0.0.1:2379")),
            ("https://127.0.0.1:2379", Some("127.0.0.1:2379")),
            ("http://localhost:23790", Some("127.0.0.1:23790")),
            ("http://[::1]:2379", Some("[::1]:2379")),
            ("127.0.0.1:2379", Some("127.0.0.1:2379")),
            ("http://127.0.0.1", None),
            ("http://127.0.0.1:notaport", None),
            ("http://example.com:2379", None),
        ];
        for (url, want) in table {
            let got = parse_url(url).ok();
            assert_eq!(got, want.map(|w| w.parse().unwrap()), "url {url}");
        }
    }

    #[test]
    fn initial_cluster_groups_urls_by_name() {
        let config = config(&[
            "--name",
            "a",
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,a=http://127.0.0.1:2382",
        ]);
        let members = config.initial_cluster_members().unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].1.len(), 2);
        config.validate().unwrap();
        let missing = Config {
            name: "c".into(),
            ..config
        };
        assert!(matches!(
            missing.validate(),
            Err(ConfigError::NameNotInCluster(_))
        ));
    }

    #[test]
    fn metrics_flags_parse_like_etcd() {
        let config = config(&[
            "--metrics",
            "extensive",
            "--listen-metrics-urls",
            "http://127.0.0.1:2381,http://localhost:2382",
        ]);
        assert!(config.extensive_metrics());
        assert_eq!(config.metrics_listen_addrs().unwrap().len(), 2);
        let mut argv = vec!["oxcd", "--metrics", "verbose"];
        assert!(Config::try_parse_from(argv.drain(..)).is_err());
    }

    #[test]
    fn https_urls_need_a_certificate_or_auto_tls() {
        let https_client = "--listen-client-urls=https://127.0.0.1:2379,http://127.0.0.1:2381";
        assert!(matches!(
            config(&[https_client]).validate(),
            Err(ConfigError::TlsNeedsCertificate { side: "client", .. })
        ));
        assert!(matches!(
            config(&[https_client, "--cert-file=a.crt"]).validate(),
            Err(ConfigError::TlsHalfPair("cert", "key"))
        ));
        let with_files = config(&[https_client, "--cert-file=a.crt", "--key-file=a.key"]);
        with_files.validate().unwrap();
        assert_eq!(
            with_files.client_listeners().unwrap(),
            vec![
                ("127.0.0.1:2379".parse().unwrap(), true),
                ("127.0.0.1:2381".parse().unwrap(), false)
            ]
        );
        let files = with_files.tls_files(TlsSide::Client).unwrap();
        assert_eq!(files.cert_file, PathBuf::from("a.crt"));
        assert!(!files.generated);
        assert!(with_files.tls_files(TlsSide::Peer).is_none());

        let auto = config(&[https_client, "--auto-tls", "--data-dir=/d"]);
        auto.validate().unwrap();
        let files = auto.tls_files(TlsSide::Client).unwrap();
        assert_eq!(
            files.cert_file,
            PathBuf::from("/d/fixtures/client/cert.pem")
        );
        assert!(files.generated);
        assert_eq!(
            auto.tls_hosts(TlsSide::Client),
            vec!["127.0.0.1", "localhost"]
        );

        let https_peer = "--listen-peer-urls=https://127.0.0.1:2380";
        assert!(matches!(
            config(&[https_peer]).validate(),
            Err(ConfigError::TlsNeedsCertificate { side: "peer", .. })
        ));
        config(&[https_peer, "--peer-auto-tls=true"])
            .validate()
            .unwrap();
        assert!(!config(&["--peer-auto-tls=false"]).peer_auto_tls);
    }

    #[test]
    fn timing_rules() {
        assert!(matches!(
            config(&["--election-timeout", "400"]).validate(),
            Err(ConfigError::ElectionTooShort { .. })
        ));
        assert!(matches!(
            config(&["--election-timeout", "60000"]).validate(),
            Err(ConfigError::ElectionTooLong(_))
        ));
        assert_eq!(
            config(&["--election-timeout", "3000"]).min_lease_ttl_secs(),
            5
        );
    }
}
