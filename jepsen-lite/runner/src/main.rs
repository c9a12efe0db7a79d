//! jepsen-runner: a cluster of real server processes under faults, checked the Jepsen way.
//!
//! ```text
//! jepsen-runner --server-bin target/debug/oxcd --duration 40s --seed 1
//! jepsen-runner --server-bin /usr/bin/etcd --members 5 --nemesis kill,partition --seed 1
//! ```
//!
//! A run: start the members (etcd's flags, so etcd itself runs too), start one watcher
//! per member and clients bound to members, inject the seeded faults one after another
//! (`schedule`), stop the clients, heal everything, and check: the jepsen-lite verdict on
//! the history, a write and linearizable reads after the heal, `HashKV` equal on every
//! member at one revision, and enough operations and faults that the run means something.
//! Availability under each fault (`availability`) is measured from the same run.
//!
//! Everything goes to `--out`: `history.jsonl` (replay it with `jepsen-lite check`), the
//! member logs, `faults.json` (the timeline), `attempts.jsonl` (every request: member,
//! kind, call and return times, acknowledged or not), `availability.json`, `summary.json`, and
//! `report.html` when the checker found something. The seed and the command that repeats
//! the run are printed first. The exit status is 0 only when every check passed.
//!
//! Layout: `cluster` (processes, namespaces, partitions) → `workload` (clients,
//! watchers) → `record` (history and attempts) → `schedule` (faults) → `availability`
//! → `checks`.

mod availability;
mod checks;
mod cluster;
mod membership;
mod record;
mod schedule;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use availability::FaultRecord;
use cluster::Cluster;
use record::Recorder;
use schedule::{FaultKind, Nemesis, PlannedFault, ScheduleOptions};
use workload::{Shared, WatchControl, WatchSpec};

/// A duration: `40s`, `2m`, `1500ms`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("not a duration: {text:?} (use ms, s or m)")),
    }
}

/// Operations per second of all clients together, by default: about 8,000 in a 40-s run,
/// which the checker decides within seconds even with hundreds of unknown outcomes.
const DEFAULT_RATE: u32 = 200;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "jepsen-runner",
    about = "Runs an etcd-compatible cluster of real processes under faults and checks its history"
)]
struct Args {
    /// The server binary (oxcd, or etcd 3.4): started with etcd's flags.
    #[arg(long)]
    server_bin: PathBuf,
    /// Members of the cluster.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// How long the clients run.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults to inject: kill, pause, partition, crash-all, disk-full, overlap (comma
    /// separated), all (kill, pause, partition and crash-all) or none.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Concurrent clients, spread over the members (default: two per member).
    #[arg(long)]
    clients: Option<usize>,
    /// Operations per second the clients start at most, together (0: as fast as the
    /// servers answer). Bounded by default so that a history's size, and the checker's
    /// work, depend on the run's length rather than on how fast the machine is.
    #[arg(long, default_value_t = DEFAULT_RATE)]
    rate: u32,
    /// Seed of the fault schedule and of the clients' choices (default: drawn).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for logs, data dirs and results (default: target/jepsen-runner/seed-S).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keys the clients share (few, so that they conflict); at least 3.
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Network: `netns` (namespaces; needed for partitions), `loopback`, or `auto`.
    #[arg(long, default_value = "auto")]
    network: String,
    /// Fewest acknowledged operations for the run to count.
    #[arg(long, default_value_t = 200)]
    min_ops: u64,
    /// The checker's time budget (running out is a failure).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    check_timeout: Duration,
    /// Plants one stale read in the recorded history before checking it: the run passes
    /// only if the checker then reports a violation (a test of the runner's verdict path).
    #[arg(long)]
    self_check: bool,
}

/// What `summary.json` holds.
#[derive(Serialize)]
struct Summary {
    server_bin: String,
    seed: u64,
    members: usize,
    duration_s: f64,
    network: String,
    counts: record::Counts,
    operations_in_history: usize,
    watches_in_history: usize,
    faults_planned: usize,
    faults_injected: usize,
    skipped_nemeses: Vec<String>,
    final_revision: Option<i64>,
    hash_kv: Option<Vec<u32>>,
    verdict: String,
    failures: Vec<String>,
}

fn write_json(path: &Path, value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            if let Err(error) = std::fs::write(path, text + "\n") {
                eprintln!("jepsen-runner: writing {}: {error}", path.display());
            }
        }
        Err(error) => eprintln!("jepsen-runner: {}: {error}", path.display()),
    }
}

/// Marks a directory as the runner's, so that a later run may clear it.
const MARKER: &str = ".jepsen-runner";

fn prepare_out(out: &Path) -> Result<(), String> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|error| format!("{}: {error}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(MARKER).exists() {
            return Err(format!(
                "{} exists and is not a jepsen-runner directory; give another --out",
                out.display()
            ));
        }
        std::fs::remove_dir_all(out)
            .map_err(|error| format!("clearing {}: {error}", out.display()))?;
    }
    std::fs::create_dir_all(out).map_err(|error| format!("{}: {error}", out.display()))?;
    std::fs::write(out.join(MARKER), "").map_err(|error| format!("{}: {error}", out.display()))
}

fn repeat_command(args: &Args, seed: u64, out: &Path) -> String {
    let mut command = format!(
        "jepsen-runner --server-bin {} --members {} --duration {}s --nemesis {} --seed {seed} --out {}",
        args.server_bin.display(),
        args.members,
        args.duration.as_secs(),
        args.nemesis,
        out.display()
    );
    if let Some(clients) = args.clients {
        command += &format!(" --clients {clients}");
    }
    if args.rate != DEFAULT_RATE {
        command += &format!(" --rate {}", args.rate);
    }
    if args.network != "auto" {
        command += &format!(" --network {}", args.network);
    }
    if args.self_check {
        command += " --self-check";
    }
    command
}

/// One half of an overlapping fault, on `member` (a cut-off adds to any cut in place).
fn strike(cluster: &mut Cluster, single: schedule::Single, member: usize) -> Result<(), String> {
    match single {
        schedule::Single::Kill => {
            cluster.kill(member);
            Ok(())
        }
        schedule::Single::Pause => cluster.pause(member),
        // Without namespaces there is no cut-off: a pause stands in (the runner said so).
        schedule::Single::Partition if !cluster.on_namespaces() => cluster.pause(member),
        schedule::Single::Partition => cluster.partition(&[member]),
    }
}

/// Injects one planned fault, waits for its duration and heals it.
async fn inject(
    cluster: &mut Cluster,
    fault: &PlannedFault,
    recorder: &Recorder,
) -> Result<FaultRecord, String> {
    let endpoints = cluster.endpoints();
    let members = endpoints.len();
    // Asked of every fault, so that the timeline says whether a random target led.
    let leader = checks::leader(&endpoints).await;
    let (target, note) = match leader {
        Some(leader) if fault.kind.at_leader() || fault.kind == FaultKind::CrashAll => {
            (leader, format!("m{leader} (the leader)"))
        }
        None if fault.kind.at_leader() => (
            fault.member,
            format!("m{} (no leader known; a random member)", fault.member),
        ),
        Some(leader) if leader == fault.member => (
            fault.member,
            format!("m{} (a random member; it led)", fault.member),
        ),
        _ => (fault.member, format!("m{} (a follower)", fault.member)),
    };
    // A random member that leads makes the fault one of the leader, and it is measured
    // as one (the timeline keeps the plan).
    let mut disk_note = String::new();
    let mut membership_note = String::new();
    // A replaced member's new ID and the members to ask for its promotion.
    let mut replaced = None;
    let kind = match leader {
        Some(leader) if leader == target && !fault.kind.at_leader() => {
            fault.kind.when_target_leads()
        }
        _ => fault.kind,
    };
    let affected = match kind {
        FaultKind::Kill | FaultKind::KillLeader => {
            cluster.kill(target);
            vec![target]
        }
        FaultKind::Pause | FaultKind::PauseLeader => {
            cluster.pause(target)?;
            vec![target]
        }
        FaultKind::Partition | FaultKind::PartitionLeader | FaultKind::PartitionFlap => {
            let side = schedule::minority(members, target, fault.companion);
            cluster.partition(&side)?;
            side
        }
        FaultKind::CrashAll => {
            for index in 0..members {
                cluster.kill(index);
            }
            (0..members).collect()
        }
        FaultKind::Overlap => {
            let (first, _) = fault.overlap.ok_or("an overlap without its halves")?;
            strike(cluster, first, fault.member)?;
            vec![fault.member, fault.companion]
        }
        FaultKind::Replace | FaultKind::ReplaceLeader => {
            let others: Vec<_> = endpoints
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != target)
                .map(|(_, endpoint)| *endpoint)
                .collect();
            let name = cluster.members[target].name.clone();
            let peer_url = format!("http://{}", cluster.members[target].peer);
            let id = membership::member_id(&others, &name).await?;
            membership::remove(&others, id).await?;
            cluster.wipe(target)?;
            let new_id = membership::add_learner(&others, &peer_url).await?;
            cluster.join(target)?;
            replaced = Some((new_id, others));
            membership_note =
                format!("{name} removed ({id:x}), wiped, added back as learner {new_id:x}");
            vec![target]
        }
        FaultKind::DiskFull => {
            let index = cluster.small_disk().ok_or("no member on a small disk")?;
            let bytes = cluster.fill_disk()?;
            disk_note = format!("m{index}: its disk filled ({} MB written)", bytes >> 20);
            vec![index]
        }
    };
    let start = recorder.now();
    let note = match kind {
        FaultKind::Partition | FaultKind::PartitionLeader => {
            format!("{note}: {affected:?} cut off from the rest")
        }
        FaultKind::PartitionFlap => format!(
            "{note}: {affected:?} cut off {} ms, whole {} ms, over and over",
            schedule::FLAP_CUT.as_millis(),
            schedule::FLAP_WHOLE.as_millis()
        ),
        FaultKind::CrashAll => match leader {
            Some(leader) => format!("every member killed (m{leader} led)"),
            None => "every member killed (no leader known)".into(),
        },
        FaultKind::DiskFull => disk_note,
        FaultKind::Replace | FaultKind::ReplaceLeader => format!("{note}: {membership_note}"),
        FaultKind::Overlap => match fault.overlap {
            Some((first, second)) => format!(
                "{} m{}, then half-way {} m{} as well{}",
                first.name(),
                fault.member,
                second.name(),
                fault.companion,
                match leader {
                    Some(leader) => format!(" (m{leader} led)"),
                    None => String::new(),
                }
            ),
            None => String::new(),
        },
        _ => note,
    };
    println!(
        "  {:>7.2} s  {:<17} {note}, for {:.1} s",
        start as f64 / 1e9,
        kind.name(),
        fault.duration.as_secs_f64()
    );
    if kind == FaultKind::PartitionFlap {
        let end = tokio::time::Instant::now() + fault.duration;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(schedule::FLAP_CUT.min(left)).await;
            cluster.heal()?;
            if tokio::time::Instant::now() + schedule::FLAP_WHOLE >= end {
                break;
            }
            tokio::time::sleep(schedule::FLAP_WHOLE).await;
            cluster.partition(&affected)?;
        }
    } else if let (FaultKind::Overlap, Some((_, second))) = (kind, fault.overlap) {
        tokio::time::sleep(fault.duration / 2).await;
        strike(cluster, second, fault.companion)?;
        tokio::time::sleep(fault.duration - fault.duration / 2).await;
    } else {
        tokio::time::sleep(fault.duration).await;
    }
    let mut note = note;
    if let Some((id, others)) = replaced {
        // A voter again once it has caught up; the fault lasts until then.
        let asked = tokio::time::Instant::now();
        membership::promote(&others, id).await?;
        note += &format!(
            "; promoted {:.1} s after it was asked",
            asked.elapsed().as_secs_f64()
        );
    }
    if kind == FaultKind::DiskFull {
        // A member that cannot write its log stops (etcd and oxcd alike); the heal empties
        // the disk and starts it again.
        cluster.free_disk()?;
        if let Some(status) = cluster.exited_member(affected[0]) {
            println!(
                "             m{} stopped on the full disk ({status}); restarting it",
                affected[0]
            );
            note += &format!("; it stopped ({status}) and was restarted");
        }
    }
    cluster.heal()?;
    Ok(FaultRecord {
        kind,
        planned: fault.kind,
        start,
        healed: recorder.now(),
        window_end: 0,
        affected,
        note,
    })
}

/// The whole run; returns the failures found (empty: every check passed).
async fn run(args: Args, seed: u64, out: PathBuf) -> Result<Vec<String>, String> {
    if args.members == 0 {
        return Err("--members must be at least 1".into());
    }
    if args.keys < 3 {
        return Err("--keys must be at least 3".into());
    }
    if !args.server_bin.is_file() {
        return Err(format!(
            "--server-bin {}: no such file",
            args.server_bin.display()
        ));
    }
    let mut nemeses = Nemesis::parse_list(&args.nemesis)?;
    let want_namespaces = match args.network.as_str() {
        "netns" => {
            cluster::namespaces_possible().map_err(|why| format!("--network netns: {why}"))?;
            true
        }
        "loopback" => false,
        "auto" => match cluster::namespaces_possible() {
            Ok(()) => true,
            Err(why) => {
                println!("network namespaces unavailable ({why}): members on loopback");
                false
            }
        },
        other => return Err(format!("--network {other}: netns, loopback or auto")),
    };
    prepare_out(&out)?;
    let mut cluster = match Cluster::new(&args.server_bin, &out, args.members, want_namespaces) {
        Err(why) if want_namespaces && args.network == "auto" => {
            println!("network namespaces could not be made ({why}): members on loopback");
            Cluster::new(&args.server_bin, &out, args.members, false)?
        }
        result => result?,
    };
    let use_namespaces = cluster.on_namespaces();
    let mut skipped = Vec::new();
    if nemeses.contains(&Nemesis::DiskFull) {
        let index = (seed % args.members as u64) as usize;
        if let Err(why) = cluster.mount_small_disk(index) {
            println!("SKIPPED nemesis disk-full: {why}");
            nemeses.retain(|&n| n != Nemesis::DiskFull);
            skipped.push("disk-full".to_string());
        }
    }
    if !use_namespaces && nemeses.contains(&Nemesis::Partition) {
        println!("SKIPPED nemesis partition: it needs network namespaces (root and iproute2)");
        if nemeses.contains(&Nemesis::Overlap) {
            println!("(the cut-offs of the overlap nemesis are pauses without namespaces)");
        }
        nemeses.retain(|&n| n != Nemesis::Partition);
        skipped.push("partition".to_string());
    }
    let plan = schedule::schedule(&ScheduleOptions {
        seed,
        members: args.members,
        total: args.duration,
        nemeses: nemeses.clone(),
        warm_up: Duration::from_secs(2),
        tail: Duration::from_secs(1),
    });
    write_json(&out.join("schedule.json"), &plan);

    let endpoints = cluster.endpoints();
    println!(
        "members: {}",
        cluster
            .members
            .iter()
            .map(|m| format!("{} {}", m.name, m.client))
            .collect::<Vec<_>>()
            .join(", ")
    );
    cluster.start_all()?;
    checks::wait_healthy(&endpoints, Duration::from_secs(30)).await?;

    let recorder = Arc::new(Recorder::new());
    let incarnations = cluster.incarnations();
    let control = Arc::new(WatchControl::new(endpoints.len()));
    let watchers: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(member, &address)| {
            tokio::spawn(workload::watcher(
                recorder.clone(),
                address,
                member,
                incarnations.clone(),
                WatchSpec::everything(member),
                control.clone(),
            ))
        })
        .collect();
    // A watcher of one prefix (by the seed), from the current revision: compactions may
    // cancel it, and it resumes after them.
    let prefix = workload::PREFIXES[(seed % workload::PREFIXES.len() as u64) as usize];
    let prefix_member = (seed as usize / workload::PREFIXES.len()) % endpoints.len();
    let prefix_watcher = tokio::spawn(workload::watcher(
        recorder.clone(),
        endpoints[prefix_member],
        prefix_member,
        incarnations.clone(),
        WatchSpec::prefix(prefix),
        control.clone(),
    ));
    let clients = args.clients.unwrap_or(2 * args.members).max(1);
    let shared = Arc::new(Shared {
        recorder: recorder.clone(),
        endpoints: endpoints.clone(),
        keys: args.keys,
        lease_ttl: args.duration.as_secs() as i64 + 300,
        watch: control.clone(),
        incarnations: incarnations.clone(),
        pace: (args.rate > 0).then(|| Duration::from_secs_f64(clients as f64 / args.rate as f64)),
        stop: Default::default(),
    });
    let client_tasks: Vec<_> = (0..clients)
        .map(|index| {
            tokio::spawn(workload::client(
                shared.clone(),
                index % args.members,
                seed.wrapping_mul(1_000_003).wrapping_add(index as u64),
            ))
        })
        .collect();

    println!("faults ({} planned):", plan.len());
    let origin = tokio::time::Instant::now();
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut failures = Vec::new();
    for fault in &plan {
        tokio::time::sleep_until(origin + fault.at).await;
        // Each fault strikes a whole cluster: one that has not recovered from the last one
        // yet is given up to 10 s more (the schedule shifts; its order and targets do not).
        if let Err(error) = checks::wait_healthy(&endpoints, Duration::from_secs(10)).await {
            println!("  (not healthy before {}: {error})", fault.kind);
        }
        match inject(&mut cluster, fault, &recorder).await {
            Ok(record) => faults.push(record),
            Err(error) => {
                failures.push(format!("injecting {}: {error}", fault.kind));
                let _ = cluster.heal();
            }
        }
        for exit in cluster.exited() {
            failures.push(exit);
        }
    }
    tokio::time::sleep_until(origin + args.duration).await;
    shared.stop.store(true, Ordering::Relaxed);
    for task in client_tasks {
        let _ = task.await;
    }
    let workload_end = recorder.now();
    for index in 0..faults.len() {
        faults[index].window_end = faults
            .get(index + 1)
            .map_or(workload_end, |next| next.start);
    }
    for exit in cluster.exited() {
        failures.push(exit);
    }

    // Heal and check that the cluster serves again.
    cluster.heal()?;
    println!("healed; checking");
    let mut final_revision = None;
    let mut hash_kv = None;
    match checks::wait_healthy(&endpoints, Duration::from_secs(30)).await {
        Err(error) => failures.push(format!("after the heal: {error}")),
        Ok(()) => {
            match checks::write_then_read_everywhere(&recorder, &endpoints, Duration::from_secs(20))
                .await
            {
                Ok(revision) => {
                    final_revision = Some(revision);
                    match checks::hash_kv_agree(&endpoints, revision).await {
                        Ok(hashes) => hash_kv = Some(hashes),
                        Err(error) => failures.push(error),
                    }
                }
                Err(error) => failures.push(error),
            }
        }
    }
    // The watches read on to the final revision, then stop.
    control
        .final_revision
        .store(final_revision.unwrap_or(i64::MAX), Ordering::Relaxed);
    let watch_deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for task in watchers {
        let left = watch_deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left, task).await.is_err() {
            control.abort.store(true, Ordering::Relaxed);
            failures.push(format!(
                "a watcher did not reach the final revision {final_revision:?} within 15 s"
            ));
        }
    }
    control.abort.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(2), prefix_watcher).await;
    for exit in cluster.exited() {
        failures.push(exit);
    }
    cluster.shutdown();

    // The history.
    let mut history = recorder.history();
    let counts = recorder.counts();
    if args.self_check {
        match checks::plant_stale_read(&mut history) {
            Some(index) => println!("self-check: planted a stale read at operation #{index}"),
            None => failures.push("self-check: no read to make stale".into()),
        }
    }
    let history_path = out.join("history.jsonl");
    std::fs::write(&history_path, history.to_jsonl())
        .map_err(|error| format!("{}: {error}", history_path.display()))?;
    println!(
        "history: {} operations ({} ok, {} refused, {} unknown, {} not sent), {} watch records with {} events",
        history.operations.len(),
        counts.ok,
        counts.failed,
        counts.unknown,
        counts.not_sent,
        history.watches.len(),
        counts.watch_events
    );
    let verdict = checks::verdict(&history, args.check_timeout);
    let verdict_text = match &verdict {
        Ok(result) => {
            println!("{result}");
            if args.self_check {
                failures.push("self-check: the planted stale read was NOT detected".into());
            }
            "ok".to_string()
        }
        Err(rejection) => {
            let (message, result) = (&rejection.message, &rejection.result);
            println!("{message}");
            if let Some(result) = result {
                let report = out.join("report.html");
                if std::fs::write(&report, jepsen_lite::report::render_html(&history, result))
                    .is_ok()
                {
                    println!("report: {}", report.display());
                }
            }
            if args.self_check
                && result
                    .as_ref()
                    .is_some_and(|r| r.outcome() == jepsen_lite::Outcome::Violation)
            {
                println!("self-check: the planted stale read was detected");
            } else {
                failures.push(message.lines().next().unwrap_or("jepsen-lite").to_string());
            }
            "failed".to_string()
        }
    };

    // Availability.
    let measured = availability::measure(&faults, &recorder.attempts(), args.members);
    let summary = availability::summarize(&measured);
    println!(
        "\navailability per fault kind (server {}):",
        args.server_bin.display()
    );
    print!("{}", availability::table(&summary));
    write_json(&out.join("faults.json"), &faults);
    let attempts: String = recorder
        .attempts()
        .iter()
        .filter_map(|attempt| serde_json::to_string(attempt).ok())
        .map(|line| line + "\n")
        .collect();
    if let Err(error) = std::fs::write(out.join("attempts.jsonl"), attempts) {
        eprintln!("jepsen-runner: writing attempts.jsonl: {error}");
    }
    write_json(
        &out.join("availability.json"),
        &serde_json::json!({ "faults": measured, "per_kind": summary }),
    );

    if let Err(error) = checks::not_vacuous(&checks::Vacuity {
        acknowledged: counts.ok,
        acknowledged_min: args.min_ops,
        faults_injected: faults.len(),
        faults_planned: plan.len(),
        watch_events: counts.watch_events,
    }) {
        failures.push(error);
    }
    write_json(
        &out.join("summary.json"),
        &Summary {
            server_bin: args.server_bin.display().to_string(),
            seed,
            members: args.members,
            duration_s: args.duration.as_secs_f64(),
            network: if use_namespaces { "netns" } else { "loopback" }.into(),
            counts,
            operations_in_history: history.operations.len(),
            watches_in_history: history.watches.len(),
            faults_planned: plan.len(),
            faults_injected: faults.len(),
            skipped_nemeses: skipped,
            final_revision,
            hash_kv,
            verdict: verdict_text,
            failures: failures.clone(),
        },
    );
    Ok(failures)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted (SIGINT)",
        _ = term.recv() => "terminated (SIGTERM)",
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/jepsen-runner/seed-{seed}")));
    println!(
        "jepsen-runner seed {seed}; repeat with:\n  {}",
        repeat_command(&args, seed, &out)
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("jepsen-runner: no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The run owns the cluster: when the run ends, fails, panics or is dropped on a
    // signal, the cluster's `Drop` kills every member and removes the namespaces.
    let result = runtime.block_on(async {
        let run = tokio::spawn(run(args.clone(), seed, out.clone()));
        let abort = run.abort_handle();
        tokio::select! {
            result = run => match result {
                Ok(result) => result,
                Err(error) if error.is_panic() => Err("the runner panicked".to_string()),
                Err(error) => Err(error.to_string()),
            },
            why = interrupted() => {
                abort.abort();
                Err(why.to_string())
            }
        }
    });
    // Dropping the runtime drops every task still holding a part of the run (the aborted
    // run among them), and with it the cluster.
    drop(runtime);
    match result {
        Ok(failures) if failures.is_empty() => {
            println!("\nPASS (seed {seed}; results in {})", out.display());
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            eprintln!("\nFAIL (seed {seed}; results in {}):", out.display());
            for failure in &failures {
                eprintln!("  - {failure}");
            }
            eprintln!("repeat with:\n  {}", repeat_command(&args, seed, &out));
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("\nFAIL (seed {seed}): {error}");
            eprintln!("repeat with:\n  {}", repeat_command(&args, seed, &out));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s").unwrap(), Duration::from_secs(40));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("7h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
