//! Three oxcd processes on loopback form a cluster that the real etcdctl drives.

mod common;

use std::time::{Duration, Instant};

use common::{start_cluster, Server};

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
