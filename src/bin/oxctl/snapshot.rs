//! Snapshot files and data dirs: `snapshot save`, `snapshot status`, `snapshot restore`
//! and `backup`.

use std::path::PathBuf;

use clap::Parser as _;
use oxcd::server::Config;

use crate::print::{human_bytes, table};
use crate::Global;

/// A duration as etcdctl's flags spell it (`2s`, `500ms`, `1m`), or plain seconds.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
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
pub fn progress_bar(template: &str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

pub fn save(cli: &Global, file: &std::path::Path) -> Result<(), String> {
    let endpoints: Vec<&str> = cli.endpoints.split(',').filter(|e| !e.is_empty()).collect();
    let [endpoint] = endpoints.as_slice() else {
        return Err(format!(
            "snapshot must be requested to one selected node, not multiple {endpoints:?}"
        ));
    };
    let endpoint = endpoint.to_string();
    crate::block_on(async {
        use oxcd::proto::etcdserverpb::SnapshotRequest;
        use sha2::Digest as _;
        use std::io::Write as _;

        let client = crate::client::Client::connect_to(cli, &endpoint)
            .await
            .map_err(|failure| failure.message)?;
        let mut stream = client
            .maintenance()
            .snapshot(client.stream_request(SnapshotRequest {}))
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

pub fn status(file: &std::path::Path, format: &str) -> Result<(), String> {
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
                table(
                    &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                    &[row.to_vec()]
                )
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

pub fn restore(
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

pub fn backup(
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

/// `oxctl inspect DIR`: what a stopped member's data dir holds, and whether its parts
/// agree (exit 1 when they do not).
pub fn inspect(
    data_dir: &std::path::Path,
    wal_dir: Option<&std::path::Path>,
    format: &str,
) -> Result<(), crate::Failure> {
    let found = oxcd::server::inspect_data_dir(data_dir, wal_dir).map_err(crate::Failure::error)?;
    let pair =
        |pair: Option<(u64, u64)>| pair.map_or("none".to_string(), |(a, b)| format!("{a}/{b}"));
    if format == "json" {
        let files = |files: &[(String, u64)]| {
            let items: Vec<String> = files
                .iter()
                .map(|(name, size)| {
                    format!(
                        "{{\"name\":{},\"size\":{size}}}",
                        oxcd::server::go_string(name)
                    )
                })
                .collect();
            format!("[{}]", items.join(","))
        };
        let members: Vec<String> = found
            .members
            .iter()
            .map(|(id, name)| {
                format!(
                    "{{\"id\":\"{id:x}\",\"name\":{}}}",
                    oxcd::server::go_string(name)
                )
            })
            .collect();
        let problems: Vec<String> = found
            .problems
            .iter()
            .map(|p| oxcd::server::go_string(p))
            .collect();
        let (term, vote, commit) = found.hard_state.unwrap_or_default();
        println!(
            "{{\"member_id\":\"{:x}\",\"cluster_id\":\"{:x}\",\"wal_segments\":{},\"snap_files\":{},\
             \"snapshot_index\":{},\"snapshot_term\":{},\"term\":{term},\"vote\":\"{vote:x}\",\
             \"commit\":{commit},\"entries\":{},\"first_index\":{},\"last_index\":{},\"last_term\":{},\
             \"backend_size\":{},\"applied_index\":{},\"revision\":{},\"compact_revision\":{},\
             \"revisions\":{},\"keys\":{},\"leases\":{},\"members\":[{}],\"problems\":[{}]}}",
            found.member_id,
            found.cluster_id,
            files(&found.wal_segments),
            files(&found.snap_files),
            found.snapshot.map_or(0, |s| s.0),
            found.snapshot.map_or(0, |s| s.1),
            found.entries,
            found.first_entry.map_or(0, |e| e.0),
            found.last_entry.map_or(0, |e| e.0),
            found.last_entry.map_or(0, |e| e.1),
            found.backend_bytes,
            found.applied_index,
            found.revision,
            found.compact_revision,
            found.revisions,
            found.keys,
            found.leases,
            members.join(","),
            problems.join(",")
        );
    } else {
        println!(
            "member {:x} of cluster {:x}",
            found.member_id, found.cluster_id
        );
        println!("WAL: {} segment(s)", found.wal_segments.len());
        for (name, size) in &found.wal_segments {
            println!("  {name}  {}", human_bytes(*size));
        }
        println!("snapshot dir: {} file(s)", found.snap_files.len());
        for (name, size) in &found.snap_files {
            println!("  {name}  {}", human_bytes(*size));
        }
        println!("newest snapshot (index/term): {}", pair(found.snapshot));
        match found.hard_state {
            Some((term, vote, commit)) => {
                println!("hard state: term {term}, vote {vote:x}, commit {commit}")
            }
            None => println!("hard state: none"),
        }
        println!(
            "log: {} entries, first (index/term) {}, last {}",
            found.entries,
            pair(found.first_entry),
            pair(found.last_entry)
        );
        println!(
            "backend: {}, applied index {}, revision {}, compacted at {}, {} revisions, {} keys, {} leases",
            human_bytes(found.backend_bytes),
            found.applied_index,
            found.revision,
            found.compact_revision,
            found.revisions,
            found.keys,
            found.leases
        );
        let members: Vec<String> = found
            .members
            .iter()
            .map(|(id, name)| format!("{id:x} ({name})"))
            .collect();
        println!("members: {}", members.join(", "));
        if found.problems.is_empty() {
            println!("consistent: the log, the snapshots and the backend agree");
        }
    }
    if found.problems.is_empty() {
        Ok(())
    } else {
        Err(crate::Failure::error(format!(
            "the data dir is not consistent: {}",
            found.problems.join("; ")
        )))
    }
}
