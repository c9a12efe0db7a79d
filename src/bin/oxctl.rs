//! `oxctl`: oxcd's own command line. Today it has etcdutl's snapshot verbs, with their
//! flags and output:
//!
//! - `oxctl snapshot status FILE [-w simple|json|table]`: the hash, revision, key count and
//!   size of a snapshot file (one saved from oxcd or from etcd);
//! - `oxctl snapshot restore FILE --data-dir DIR --name NAME --initial-cluster ...
//!   --initial-advertise-peer-urls ... [--initial-cluster-token ...] [--skip-hash-check]`:
//!   a new oxcd data dir with every revision, lease, user and role of the snapshot, for a
//!   member that then starts a new cluster (every member is restored from the same file).

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot files: status and restore.
    #[command(subcommand)]
    Snapshot(Snapshot),
}

#[derive(Subcommand)]
enum Snapshot {
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
    let result = match cli.command {
        Command::Snapshot(Snapshot::Status { file }) => status(&file, &cli.write_out),
        Command::Snapshot(Snapshot::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        }) => restore(
            &file,
            data_dir,
            &name,
            &initial_cluster,
            &initial_cluster_token,
            &initial_advertise_peer_urls,
            skip_hash_check,
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
    let restored = oxcd::server::restore_snapshot(file, &config, skip_hash_check)?;
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
