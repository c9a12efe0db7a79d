//! oxctl against etcdctl: the same commands, one run by etcdctl against a server and one
//! run by oxctl against a twin (same member and cluster IDs, the same history of writes),
//! must print the same bytes and exit with the same code. Then the verbs whose output
//! depends on more than one server: a three-member cluster (member list, endpoint status
//! and hashes with `--cluster`, move-leader), locks, elections, make-mirror and auth.

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{start_cluster, Kind, Server};

fn oxctl(endpoint: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxctl"));
    command
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoint}"));
    command
}

fn run(mut command: Command, args: &[&str], input: &str) -> Output {
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the client");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes());
    child.wait_with_output().expect("the client's output")
}

/// What a client printed, as compared: stdout, the `Error:` and other lines of stderr
/// (without clientv3's JSON retry warnings), and the exit code.
fn transcript(output: &Output) -> String {
    let stderr: String = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.starts_with("{\"level\""))
        .map(|line| format!("{line}\n"))
        .collect();
    format!(
        "{}--- stderr\n{stderr}--- exit {}\n",
        String::from_utf8_lossy(&output.stdout),
        output.status.code().unwrap_or(-1)
    )
}

/// Runs `args` with etcdctl against `etcdctl_server` and with oxctl against
/// `oxctl_server`; both transcripts, each server's address written `ENDPOINT`.
fn both(
    etcdctl_server: &Server,
    oxctl_server: &Server,
    args: &[&str],
    input: &str,
) -> (String, String) {
    // The twins differ only in their ports.
    let theirs = transcript(&run(etcdctl_server.etcdctl(), args, input))
        .replace(&etcdctl_server.endpoint(), "ENDPOINT");
    let ours = transcript(&run(oxctl(&oxctl_server.endpoint()), args, input))
        .replace(&oxctl_server.endpoint(), "ENDPOINT");
    (theirs, ours)
}

/// Times like `took = 2.59ms` differ from run to run.
fn without_times(text: &str) -> String {
    text.split('\n')
        .map(|line| match line.to_lowercase().find("took") {
            Some(at) => line[..at].to_string(),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn oxctl_prints_what_etcdctl_prints() {
    let a = Server::start(Kind::Oxcd);
    let b = Server::start(Kind::Oxcd);
    let txn = "mod(\"t1\") = \"0\"\n\nput t1 x\nget t1\n\nput t1 y\ndel t2\n\n";
    let txn2 = "value(\"t1\") = \"x\"\nversion(\"k9\") = \"0\"\n\nget t --prefix --limit 1\ndel t1 --prev-kv\n\nput t3 v3\n\n";
    let script: Vec<(Vec<&str>, &str)> = vec![
        (vec!["put", "foo", "bar"], ""),
        (vec!["put", "foo", "baz", "--prev-kv"], ""),
        (vec!["put", "foo", "q", "-w", "json"], ""),
        (vec!["put", "foo", "r", "-w", "fields", "--prev-kv"], ""),
        (vec!["put", "foo", "s", "-w", "json", "--prev-kv"], ""),
        (vec!["put", "k2", "v2", "-w", "table"], ""),
        (vec!["put", "fromstdin"], "a value\nwith lines"),
        (vec!["put", "k¿", "multi-byte"], ""),
        (vec!["put", "k\u{c0}", "past the prefix on bytes"], ""),
        (vec!["get", "k¿", "--prefix"], ""),
        (vec!["get", "k¿", "--prefix", "--hex"], ""),
        (vec!["get", "foo"], ""),
        (vec!["get", "foo", "-w", "json"], ""),
        (vec!["get", "foo", "-w", "fields"], ""),
        (vec!["get", "foo", "-w", "table"], ""),
        (vec!["get", "", "--prefix", "--keys-only"], ""),
        (vec!["get", "", "--from-key", "-w", "json"], ""),
        (
            vec!["get", "a", "z", "--limit", "1", "--order", "DESCEND"],
            "",
        ),
        (
            vec!["get", "a", "z", "--sort-by", "VALUE", "-w", "json"],
            "",
        ),
        (vec!["get", "foo", "--print-value-only"], ""),
        (vec!["get", "foo", "--print-value-only", "-w", "json"], ""),
        (vec!["get", "fromstdin", "--consistency", "s"], ""),
        (vec!["get", "foo", "--rev", "2"], ""),
        (vec!["get", "foo", "--rev", "1000"], ""),
        (vec!["get", "foo", "--prefix", "--from-key"], ""),
        (vec!["get", "foo", "--order", "SIDEWAYS"], ""),
        (vec!["del", "nope"], ""),
        (vec!["del", "foo", "--prev-kv", "-w", "json"], ""),
        (vec!["put", "foo1", "a"], ""),
        (vec!["put", "foo2", "b"], ""),
        (
            vec!["del", "foo", "--prefix", "--prev-kv", "-w", "fields"],
            "",
        ),
        (vec!["del", "-w", "json", "k2"], ""),
        (vec!["txn"], txn),
        (vec!["txn", "-w", "json"], txn),
        (vec!["txn", "-w", "fields"], txn),
        (vec!["txn", "-w", "json"], txn2),
        (vec!["txn"], txn2),
        (vec!["txn", "-i"], txn2),
        (vec!["txn"], "bogus\n\n\n"),
        (vec!["txn"], "mod(\"k\") > \"x\"\n\n\n"),
        (vec!["txn"], "\nfrob k v\n\n"),
        (vec!["compaction", "3"], ""),
        (vec!["compaction", "3"], ""),
        (vec!["compaction", "x"], ""),
        (vec!["get", "foo", "--rev", "2"], ""),
        (vec!["member", "list"], ""),
        (vec!["member", "list", "-w", "json"], ""),
        (vec!["member", "list", "-w", "fields"], ""),
        (vec!["endpoint", "status", "-w", "fields"], ""),
        (vec!["endpoint", "hashkv", "-w", "table"], ""),
        (vec!["endpoint", "health", "-w", "fields"], ""),
        (vec!["alarm", "list"], ""),
        (vec!["alarm", "disarm"], ""),
        (vec!["lease", "list", "-w", "json"], ""),
        (vec!["lease", "revoke", "123"], ""),
        (vec!["lease", "timetolive", "zz"], ""),
        (vec!["lease", "grant", "ten"], ""),
        (vec!["member", "add", "a", "b", "http://x"], ""),
        (vec!["member", "remove", "123"], ""),
        (vec!["user", "add", "alice:pw"], ""),
        (
            vec!["user", "add", "bob", "--new-user-password=x", "-w", "json"],
            "",
        ),
        (
            vec!["user", "add", "carol", "--interactive=false"],
            "secret\n",
        ),
        (vec!["role", "add", "r1"], ""),
        (
            vec![
                "role",
                "grant-permission",
                "r1",
                "readwrite",
                "/a/",
                "--prefix",
            ],
            "",
        ),
        (
            vec!["role", "grant-permission", "r1", "read", "/b", "/c"],
            "",
        ),
        (
            vec![
                "role",
                "grant-permission",
                "r1",
                "write",
                "/z",
                "--from-key",
            ],
            "",
        ),
        (vec!["role", "grant-permission", "r1", "frob", "k"], ""),
        (vec!["role", "get", "r1"], ""),
        (vec!["role", "get", "r1", "-w", "json"], ""),
        (vec!["user", "grant-role", "alice", "r1"], ""),
        (vec!["user", "get", "alice"], ""),
        (vec!["user", "get", "alice", "--detail"], ""),
        (vec!["user", "get", "alice", "-w", "json"], ""),
        (vec!["user", "get", "nobody"], ""),
        (
            vec!["role", "revoke-permission", "r1", "/a/", "--prefix"],
            "",
        ),
        (vec!["role", "revoke-permission", "r1", "/b", "/c"], ""),
        (vec!["user", "revoke-role", "alice", "r1"], ""),
        (vec!["user", "list", "-w", "json"], ""),
        (vec!["role", "list"], ""),
        (
            vec!["user", "passwd", "alice", "--interactive=false"],
            "newpw\n",
        ),
        (vec!["user", "delete", "bob"], ""),
        (vec!["role", "delete", "r1"], ""),
        (vec!["role", "delete", "r1"], ""),
    ];
    let mut differences = Vec::new();
    for (args, input) in &script {
        let (theirs, ours) = both(&a, &b, args, input);
        if without_times(&theirs) != without_times(&ours) {
            differences.push(format!("{args:?}\n--- etcdctl\n{theirs}--- oxctl\n{ours}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} commands differ:\n{}",
        differences.len(),
        script.len(),
        differences.join("\n")
    );
}

/// The hex ID a `lease grant` printed.
fn granted(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("a lease grant's answer: {text}"))
        .to_string()
}

#[test]
fn lease_verbs_print_what_etcdctl_prints() {
    let a = Server::start(Kind::Oxcd);
    let b = Server::start(Kind::Oxcd);
    let theirs = granted(&run(a.etcdctl(), &["lease", "grant", "600"], ""));
    let ours = granted(&run(oxctl(&b.endpoint()), &["lease", "grant", "600"], ""));
    let decimal = |hex: &str| {
        i64::from_str_radix(hex, 16)
            .expect("a lease ID")
            .to_string()
    };
    let normal = |text: String, id: &str| {
        text.replace(id, "LEASE")
            .replace(&decimal(id), "LEASE")
            // The remaining TTL may tick between the two calls.
            .replace("remaining(599s)", "remaining(600s)")
            .replace("\"TTL\" : 599", "\"TTL\" : 600")
            .replace("\"ttl\":599", "\"ttl\":600")
    };
    let commands: Vec<Vec<&str>> = vec![
        vec!["put", "leased", "v", "--lease", "ID"],
        vec!["lease", "timetolive", "ID", "--keys"],
        vec!["lease", "timetolive", "ID", "--keys", "-w", "json"],
        vec!["lease", "timetolive", "ID", "-w", "fields"],
        vec!["lease", "keep-alive", "--once", "ID"],
        vec!["lease", "keep-alive", "--once", "ID", "-w", "json"],
        vec!["lease", "list"],
        vec!["lease", "list", "-w", "json"],
        vec!["lease", "revoke", "ID", "-w", "json"],
        vec!["lease", "timetolive", "ID"],
        vec!["lease", "revoke", "ID"],
        vec!["get", "leased"],
    ];
    for command in &commands {
        let with = |id: &str| -> Vec<String> {
            command
                .iter()
                .map(|arg| {
                    if *arg == "ID" {
                        id.to_string()
                    } else {
                        arg.to_string()
                    }
                })
                .collect()
        };
        let their_args = with(&theirs);
        let our_args = with(&ours);
        let their_args: Vec<&str> = their_args.iter().map(String::as_str).collect();
        let our_args: Vec<&str> = our_args.iter().map(String::as_str).collect();
        let their_text = normal(transcript(&run(a.etcdctl(), &their_args, "")), &theirs);
        let our_text = normal(transcript(&run(oxctl(&b.endpoint()), &our_args, "")), &ours);
        assert_eq!(our_text, their_text, "{command:?}");
    }
}

#[test]
fn watch_prints_what_etcdctl_prints() {
    let a = Server::start(Kind::Oxcd);
    let b = Server::start(Kind::Oxcd);
    for format in ["simple", "json", "fields"] {
        let args = ["watch", "w", "--prefix", "--prev-kv", "-w", format];
        let mut theirs = a.etcdctl();
        theirs
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut ours = oxctl(&b.endpoint());
        ours.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
        let their_child = theirs.spawn().expect("etcdctl watch");
        let our_child = ours.spawn().expect("oxctl watch");
        std::thread::sleep(Duration::from_millis(800));
        for server in [&a, &b] {
            server.ok(&["put", "w1", format]);
            server.ok(&["put", "w1", "again"]);
            server.ok(&["del", "w1"]);
        }
        std::thread::sleep(Duration::from_millis(800));
        let stop = |mut child: std::process::Child| {
            let _ = child.kill();
            String::from_utf8_lossy(&child.wait_with_output().expect("output").stdout).to_string()
        };
        let (their_text, our_text) = (stop(their_child), stop(our_child));
        assert!(!their_text.is_empty(), "etcdctl saw no events");
        assert_eq!(our_text, their_text, "watch -w {format}");
    }
    // `-- command` runs once per event with the event in its environment.
    let mut exec = oxctl(&b.endpoint());
    exec.args([
        "watch",
        "x",
        "--",
        "sh",
        "-c",
        "echo ran $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY=$ETCD_WATCH_VALUE at $ETCD_WATCH_REVISION",
    ])
    .stdout(Stdio::piped());
    let exec = exec.spawn().expect("oxctl watch -- command");
    std::thread::sleep(Duration::from_millis(800));
    // The twins keep the same history.
    for server in [&a, &b] {
        server.ok(&["put", "x", "1"]);
        server.ok(&["del", "x"]);
    }
    std::thread::sleep(Duration::from_millis(800));
    let mut exec = exec;
    let _ = exec.kill();
    let text =
        String::from_utf8_lossy(&exec.wait_with_output().expect("output").stdout).to_string();
    let revision = b.ok(&["get", "x", "-w", "fields"]);
    let revision: i64 = revision
        .lines()
        .find_map(|line| line.strip_prefix("\"Revision\" : "))
        .and_then(|n| n.parse().ok())
        .expect("a revision");
    assert_eq!(
        text,
        format!(
            "PUT\nx\n1\nran PUT x=1 at {}\nDELETE\nx\n\nran DELETE x= at {revision}\n",
            revision - 1
        )
    );
    // A watch from a compacted revision: the cancel, its reason and exit code 5.
    for server in [&a, &b] {
        server.ok(&["compaction", "4"]);
    }
    let (theirs, ours) = both(&a, &b, &["watch", "w", "--rev", "1", "-w", "json"], "");
    assert_eq!(ours, theirs);
}

/// Runs `args` with oxctl against `endpoint`, asserting success; stdout.
fn ox_ok(endpoint: &str, args: &[&str]) -> String {
    let output = run(oxctl(endpoint), args, "");
    assert!(
        output.status.success(),
        "oxctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn cluster_verbs_work_on_three_members() {
    let members = start_cluster(3);
    let all = members
        .iter()
        .map(Server::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    let first = &members[0];
    // Members publish their client URLs once they run.
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.ok(&["member", "list"]).matches(", http").count() < 6 {
        assert!(
            Instant::now() < deadline,
            "members never published their URLs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Reads that do not depend on which client asks.
    for args in [
        &["member", "list", "-w", "table"][..],
        &["member", "list", "-w", "json"],
        &["endpoint", "hashkv", "--cluster"],
    ] {
        let (theirs, ours) = both(first, first, args, "");
        assert_eq!(ours, theirs, "{args:?}");
    }
    let status = ox_ok(
        &first.endpoint(),
        &["endpoint", "status", "--cluster", "-w", "table"],
    );
    assert_eq!(status.lines().count(), 3 + 3 + 1, "{status}");
    assert_eq!(status.matches(" true ").count(), 1, "one leader: {status}");
    let health = run(
        oxctl(&first.endpoint()),
        &["endpoint", "health", "--cluster"],
        "",
    );
    assert!(health.status.success());
    assert_eq!(
        String::from_utf8_lossy(&health.stderr)
            .matches("is healthy: successfully committed proposal")
            .count(),
        3
    );

    // Leadership moves to a follower named in hex.
    let leader_of = || -> (String, Vec<String>) {
        let text = ox_ok(&all, &["endpoint", "status", "--endpoints", &all]);
        let mut leader = String::new();
        let mut followers = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(", ").collect();
            if fields[4] == "true" {
                leader = fields[1].to_string();
            } else {
                followers.push(fields[1].to_string());
            }
        }
        (leader, followers)
    };
    let (leader, followers) = leader_of();
    let moved = ox_ok(&all, &["move-leader", &followers[0], "--endpoints", &all]);
    assert_eq!(
        moved,
        format!("Leadership transferred from {leader} to {}\n", followers[0])
    );
    assert_eq!(leader_of().0, followers[0]);
    // Only a leader's endpoint can move leadership.
    let follower_endpoint = members
        .iter()
        .map(Server::endpoint)
        .find(|endpoint| ox_ok(endpoint, &["endpoint", "status"]).contains(", false, false,"))
        .expect("a follower");
    let refused = run(oxctl(&follower_endpoint), &["move-leader", &leader], "");
    assert_eq!(refused.status.code(), Some(128));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no leader endpoint given at"));
    assert_eq!(
        ox_ok(&all, &["defrag", "--cluster"])
            .matches("Finished defragmenting etcd member")
            .count(),
        3
    );
}

#[test]
fn locks_and_elections_interoperate_with_etcdctl() {
    let server = Server::start(Kind::Oxcd);
    let endpoint = server.endpoint();
    // A command run under the lock sees its key and revision.
    let held = ox_ok(
        &endpoint,
        &[
            "lock",
            "mylock",
            "sh",
            "-c",
            "echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV",
        ],
    );
    assert!(held.starts_with("key=mylock/"), "{held}");
    assert!(held.contains(" rev="), "{held}");
    // While etcdctl holds the lock, oxctl waits for it.
    let mut holder = server.etcdctl();
    holder.args(["lock", "shared"]).stdout(Stdio::piped());
    let mut holder = holder.spawn().expect("etcdctl lock");
    std::thread::sleep(Duration::from_millis(700));
    let mut waiter = oxctl(&endpoint);
    waiter
        .args(["lock", "shared", "echo", "mine"])
        .stdout(Stdio::piped());
    let waiter = waiter.spawn().expect("oxctl lock");
    std::thread::sleep(Duration::from_millis(1500));
    // Still waiting: the lock's key list has two entries.
    assert_eq!(
        server
            .ok(&["get", "shared/", "--prefix", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
    unsafe_interrupt(holder.id());
    let _ = holder.wait();
    let output = waiter.wait_with_output().expect("oxctl lock output");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "mine\n");

    // An oxctl campaign is seen by an etcdctl observer, and resigns on SIGINT.
    let mut observer = server.etcdctl();
    observer
        .args(["elect", "-l", "chief"])
        .stdout(Stdio::piped());
    let observer = observer.spawn().expect("etcdctl elect -l");
    let mut candidate = oxctl(&endpoint);
    candidate
        .args(["elect", "chief", "proposal-1"])
        .stdout(Stdio::piped());
    let candidate = candidate.spawn().expect("oxctl elect");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.ok(&["get", "chief/", "--prefix"]).is_empty() {
        assert!(Instant::now() < deadline, "the campaign never won");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    unsafe_interrupt(candidate.id());
    let candidate = candidate.wait_with_output().expect("oxctl elect output");
    assert!(candidate.status.success(), "{candidate:?}");
    let text = String::from_utf8_lossy(&candidate.stdout).to_string();
    assert!(
        text.starts_with("chief/") && text.ends_with("\nproposal-1\n"),
        "{text}"
    );
    assert!(
        server.ok(&["get", "chief/", "--prefix"]).is_empty(),
        "resigned"
    );
    let mut observer = observer;
    let _ = observer.kill();
    let seen =
        String::from_utf8_lossy(&observer.wait_with_output().expect("observer").stdout).to_string();
    assert!(seen.contains("proposal-1"), "{seen}");
}

/// SIGINT to a process, as Ctrl-C sends it.
fn unsafe_interrupt(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

#[test]
fn make_mirror_copies_and_follows() {
    let source = Server::start(Kind::Oxcd);
    let dest = Server::start(Kind::Oxcd);
    // 1,280 keys, in txns of 128 puts, so that the copy reads more than one page.
    for batch in 0..10 {
        let puts: String = (0..128)
            .map(|i| format!("put /m/k{:04} v{i}\n", batch * 128 + i))
            .collect();
        let output = source.ctl_input(&["txn"], &format!("\n{puts}\n\n"));
        assert!(output.status.success(), "{output:?}");
    }
    source.ok(&["put", "/other", "not mirrored"]);
    let copy = run(
        oxctl(&source.endpoint()),
        &[
            "make-mirror",
            &dest.endpoint(),
            "--prefix",
            "/m/",
            "--dest-prefix",
            "/copy/",
            "--once",
        ],
        "",
    );
    assert!(copy.status.success(), "{copy:?}");
    assert_eq!(String::from_utf8_lossy(&copy.stdout), "1280\n");
    let note = String::from_utf8_lossy(&copy.stderr).to_string();
    let resume_at = note
        .split("--rev ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("where the copy ended: {note}"))
        .to_string();
    assert_eq!(
        ox_ok(
            &dest.endpoint(),
            &["get", "/copy/", "--prefix", "--count-only", "-w", "fields"]
        )
        .lines()
        .find(|line| line.starts_with("\"Count\""))
        .expect("a count"),
        "\"Count\" : 1280"
    );
    assert_eq!(
        dest.ok(&["get", "/copy/k0129", "--print-value-only"]),
        "v1\n"
    );
    assert!(dest.ok(&["get", "/other"]).is_empty());
    // Live: changes after the copy follow, deletes too.
    let mut live = oxctl(&source.endpoint());
    live.args([
        "make-mirror",
        &dest.endpoint(),
        "--prefix",
        "/m/",
        "--dest-prefix",
        "/copy/",
        "--rev",
        &resume_at,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut live = live.spawn().expect("make-mirror");
    std::thread::sleep(Duration::from_millis(800));
    source.ok(&["put", "/m/new", "fresh"]);
    source.ok(&["del", "/m/k0000"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let new = dest.ok(&["get", "/copy/new", "--print-value-only"]);
        let gone = dest.ok(&["get", "/copy/k0000"]).is_empty();
        if new == "fresh\n" && gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mirror did not follow: {new:?} {gone}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = live.kill();
    let _ = live.wait();
}

#[test]
fn auth_enable_makes_the_root_role_as_etcdctl_does() {
    let server = Server::start(Kind::Oxcd);
    let endpoint = server.endpoint();
    ox_ok(&endpoint, &["user", "add", "root:rootpw"]);
    assert_eq!(
        ox_ok(&endpoint, &["auth", "enable"]),
        "Authentication Enabled\n"
    );
    let denied = run(oxctl(&endpoint), &["get", "k"], "");
    assert_eq!(denied.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&denied.stderr),
        "Error: etcdserver: user name is empty\n"
    );
    let wrong = run(oxctl(&endpoint), &["--user", "root:nope", "get", "k"], "");
    assert!(String::from_utf8_lossy(&wrong.stderr)
        .contains("authentication failed, invalid user ID or password"));
    ox_ok(&endpoint, &["--user", "root:rootpw", "put", "k", "v"]);
    assert_eq!(
        ox_ok(
            &endpoint,
            &[
                "--user",
                "root",
                "--password",
                "rootpw",
                "get",
                "k",
                "--print-value-only"
            ]
        ),
        "v\n"
    );
    assert_eq!(
        ox_ok(&endpoint, &["--user", "root:rootpw", "auth", "disable"]),
        "Authentication Disabled\n"
    );
}

/// Every file under `dir` with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).expect("a file")));
        }
    }
    files.sort();
    files
}

#[test]
fn inspect_reads_a_data_dir_without_changing_it() {
    let mut server = Server::start(Kind::Oxcd);
    for i in 0..20 {
        server.ok(&["put", &format!("k{}", i % 7), &format!("v{i}")]);
    }
    server.ok(&["compaction", "10"]);
    assert!(server.terminate(), "the member stops cleanly");
    let data_dir = server.data_dir.clone();
    let before = files_under(&data_dir);
    let report = ox_ok(
        "127.0.0.1:1",
        &["inspect", data_dir.to_str().expect("a path")],
    );
    assert_eq!(
        files_under(&data_dir),
        before,
        "inspect changed the data dir"
    );
    for expected in [
        "hard state: term 2",
        "revision 21, compacted at 10",
        "7 keys",
        "consistent: the log, the snapshots and the backend agree",
    ] {
        assert!(report.contains(expected), "{expected:?} in {report}");
    }
    let json = ox_ok(
        "127.0.0.1:1",
        &["inspect", data_dir.to_str().expect("a path"), "-w", "json"],
    );
    assert!(
        json.contains("\"revision\":21,") && json.contains("\"problems\":[]"),
        "{json}"
    );

    // A damaged log record is named, with the member's own file, and fails the command.
    let segment = before
        .iter()
        .find(|(path, _)| path.extension().is_some_and(|e| e == "wal"))
        .map(|(path, _)| path.clone())
        .expect("a WAL segment");
    let mut bytes = std::fs::read(&segment).expect("the segment");
    // The type byte of a record in the middle of the segment (frames: a 16-byte header
    // whose first word is the payload length, the payload, zero padding to 8), so
    // that whole records follow the damaged one: damage, not a torn tail.
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at + 16 <= bytes.len() {
        // Sixteen zero bytes where a header should be end the records.
        if bytes[at..at + 16].iter().all(|b| *b == 0) {
            break;
        }
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        frames.push(at);
        at += (16 + length).div_ceil(8) * 8;
    }
    assert!(frames.len() > 10, "{} records", frames.len());
    bytes[frames[frames.len() / 2] + 8] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("damaging the segment");
    let damaged = run(
        oxctl("127.0.0.1:1"),
        &["inspect", data_dir.to_str().expect("a path")],
        "",
    );
    assert_eq!(damaged.status.code(), Some(1));
    let error = String::from_utf8_lossy(&damaged.stderr).to_string();
    assert!(
        error.starts_with("Error: the data dir is not consistent: the WAL does not read: ")
            && error.contains(&segment.display().to_string()),
        "{error}"
    );
    let missing = run(oxctl("127.0.0.1:1"), &["inspect", "/nonexistent/dir"], "");
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "Error: /nonexistent/dir holds no member data\n"
    );
}

#[test]
fn an_oxcd_backend_file_is_a_snapshot_too() {
    let mut server = Server::start(Kind::Oxcd);
    for i in 0..12 {
        server.ok(&["put", &format!("key{}", i % 5), &format!("value{i}")]);
    }
    let lease = granted(&server.ctl(&["lease", "grant", "900"]));
    server.ok(&["put", "leased", "x", "--lease", &lease]);
    server.ok(&["user", "add", "ops:pw"]);
    let hash_then = server.ok(&["endpoint", "hashkv"]);
    assert!(server.terminate());
    let db = server.data_dir.join("member/snap/db");
    let db = db.to_str().expect("a path");

    // Status: the hash is what the member's HashKV was.
    let status = ox_ok("127.0.0.1:1", &["snapshot", "status", db, "-w", "json"]);
    let hash = hash_then
        .trim()
        .rsplit(", ")
        .next()
        .expect("a hash")
        .to_string();
    assert!(
        status.starts_with(&format!("{{\"hash\":{hash},\"revision\":14,")),
        "{status} vs {hash}"
    );

    // A copied backend has no digest: restore asks for --skip-hash-check, as etcdutl does.
    let dir = tempfile::tempdir().expect("a temp dir");
    let restored = dir.path().join("restored");
    let restored_arg = restored.to_str().expect("a path");
    let refused = run(
        oxctl("127.0.0.1:1"),
        &["snapshot", "restore", db, "--data-dir", restored_arg],
        "",
    );
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "Error: snapshot missing hash but --skip-hash-check=false\n"
    );
    assert!(!restored.exists());
    let done = ox_ok(
        "127.0.0.1:1",
        &[
            "snapshot",
            "restore",
            db,
            "--data-dir",
            restored_arg,
            "--skip-hash-check",
        ],
    );
    assert!(
        done.contains("revision 14") && done.contains("leases: 1, users: 1"),
        "{done}"
    );

    // A member started on it serves the keys, the lease and the user, in a new cluster.
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut member = Command::new(env!("CARGO_BIN_EXE_oxcd"))
        .args([
            "--data-dir",
            restored_arg,
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", common::free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the restored member");
    let endpoint = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run(oxctl(&endpoint), &["endpoint", "health"], "")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the restored member never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        ox_ok(&endpoint, &["get", "key3", "--print-value-only"]),
        "value8\n"
    );
    assert!(ox_ok(&endpoint, &["lease", "list"]).contains(&lease));
    assert_eq!(ox_ok(&endpoint, &["user", "list"]), "ops\n");
    assert!(ox_ok(&endpoint, &["member", "list"]).contains("http://localhost:2380"));
    let _ = member.kill();
    let _ = member.wait();
}
