//! `oxctl`: oxcd's own command line, with etcdctl's verbs, flags, `ETCDCTL_*` environment
//! names, output formats (`-w simple|fields|json|table`), messages and exit codes, so that
//! scripts written for etcdctl run unchanged, against oxcd or etcd:
//!
//! - keys: `get`, `put`, `del`, `txn` (`-i` for prompts), `compaction`, `watch`;
//! - leases: `lease grant|revoke|timetolive|list|keep-alive`;
//! - cluster: `member add|remove|update|list|promote`, `endpoint health|status|hashkv`
//!   (`--cluster`), `alarm list|disarm`, `defrag`, `move-leader`;
//! - access: `user ...`, `role ...`, `auth enable|disable`;
//! - concurrency: `lock NAME [command...]`, `elect NAME [proposal]`;
//! - `make-mirror DEST`: a live copy of a key prefix into another cluster;
//! - snapshots and data dirs (etcdutl's verbs): `snapshot save|status|restore`, `backup`,
//!   and `inspect DIR` for incidents.
//!
//! Save and restore show a progress bar with throughput and time left when stderr is a
//! terminal.

mod client;
mod cluster;
mod concurrency;
mod gojson;
mod kv;
mod print;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use print::{Format, Printer};

#[derive(Parser)]
#[command(name = "oxctl", about = "oxcd's command line", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// etcdctl's global flags.
#[derive(Args, Clone)]
pub struct Global {
    /// Output format: simple, fields, json or table.
    #[arg(short = 'w', long = "write-out", global = true, default_value = "simple",
          env = "ETCDCTL_WRITE_OUT", value_parser = ["simple", "fields", "json", "table"])]
    pub write_out: String,
    /// The members to talk to (`host:port` or URLs, comma separated).
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: String,
    /// Verify the server's certificate with this CA bundle.
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    pub cacert: Option<PathBuf>,
    /// The client certificate for TLS (with --key).
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    pub key: Option<PathBuf>,
    /// TLS without verifying the server's certificate.
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
    /// Accepted for etcdctl's scripts; plaintext is used unless a TLS flag is given.
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", default_value = "true",
          num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub insecure_transport: String,
    /// name[:password], for a cluster with authentication enabled.
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    pub user: Option<String>,
    /// The password (with --user NAME).
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,
    /// How long to wait for a connection (`2s`, `500ms`).
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_DIAL_TIMEOUT",
        default_value = "2s"
    )]
    pub dial_timeout: String,
    /// How long a request may take (streams excepted).
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_COMMAND_TIMEOUT",
        default_value = "5s"
    )]
    pub command_timeout: String,
    /// Keys and values as hex escapes (`\x66\x6f\x6f`) in simple output.
    #[arg(long, global = true, env = "ETCDCTL_HEX")]
    pub hex: bool,
}

impl Global {
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn printer(&self) -> Printer {
        let format = match self.write_out.as_str() {
            "fields" => Format::Fields,
            "json" => Format::Json,
            "table" => Format::Table,
            _ => Format::Simple,
        };
        Printer {
            format,
            hex: self.hex,
            value_only: false,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Gets the key or a range of keys.
    Get(kv::GetArgs),
    /// Puts the given key into the store (the value from stdin when not given).
    Put(kv::PutArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction (read from stdin).
    Txn(kv::TxnArgs),
    /// Compacts the event history.
    Compaction(kv::CompactionArgs),
    /// Watches events stream on keys or prefixes.
    Watch(kv::WatchArgs),
    /// Lease related commands.
    #[command(subcommand)]
    Lease(cluster::LeaseCommand),
    /// Membership related commands.
    #[command(subcommand)]
    Member(cluster::MemberCommand),
    /// Endpoint related commands.
    #[command(subcommand)]
    Endpoint(cluster::EndpointCommand),
    /// Alarm related commands.
    #[command(subcommand)]
    Alarm(cluster::AlarmCommand),
    /// Defragments the storage of the members.
    Defrag(cluster::DefragArgs),
    /// Transfers leadership to another member.
    MoveLeader {
        /// The member to lead, in hex.
        transferee: String,
    },
    /// User related commands.
    #[command(subcommand)]
    User(cluster::UserCommand),
    /// Role related commands.
    #[command(subcommand)]
    Role(cluster::RoleCommand),
    /// Enable or disable authentication.
    #[command(subcommand)]
    Auth(cluster::AuthCommand),
    /// Acquires a named lock (and runs a command while holding it).
    Lock(concurrency::LockArgs),
    /// Observes and participates in leader election.
    Elect(concurrency::ElectArgs),
    /// Makes a mirror at the destination cluster.
    MakeMirror(kv::MirrorArgs),
    /// Snapshot files: save, status and restore.
    #[command(subcommand)]
    Snapshot(Snapshot),
    /// Copies a stopped member's data dir into a new one that starts a new cluster
    /// (what `ETCDCTL_API=2 etcdctl backup` does for etcd).
    Backup {
        /// The data dir to copy.
        #[arg(long)]
        data_dir: PathBuf,
        /// Its WAL directory, when not under the data dir.
        #[arg(long)]
        wal_dir: Option<PathBuf>,
        /// The data dir to make (it must not exist).
        #[arg(long)]
        backup_dir: PathBuf,
    },
    /// Reads a stopped member's data dir (without changing it): WAL segments, snapshots,
    /// the last index and term, the backend's revision, and whether they agree.
    Inspect {
        /// The data dir.
        data_dir: PathBuf,
        /// Its WAL directory, when not under the data dir.
        #[arg(long)]
        wal_dir: Option<PathBuf>,
    },
    /// Prints the version of oxctl.
    Version,
}

#[derive(Subcommand)]
enum Snapshot {
    /// Saves a member's backend to a file (etcd's format).
    Save { file: PathBuf },
    /// Prints a snapshot file's hash, revision, total keys and size.
    Status { file: PathBuf },
    /// Restores a snapshot file into a new data dir.
    Restore {
        file: PathBuf,
        /// The data dir to make (it must not exist). Defaults to `<name>.oxcd`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The restored member's name.
        #[arg(long, default_value = "default")]
        name: String,
        /// The new cluster's members, `name=peer-url,...`.
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The new cluster's token.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// The restored member's peer URLs.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Restore a file without a SHA-256 trailer (a backend file copied from a data
        /// dir) or whose trailer does not match.
        #[arg(long)]
        skip_hash_check: bool,
    },
}

/// How a command failed: etcdctl's exit code and its message (printed as `Error: ...`).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// etcdctl's `ExitError` (1).
    pub fn error(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
    /// `ExitBadConnection` (2).
    pub fn bad_connection(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    /// `ExitInvalidInput` (3).
    pub fn invalid_input(message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
    /// `ExitBadFeature` (4).
    pub fn bad_feature(message: impl Into<String>) -> Failure {
        Failure {
            code: 4,
            message: message.into(),
        }
    }
    /// `ExitInterrupted` (5).
    pub fn interrupted(message: impl Into<String>) -> Failure {
        Failure {
            code: 5,
            message: message.into(),
        }
    }
    /// `ExitBadArgs` (128).
    pub fn bad_args(message: impl Into<String>) -> Failure {
        Failure {
            code: 128,
            message: message.into(),
        }
    }
    /// A server's answer, as clientv3 words it: the status message (`etcdserver: ...`),
    /// or `context deadline exceeded` for a call that ran out of time.
    pub fn status(status: tonic::Status) -> Failure {
        match status.code() {
            tonic::Code::DeadlineExceeded if !status.message().starts_with("etcdserver") => {
                Failure::error("context deadline exceeded")
            }
            tonic::Code::Unavailable if status.message().is_empty() => {
                Failure::error("context deadline exceeded")
            }
            _ if status.message().is_empty() => {
                Failure::error(format!("rpc error: code = {:?}", status.code()))
            }
            _ => Failure::error(status.message().to_string()),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::error(message)
    }
}

/// Runs `future` on a runtime of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = &cli.global;
    let result: Result<(), Failure> = match &cli.command {
        Command::Get(args) => kv::get(global, args),
        Command::Put(args) => kv::put(global, args),
        Command::Del(args) => kv::del(global, args),
        Command::Txn(args) => kv::txn(global, args),
        Command::Compaction(args) => kv::compaction(global, args),
        Command::Watch(args) => kv::watch(global, args),
        Command::MakeMirror(args) => kv::make_mirror(global, args),
        Command::Lease(command) => cluster::lease(global, command),
        Command::Member(command) => cluster::member(global, command),
        Command::Endpoint(command) => cluster::endpoint(global, command),
        Command::Alarm(command) => cluster::alarm(global, command),
        Command::Defrag(args) => cluster::defrag(global, args),
        Command::MoveLeader { transferee } => cluster::move_leader(global, transferee),
        Command::User(command) => cluster::user(global, command),
        Command::Role(command) => cluster::role(global, command),
        Command::Auth(command) => cluster::auth(global, command),
        Command::Lock(args) => concurrency::lock(global, args),
        Command::Elect(args) => concurrency::elect(global, args),
        Command::Inspect { data_dir, wal_dir } => {
            snapshot::inspect(data_dir, wal_dir.as_deref(), &global.write_out)
        }
        Command::Version => {
            println!("oxctl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: 3.4");
            Ok(())
        }
        Command::Backup {
            data_dir,
            wal_dir,
            backup_dir,
        } => snapshot::backup(data_dir, wal_dir.as_deref(), backup_dir).map_err(Failure::error),
        Command::Snapshot(Snapshot::Save { file }) => {
            snapshot::save(global, file).map_err(Failure::error)
        }
        Command::Snapshot(Snapshot::Status { file }) => {
            snapshot::status(file, &global.write_out).map_err(Failure::error)
        }
        Command::Snapshot(Snapshot::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        }) => snapshot::restore(
            file,
            data_dir.clone(),
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            *skip_hash_check,
        )
        .map_err(Failure::error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            use std::io::IsTerminal as _;
            // Red on a terminal; plain for scripts, which match etcdctl's text.
            if std::io::stderr().is_terminal() {
                eprintln!("\x1b[1;31mError:\x1b[0m {}", failure.message);
            } else {
                eprintln!("Error: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}
