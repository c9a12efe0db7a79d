//! `oxctl`: oxcd's own command line. Today it has the snapshot verbs of etcdctl and
//! etcdutl, with their flags and output:
//!
//! - `oxctl [--endpoints HOST:PORT] [--cacert --cert --key] [--user NAME:PASSWORD]
//!   snapshot save FILE`: the member's backend, in etcd's format, checked against the
//!   digest that ends the stream (works against oxcd and etcd alike);
//! - `oxctl snapshot status FILE [-w simple|json|table]`: the hash, revision, key count and
//!   size of a snapshot file (one saved from oxcd or from etcd);
//! - `oxctl snapshot restore FILE --data-dir DIR --name NAME --initial-cluster ...
//!   --initial-advertise-peer-urls ... [--initial-cluster-token ...] [--skip-hash-check]`:
//!   a new oxcd data dir with every revision, lease, user and role of the snapshot, for a
//!   member that then starts a new cluster (every member is restored from the same file).
//!
//! Save and restore show a progress bar with throughput and time left when stderr is a
//! terminal. Flags may be given as `ETCDCTL_*` environment variables, as for etcdctl.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oxcd::server::Config;

#[derive(Parser)]
#[command(name = "oxctl", about = "oxcd's command line", version)]
struct Cli {
    /// Output format: simple, json or table.
    #[arg(short = 'w', long = "write-out", global = true, default_value = "simple",
          value_parser = ["simple", "json", "table"])]
    write_out: String,
    /// The member to talk to (`host:port`; one for snapshot save).
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    endpoints: String,
    /// Verify the server's certificate with this CA bundle.
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    cacert: Option<PathBuf>,
    /// The client certificate for TLS (with --key).
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    key: Option<PathBuf>,
    /// TLS without verifying the server's certificate.
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    insecure_skip_tls_verify: bool,
    /// name:password, for a cluster with authentication enabled.
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    user: Option<String>,
    /// How long to wait for a connection, in seconds or with a unit (`2s`, `500ms`).
    #[arg(
        long,
        global = true,
        env = "ETCDCTL_DIAL_TIMEOUT",
        default_value = "2s"
    )]
    dial_timeout: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot files: status and restore.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Backup {
            data_dir,
            wal_dir,
            backup_dir,
        } => backup(data_dir, wal_dir.as_deref(), backup_dir),
        Command::Snapshot(Snapshot::Save { file }) => save(&cli, file),
        Command::Snapshot(Snapshot::Status { file }) => status(file, &cli.write_out),
        Command::Snapshot(Snapshot::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        }) => restore(
            file,
            data_dir.clone(),
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            *skip_hash_check,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A duration as etcdctl's flags spell it (`2s`, `500ms`, `1m`), or plain seconds.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration {text:?}")),
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress_bar(template: &str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn save(cli: &Cli, file: &std::path::Path) -> Result<(), String> {
    let endpoints: Vec<&str> = cli.endpoints.split(',').filter(|e| !e.is_empty()).collect();
    let [endpoint] = endpoints.as_slice() else {
        return Err(format!(
            "snapshot must be requested to one selected node, not multiple {endpoints:?}"
        ));
    };
    let endpoint = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string();
    let dialer = oxcd::net::dial::Dialer::from_flags(
        cli.cacert.clone(),
        cli.cert.clone(),
        cli.key.clone(),
        cli.insecure_skip_tls_verify,
    )?;
    let dial_timeout = duration(&cli.dial_timeout)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async {
        use oxcd::proto::etcdserverpb::auth_client::AuthClient;
        use oxcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
        use oxcd::proto::etcdserverpb::{AuthenticateRequest, SnapshotRequest};
        use sha2::Digest as _;
        use std::io::Write as _;

        let channel = tokio::time::timeout(dial_timeout, dialer.connect(&endpoint))
            .await
            .map_err(|_| "context deadline exceeded".to_string())??;
        let mut request = tonic::Request::new(SnapshotRequest {});
        if let Some(user) = &cli.user {
            let (name, password) = user.split_once(':').ok_or("--user needs name:password")?;
            let token = AuthClient::new(channel.clone())
                .authenticate(AuthenticateRequest {
                    name: name.to_string(),
                    password: password.to_string(),
                })
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner()
                .token;
            let token = token.parse().map_err(|_| "a token that is not ASCII")?;
            request.metadata_mut().insert("token", token);
        }
        let mut stream = MaintenanceClient::new(channel)
            .snapshot(request)
            .await
            .map_err(|status| status.message().to_string())?
            .into_inner();
        // Written beside the target and renamed into place once whole and checked.
        let mut part = file.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let mut out =
            std::fs::File::create(&part).map_err(|error| format!("{}: {error}", part.display()))?;
        let bar =
            progress_bar("{bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec}, {eta} left");
        // The stream is the backend and then its SHA-256: the last 32 bytes seen are
        // held back from the digest until more arrive.
        let mut digest = sha2::Sha256::new();
        let mut held = Vec::with_capacity(64);
        let mut received = 0u64;
        let saved = async {
            while let Some(piece) = stream
                .message()
                .await
                .map_err(|status| status.message().to_string())?
            {
                received += piece.blob.len() as u64;
                bar.set_length(received + piece.remaining_bytes);
                bar.set_position(received);
                out.write_all(&piece.blob)
                    .map_err(|error| error.to_string())?;
                held.extend_from_slice(&piece.blob);
                if held.len() > 32 {
                    let ready = held.len() - 32;
                    digest.update(&held[..ready]);
                    held.drain(..ready);
                }
            }
            if held.len() < 32 || digest.clone().finalize().as_slice() != held.as_slice() {
                return Err("the snapshot's SHA-256 does not match what was received".to_string());
            }
            out.sync_all().map_err(|error| error.to_string())?;
            Ok::<(), String>(())
        };
        let result = saved.await;
        bar.finish_and_clear();
        if let Err(error) = result {
            let _ = std::fs::remove_file(&part);
            return Err(error);
        }
        std::fs::rename(&part, file).map_err(|error| error.to_string())?;
        println!("Snapshot saved at {}", file.display());
        Ok(())
    })
}

fn status(file: &std::path::Path, format: &str) -> Result<(), String> {
    let status = oxcd::server::snapshot_status(file)?;
    match format {
        "json" => println!(
            r#"{{"hash":{},"revision":{},"totalKey":{},"totalSize":{}}}"#,
            status.hash, status.revision, status.total_key, status.total_size
        ),
        "table" => {
            let row = [
                format!("{:x}", status.hash),
                status.revision.to_string(),
                status.total_key.to_string(),
                human_bytes(status.total_size),
            ];
            print!(
                "{}",
                table(&["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], &row)
            );
        }
        _ => println!(
            "{:x}, {}, {}, {}",
            status.hash,
            status.revision,
            status.total_key,
            human_bytes(status.total_size)
        ),
    }
    Ok(())
}

fn restore(
    file: &std::path::Path,
    data_dir: Option<PathBuf>,
    name: &str,
    initial_cluster: &str,
    token: &str,
    peer_urls: &str,
    skip_hash_check: bool,
) -> Result<(), String> {
    let config = Config::try_parse_from([
        "oxcd",
        "--name",
        name,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-token",
        token,
        "--initial-advertise-peer-urls",
        peer_urls,
    ])
    .map_err(|error| error.to_string())?;
    let config = Config {
        data_dir: Some(data_dir.unwrap_or_else(|| config.data_dir())),
        ..config
    };
    let bar = progress_bar("{spinner} {human_pos} revisions restored, {per_sec}, {elapsed}");
    let restored = oxcd::server::restore_snapshot(file, &config, skip_hash_check, &mut |n| {
        bar.set_position(n)
    });
    bar.finish_and_clear();
    let restored = restored?;
    println!(
        "restored snapshot {} into {}: revision {}, revisions stored: {} (compacted at {}), \
         leases: {}, users: {}, roles: {}",
        file.display(),
        config.data_dir().display(),
        restored.revision,
        restored.revisions,
        restored.compacted,
        restored.leases,
        restored.users,
        restored.roles
    );
    println!(
        "start the member with --name {name} --initial-cluster {initial_cluster} \
         --initial-cluster-token {token} --initial-advertise-peer-urls {peer_urls} \
         --data-dir {}",
        config.data_dir().display()
    );
    Ok(())
}

fn backup(
    data_dir: &std::path::Path,
    wal_dir: Option<&std::path::Path>,
    backup_dir: &std::path::Path,
) -> Result<(), String> {
    let summary = oxcd::server::backup_data_dir(data_dir, wal_dir, backup_dir)?;
    println!(
        "backed up {} (applied through index {}, backend {}) into {}",
        data_dir.display(),
        summary.applied_index,
        human_bytes(summary.bytes),
        backup_dir.display()
    );
    println!(
        "start a member on it with --data-dir {} (a new cluster, from its --name, \
         --initial-cluster and --initial-advertise-peer-urls)",
        backup_dir.display()
    );
    Ok(())
}

/// A byte count as etcd prints it (SI units, go-humanize's `Bytes`): `20 kB`, `1.5 MB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).ln() / 1000f64.ln()).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = (bytes as f64 / 1000f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

/// A one-row table as etcdctl draws them: centered headers, right-aligned cells.
fn table(headers: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .zip(row)
        .map(|(header, cell)| header.len().max(cell.len()) + 2)
        .collect();
    let rule: String = widths
        .iter()
        .map(|width| format!("+{}", "-".repeat(*width)))
        .collect::<String>()
        + "+\n";
    let centered: String = headers
        .iter()
        .zip(&widths)
        .map(|(header, width)| {
            let left = (width - header.len()) / 2;
            let right = width - header.len() - left;
            format!("|{}{header}{}", " ".repeat(left), " ".repeat(right))
        })
        .collect::<String>()
        + "|\n";
    let cells: String = row
        .iter()
        .zip(&widths)
        .map(|(cell, width)| format!("|{cell:>w$} ", w = width - 1))
        .collect::<String>()
        + "|\n";
    format!("{rule}{centered}{rule}{cells}{rule}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_etcd_prints_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(176_128), "176 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(999), "999 B");
    }
}
