//! Three oxcd processes on loopback form a cluster that the real etcdctl drives.

mod common;

use std::time::{Duration, Instant};

use common::{start_cluster, start_cluster_with, Server};

/// The member that reports itself leader, by index.
fn leader(members: &[Server]) -> Option<usize> {
    members.iter().position(|member| {
        member.child.is_some()
            && member
                .ctl(&["endpoint", "status"])
                .stdout
                .windows(b", true, false, ".len())
                .any(|w| w == b", true, false, ")
    })
}

fn wait_for_leader(members: &[Server]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(index) = leader(members) {
            return index;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_members_replicate_list_each_other_and_survive_losing_the_leader() {
    let mut members = start_cluster(3);
    // Writes through every member (followers forward to the leader); linearizable reads
    // anywhere see them.
    for (i, member) in members.iter().enumerate() {
        assert_eq!(
            member.ok(&["put", &format!("k{i}"), &format!("v{i}")]),
            "OK\n"
        );
    }
    for member in &members {
        assert_eq!(
            member.ok(&["get", "k", "--prefix", "--print-value-only"]),
            "v0\nv1\nv2\n"
        );
    }
    // Every member publishes its name and client URL through Raft.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = members[1].ok(&["member", "list"]);
        let complete = (0..3).all(|i| {
            list.contains(&format!(", started, m{}, ", i + 1))
                && list.contains(&format!("http://127.0.0.1:{}", members[i].port))
        });
        if complete {
            assert_eq!(list.lines().count(), 3, "{list}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member list never complete: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // `--cluster` dials every listed client URL with the URL itself as the HTTP/2
    // `:authority` (scheme included), which h2 used to refuse: every member must answer.
    let output = members[0].ctl(&["endpoint", "status", "--cluster", "-w", "json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("Failed"),
        "{stdout}{stderr}"
    );
    for member in &members {
        let endpoint = format!("\"Endpoint\":\"http://127.0.0.1:{}\"", member.port);
        assert_eq!(stdout.matches(&endpoint).count(), 1, "{stdout}");
    }
    let ids = json_numbers(&stdout, "member_id");
    let leaders = json_numbers(&stdout, "leader");
    assert_eq!(ids.len(), 3, "{stdout}");
    assert_eq!(leaders.len(), 3, "{stdout}");
    assert!(
        leaders.iter().all(|&leader| leader == leaders[0]),
        "{stdout}"
    );
    assert_eq!(
        ids.iter().filter(|&&id| id == leaders[0]).count(),
        1,
        "{stdout}"
    );
    // etcdctl 3.4 reports health on stderr.
    let health = members[1].ok_all(&["endpoint", "health", "--cluster"]);
    for member in &members {
        let line = format!("http://127.0.0.1:{} is healthy", member.port);
        assert!(health.contains(&line), "{health}");
    }
    assert!(!health.contains("unhealthy"), "{health}");

    // Leases through a follower: keep-alives and time-to-live are answered by the leader,
    // which keeps the deadlines.
    let leader_index = wait_for_leader(&members);
    let follower = &members[(leader_index + 1) % 3];
    let granted = follower.ok(&["lease", "grant", "60"]);
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    follower.ok(&["put", "leased", "x", &format!("--lease={lease}")]);
    assert_eq!(
        follower.ok(&["lease", "keep-alive", "--once", &lease]),
        format!("lease {lease} keepalived with TTL(60)\n")
    );
    let ttl = follower.ok(&["lease", "timetolive", &lease, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"),
        "{ttl}"
    );

    // Kill the leader: the other two elect a new one and keep serving.
    let old = wait_for_leader(&members);
    members[old].kill();
    let new = wait_for_leader(&members);
    assert_ne!(new, old);
    let survivor = (0..3).find(|&i| i != old && i != new).unwrap();
    assert_eq!(members[survivor].ok(&["put", "after", "failover"]), "OK\n");
    assert_eq!(
        members[new].ok(&["get", "after", "--print-value-only"]),
        "failover\n"
    );

    // The old leader comes back as a follower and catches up.
    members[old].restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = members[old].ctl(&["get", "after", "--print-value-only"]);
        if output.status.success() && output.stdout == b"failover\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member never caught up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A serializable read on it serves its own (caught-up) copy.
    assert_eq!(
        members[old].ok(&["get", "k1", "--consistency=s", "--print-value-only"]),
        "v1\n"
    );

    // MoveLeader hands leadership to the restarted member.
    let current = wait_for_leader(&members);
    let target = if current == old { survivor } else { old };
    let status = members[target].ok(&["endpoint", "status"]);
    let target_id = status.split(", ").nth(1).unwrap().to_string();
    let endpoints: Vec<String> = members.iter().map(|m| m.endpoint()).collect();
    let output = members[current]
        .etcdctl()
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["move-leader", &target_id])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "move-leader failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("to {target_id}")), "{stdout}");
    assert_eq!(wait_for_leader(&members), target);
}

/// Every number that follows `"key":` in `json`.
fn json_numbers(json: &str, key: &str) -> Vec<u64> {
    json.split(&format!("\"{key}\":"))
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("no number for {key} in {json}"))
        })
        .collect()
}

#[test]
fn a_member_behind_the_compacted_log_catches_up_from_a_snapshot() {
    // Snapshots every 20 entries, 5 kept behind: a member down for a hundred writes finds
    // the log it needs compacted away on the leader.
    let mut members = start_cluster_with(
        3,
        &[
            "--snapshot-count=20",
            "--experimental-snapshot-catchup-entries=5",
        ],
    );
    let leader = wait_for_leader(&members);
    let behind = (leader + 1) % members.len();
    members[behind].kill();
    // Large values, so that the image the leader sends spans several 1 MiB chunks.
    let big = "b".repeat(100_000);
    for i in 0..24 {
        members[leader].ok(&["put", &format!("big{i}"), &big]);
    }
    for i in 0..80 {
        members[leader].ok(&["put", &format!("k{i}"), &i.to_string()]);
    }
    members[behind].restart();
    wait_until("the member behind has caught up", || {
        members[behind]
            .ctl(&["get", "k79", "--print-value-only", "--consistency=s"])
            .stdout
            == b"79\n"
    });
    assert!(
        members[behind]
            .log()
            .contains("restored the store from the leader's snapshot"),
        "it should have caught up from a snapshot: {}",
        members[behind].log()
    );
    assert_eq!(
        members[behind].ok(&["get", "big23", "--print-value-only", "--consistency=s"]),
        format!("{big}\n")
    );
    // Neither side leaves image files behind: the leader's copy is gone once sent, the
    // received image was moved over the backend.
    for member in [&members[leader], &members[behind]] {
        let snap = member.data_dir.join("member").join("snap");
        let leftovers: Vec<String> = std::fs::read_dir(&snap)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".snap.db"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?} in {}", snap.display());
    }
}

/// The id (hex) of the member named `name` in `etcdctl member list` output.
fn member_id(list: &str, name: &str) -> String {
    list.lines()
        .find(|line| line.contains(&format!(", {name}, ")))
        .and_then(|line| line.split(',').next())
        .unwrap_or_else(|| panic!("no member {name} in {list}"))
        .to_string()
}

/// Runs a membership command until the leader stops refusing it as "unhealthy cluster":
/// a leader in touch with every member for less than five seconds refuses changes (etcd's
/// strict reconfiguration check), as right after the cluster starts.
fn reconfigure(member: &Server, args: &[&str]) -> String {
    let mut stdout = String::new();
    wait_until("the leader accepts the reconfiguration", || {
        let output = member.ctl(args);
        stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() || stderr.contains("etcdserver: unhealthy cluster"),
            "etcdctl {args:?} failed: {stderr}"
        );
        output.status.success()
    });
    stdout
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn members_are_added_as_learners_promoted_and_removed() {
    let mut members = start_cluster(3);
    members[0].ok(&["put", "before", "1"]);
    let list = members[0].ok(&["member", "list"]);
    let m1_peer = list
        .lines()
        .find(|line| line.contains(", m1, "))
        .and_then(|line| line.split(", ").nth(3))
        .unwrap()
        .to_string();

    // etcd's errors for bad requests.
    assert_eq!(
        members[0].err(&["member", "add", "dup", &format!("--peer-urls={m1_peer}")]),
        "Error: etcdserver: Peer URLs already exists"
    );
    assert_eq!(
        members[0].err(&["member", "remove", "1234"]),
        "Error: etcdserver: member not found"
    );
    let m1 = member_id(&list, "m1");
    assert_eq!(
        members[0].err(&["member", "promote", &m1]),
        "Error: etcdserver: can only promote a learner member"
    );

    // Add a learner; start it with the environment etcdctl prints.
    let peer_port = common::free_port();
    let added = reconfigure(
        &members[1],
        &[
            "member",
            "add",
            "m4",
            &format!("--peer-urls=http://127.0.0.1:{peer_port}"),
            "--learner",
        ],
    );
    assert!(added.contains("added to cluster"), "{added}");
    // One learner at a time.
    assert_eq!(
        members[1].err(&[
            "member",
            "add",
            "m5",
            &format!("--peer-urls=http://127.0.0.1:{}", common::free_port()),
            "--learner",
        ]),
        "Error: etcdserver: too many learner members in cluster"
    );
    let initial = added
        .lines()
        .find_map(|line| line.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {added}"))
        .to_string();
    assert!(
        added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{added}"
    );
    let mut m4 = common::member_server("m4", peer_port, &initial, "existing");
    common::start_member(&mut m4);
    // The learner catches up and serves serializable reads of what was written before.
    wait_until("the learner has the data", || {
        m4.ctl(&["get", "before", "--print-value-only", "--consistency=s"])
            .stdout
            == b"1\n"
    });
    // It published its name once it started.
    wait_until("m4 is listed by name", || {
        members[0].ok(&["member", "list"]).contains(", m4, ")
    });
    let list = members[0].ok(&["member", "list"]);
    let m4_id = member_id(&list, "m4");
    assert!(
        list.lines()
            .any(|line| line.starts_with(&m4_id) && line.ends_with(", true")),
        "m4 should be a learner: {list}"
    );

    // Promote through whichever member: followers ask the leader.
    for member in &members {
        let promoted = member.ctl(&["member", "promote", &m4_id]);
        if promoted.status.success() {
            break;
        }
    }
    wait_until("m4 is a voter", || {
        let list = members[2].ok(&["member", "list"]);
        list.lines()
            .any(|line| line.starts_with(&m4_id) && line.ends_with(", false"))
    });

    // Remove m2: it stops, the others keep serving, m4 included.
    let m2 = member_id(&list, "m2");
    let removed = reconfigure(&members[0], &["member", "remove", &m2]);
    // etcdctl pads the id to 16 columns.
    assert!(
        removed.contains(&format!("{m2} removed from cluster")),
        "{removed}"
    );
    wait_until("m2 exits", || {
        members[1]
            .child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_some())
    });
    let list = members[0].ok(&["member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains(", m2, "), "{list}");
    // If m2 led, a write sent before the others elected a new leader is lost with it (the
    // client times out, as with etcd); the next one goes through.
    wait_until("a write through m4 succeeds", || {
        m4.ctl(&["put", "after", "2"]).status.success()
    });
    assert_eq!(
        members[2].ok(&["get", "after", "--print-value-only"]),
        "2\n"
    );

    // With a voter down, adding another is refused (it would need the down one for a
    // quorum); removing the down one is allowed.
    drop(members.remove(1));
    members.push(m4);
    let names = ["m1", "m3", "m4"];
    let leader = wait_for_leader(&members);
    let down = (leader + 1) % members.len();
    let down_id = member_id(&members[leader].ok(&["member", "list"]), names[down]);
    members[down].kill();
    // Out of touch once an election timeout passes without a word from it.
    std::thread::sleep(Duration::from_secs(2));
    // Refused by the leader, and by a follower, which asks the leader.
    let follower = 3 - leader - down;
    for asked in [leader, follower] {
        assert_eq!(
            members[asked].err(&[
                "member",
                "add",
                "m5",
                &format!("--peer-urls=http://127.0.0.1:{}", common::free_port()),
            ]),
            "Error: etcdserver: unhealthy cluster"
        );
    }
    let removed = members[leader].ok(&["member", "remove", &down_id]);
    assert!(
        removed.contains(&format!("{down_id} removed from cluster")),
        "{removed}"
    );
}

/// One Range on `member`, asking for a leader (`hasleader`, as clientv3.WithRequireLeader
/// and Kubernetes' watches do) when `require_leader`; the gRPC status on failure.
fn range_requiring_leader(member: &Server, require_leader: bool) -> Result<(), tonic::Status> {
    use oxcd::proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = format!("http://{}", member.endpoint());
        let mut client = KvClient::connect(url)
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let mut request = tonic::Request::new(RangeRequest {
            key: b"k".to_vec().into(),
            serializable: true,
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(3));
        if require_leader {
            request
                .metadata_mut()
                .insert("hasleader", "true".parse().expect("ascii"));
        }
        client.range(request).await.map(|_| ())
    })
}

#[test]
fn a_request_requiring_a_leader_is_refused_while_the_member_has_none() {
    let mut members = start_cluster(3);
    wait_for_leader(&members);
    let survivor = 0;
    range_requiring_leader(&members[survivor], true).expect("served with a leader");
    for other in 1..3 {
        members[other].kill();
    }
    // The survivor loses its leader within an election timeout or two (check-quorum makes
    // a lone leader step down; a follower stops following a leader it no longer hears).
    let deadline = Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        match range_requiring_leader(&members[survivor], true) {
            Err(status) if status.message() == "etcdserver: no leader" => break status,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "never refused for want of a leader"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(refusal.code(), tonic::Code::Unavailable);
    // Without the requirement, a serializable read is still served from the local store.
    range_requiring_leader(&members[survivor], false).expect("serializable read without a leader");
}

#[test]
fn a_member_serves_clients_only_once_its_publication_is_applied() {
    let mut members = common::unstarted_cluster(3, &[]);
    // Alone, the first member has no quorum, so it cannot publish its name and client URLs:
    // it answers no client, not even a serializable read (etcd waits the same way).
    members[0].spawn_only();
    std::thread::sleep(Duration::from_secs(2));
    let alone = members[0].ctl(&[
        "--dial-timeout=1s",
        "--command-timeout=2s",
        "get",
        "k",
        "--consistency=s",
    ]);
    assert!(
        !alone.status.success(),
        "a member that has not published answered: {}",
        String::from_utf8_lossy(&alone.stdout)
    );
    // With a second member there is a quorum. Once either answers, both are listed with
    // their client URLs, by both: `endpoint status --cluster` reaches every one of them.
    members[1].spawn_only();
    members[0].wait_ready();
    members[1].wait_ready();
    for asked in &members[..2] {
        let list = asked.ok(&["member", "list"]);
        for (i, member) in members[..2].iter().enumerate() {
            assert!(
                list.contains(&format!(", started, m{}, ", i + 1))
                    && list.contains(&format!("http://127.0.0.1:{}", member.port)),
                "{list}"
            );
        }
        let status = asked.ok(&["endpoint", "status", "--cluster"]);
        assert_eq!(status.lines().count(), 2, "{status}");
    }
}
