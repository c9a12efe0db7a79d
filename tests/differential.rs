//! The same etcdctl sessions against oxcd and against a real etcd 3.4 on this machine: the
//! outputs — revisions, key-values, headers, errors — must be identical. Then random
//! request sequences over gRPC (`differential/random.rs`), seeded: `DIFF_SEED=n` replays
//! one seed, `DIFF_SEEDS` and `DIFF_STEPS` set how many seeds and requests per seed run.

mod common;
#[path = "differential/random.rs"]
mod random;

use common::{Kind, Server};

/// Runs `steps` on a server; each step's stdout, or its error line.
fn session(server: &Server, steps: &[&[&str]]) -> Vec<String> {
    steps
        .iter()
        .map(|args| {
            let output = server.ctl(args);
            if output.status.success() {
                String::from_utf8_lossy(&output.stdout).to_string()
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr).to_string();
                stderr
                    .lines()
                    .find(|line| line.starts_with("Error:"))
                    .unwrap_or("")
                    .to_string()
            }
        })
        .collect()
}

fn compare(steps: &[&[&str]]) {
    let oxcd = Server::start(Kind::Oxcd);
    let etcd = Server::start(Kind::Etcd);
    let ours = session(&oxcd, steps);
    let theirs = session(&etcd, steps);
    for ((step, ours), theirs) in steps.iter().zip(&ours).zip(&theirs) {
        assert_eq!(ours, theirs, "etcdctl {step:?} differs from etcd");
    }
}

#[test]
fn kv_sessions_match_etcd() {
    compare(&[
        &["put", "a", "1", "-w", "json"],
        &["put", "b", "2", "-w", "json"],
        &["put", "a", "3", "--prev-kv", "-w", "json"],
        &["get", "a", "-w", "json"],
        &["get", "", "--prefix", "-w", "json"],
        &["get", "a", "--rev=2", "-w", "json"],
        &["get", "a", "--from-key", "--limit=1", "-w", "json"],
        &[
            "get",
            "a",
            "--prefix",
            "--sort-by=VERSION",
            "--order=DESCEND",
            "-w",
            "json",
        ],
        &["get", "a", "--rev=99"],
        &["del", "a", "--prev-kv", "-w", "json"],
        &["del", "zzz", "-w", "json"],
        &["get", "a", "-w", "json"],
        &["put", "", "x"],
        &["compact", "3"],
        &["get", "a", "--rev=2"],
        &["get", "b", "--rev=3", "-w", "json"],
        &["compact", "2"],
        &["put", "c", "1", "--lease=999"],
        &["put", "c", "1", "--ignore-value"],
        &["get", "c", "--keys-only", "-w", "json"],
    ]);
}

#[test]
fn txn_sessions_match_etcd() {
    let steps: Vec<(&str, &str)> = vec![
        ("", "value(\"k\") = \"v\"\n\nput k v1\n\nput k v2\n\n"),
        ("", "version(\"k\") = \"1\"\n\nget k\ndel k\n\n\n"),
        (
            "",
            "create(\"k\") > \"0\"\nmod(\"k\") < \"100\"\n\nput x 1\n\nput y 1\n\n",
        ),
    ];
    let oxcd = Server::start(Kind::Oxcd);
    let etcd = Server::start(Kind::Etcd);
    for server in [&oxcd, &etcd] {
        server.ok(&["put", "k", "v"]);
    }
    for (_, input) in steps {
        let ours = oxcd.ctl_input(&["txn", "-i", "-w", "json"], input);
        let theirs = etcd.ctl_input(&["txn", "-i", "-w", "json"], input);
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "txn {input:?} differs from etcd"
        );
    }
    let ours = oxcd.ok(&["get", "", "--prefix", "-w", "json"]);
    let theirs = etcd.ok(&["get", "", "--prefix", "-w", "json"]);
    assert_eq!(ours, theirs);
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.parse().ok())
}

/// Seeded random request sequences against a fresh oxcd and a fresh etcd each; the
/// responses and the final watch history must be identical. By default 5 seeds of 700
/// requests.
#[test]
fn random_sequences_match_etcd() {
    let seeds: Vec<u64> = match env_number("DIFF_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number("DIFF_SEEDS").unwrap_or(5)).collect(),
    };
    let steps = env_number("DIFF_STEPS").unwrap_or(700) as usize;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for seed in seeds {
        println!("differential seed {seed} ({steps} requests)");
        let oxcd = Server::start(Kind::Oxcd);
        let etcd = Server::start(Kind::Etcd);
        runtime.block_on(async {
            let mut ours = random::Clients::connect(&oxcd.endpoint()).await;
            let mut theirs = random::Clients::connect(&etcd.endpoint()).await;
            random::run(seed, steps, &mut ours, &mut theirs).await;
        });
    }
}
