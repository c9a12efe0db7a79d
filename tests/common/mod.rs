//! Starting real servers (oxcd, and etcd for differential tests) and driving them with the
//! real `etcdctl`, on loopback ports picked by the test.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Installs etcdctl and etcd from Debian when they are missing.
pub fn ensure_etcd_tools() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let present = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if present("etcdctl") && present("etcd") {
            return;
        }
        let status = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-client etcd-server")
            .status()
            .expect("running apt-get");
        assert!(status.success(), "installing etcd-client and etcd-server failed");
    });
}

/// A free loopback port, below Linux's ephemeral range (32768 and up).
///
/// A port the kernel hands out for `bind(0)` is an ephemeral one: once the probe closes it,
/// the kernel may give it to any outgoing connection (a client of another server in the same
/// run) before the server under test binds it. Ports below the range are never handed out
/// that way, so only other test processes could race for them: each process starts at its
/// own offset and walks upward, never offering a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(2_654_435_761)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

pub enum Kind {
    Oxcd,
    Etcd,
}

/// A server process; killed when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    kind_is_etcd: bool,
    extra: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(kind: Kind) -> Self {
        Self::start_with(kind, &[])
    }

    pub fn start_with(kind: Kind, extra: &[&str]) -> Self {
        ensure_etcd_tools();
        let dir = tempfile::tempdir().expect("a temp dir");
        let data_dir = dir.path().join("data");
        let mut server = Server {
            child: None,
            port: free_port(),
            data_dir,
            kind_is_etcd: matches!(kind, Kind::Etcd),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _dir: Some(dir),
        };
        server.spawn();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        self.spawn_only();
        self.wait_ready();
    }

    pub fn spawn_only(&mut self) {
        let url = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", free_port());
        // Advertised as etcd's default, so that member and cluster ids (derived from the
        // advertised peer URLs) are equal for oxcd and etcd, and outputs compare byte for
        // byte.
        let advertised_peer = "http://localhost:2380";
        let program = if self.kind_is_etcd {
            "etcd".to_string()
        } else {
            env!("CARGO_BIN_EXE_oxcd").to_string()
        };
        let log = std::fs::File::create(self.data_dir.with_extension("log")).expect("log file");
        let mut command = Command::new(program);
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&url)
            .arg("--advertise-client-urls")
            .arg(&url);
        if !self
            .extra
            .iter()
            .any(|flag| flag.starts_with("--initial-cluster="))
        {
            command
                .arg("--listen-peer-urls")
                .arg(&peer)
                .arg("--initial-advertise-peer-urls")
                .arg(advertised_peer)
                .arg("--initial-cluster")
                .arg(format!("default={advertised_peer}"));
        }
        command.args(&self.extra).stdout(Stdio::null()).stderr(log);
        self.child = Some(command.spawn().expect("starting the server"));
    }

    pub fn wait_ready(&self) {
        self.wait_ready_as(&[]);
    }

    /// Waits until `endpoint health`, with `flags` (credentials once auth is enabled),
    /// succeeds.
    pub fn wait_ready_as(&self, flags: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // A health check reads through the Raft log without writing, so the test's
            // revisions start where a fresh etcd's do.
            let mut args = vec!["endpoint", "health"];
            args.extend_from_slice(flags);
            let output = self.ctl(&args);
            if output.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "server on {} did not become ready: {}",
            self.port,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts the process again, with auth enabled: ready once `flags` (credentials) let
    /// `endpoint health` through.
    pub fn restart_as(&mut self, flags: &[&str]) {
        self.respawn();
        self.wait_ready_as(flags);
    }

    /// Starts the process again without waiting for it to serve (a whole cluster
    /// restarting needs a quorum before any member serves).
    pub fn respawn(&mut self) {
        self.kill();
        self.spawn_only();
    }

    /// Stops with SIGTERM and waits; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().map(|status| status.success()).unwrap_or(false)
    }

    pub fn etcdctl(&self) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--command-timeout=5s");
        command
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.etcdctl().args(args).output().expect("running etcdctl")
    }

    /// Runs etcdctl with `input` on stdin.
    pub fn ctl_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .etcdctl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running etcdctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
        child.wait_with_output().expect("etcdctl output")
    }

    /// etcdctl's stdout, asserting success.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.ctl(args);
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// etcdctl's stdout and stderr together, asserting success (some commands report on
    /// stderr).
    pub fn ok_all(&self, args: &[&str]) -> String {
        let output = self.ctl(args);
        assert!(output.status.success(), "etcdctl {args:?} failed");
        let mut text = String::from_utf8_lossy(&output.stdout).to_string();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        text
    }

    /// etcdctl's error line, asserting failure.
    pub fn err(&self, args: &[&str]) -> String {
        let output = self.ctl(args);
        assert!(!output.status.success(), "etcdctl {args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        stderr
            .lines()
            .find(|line| line.starts_with("Error:"))
            .unwrap_or(&stderr)
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An oxcd member (not yet started) named `name` with its peer URL on `peer_port`,
/// bootstrapped with `initial_cluster` in `state` ("new" or "existing").
pub fn member_server(name: &str, peer_port: u16, initial_cluster: &str, state: &str) -> Server {
    let dir = tempfile::tempdir().expect("a temp dir");
    Server {
        child: None,
        port: free_port(),
        data_dir: dir.path().join("data"),
        kind_is_etcd: false,
        extra: vec![
            format!("--name={name}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={state}"),
        ],
        _dir: Some(dir),
    }
}

/// A member made by [`member_server`] with the flags `extra` too.
pub fn member_server_with(
    name: &str,
    peer_port: u16,
    initial_cluster: &str,
    state: &str,
    extra: &[&str],
) -> Server {
    let mut server = member_server(name, peer_port, initial_cluster, state);
    server
        .extra
        .extend(extra.iter().map(|flag| flag.to_string()));
    server
}

/// Starts a member made by [`member_server`] and waits until it answers.
pub fn start_member(server: &mut Server) {
    server.spawn_only();
    server.wait_ready();
}

/// Starts members made by [`member_server`] together (none answers before a quorum runs)
/// and waits until each answers.
pub fn start_members(members: &mut [Server]) {
    for member in members.iter_mut() {
        member.spawn_only();
    }
    for member in members.iter() {
        member.wait_ready();
    }
}

/// Starts an `n`-member oxcd cluster on loopback (members named m1, m2, …).
pub fn start_cluster(n: usize) -> Vec<Server> {
    start_cluster_with(n, &[])
}

/// Starts an `n`-member oxcd cluster whose members all get the flags `extra` too.
pub fn start_cluster_with(n: usize, extra: &[&str]) -> Vec<Server> {
    let mut members = unstarted_cluster(n, extra);
    // All members must run before any can answer: start them, then wait for each.
    for member in &mut members {
        member.spawn_only();
    }
    for member in &members {
        member.wait_ready();
    }
    members
}

/// The members of an `n`-member oxcd cluster (named m1, m2, …, each with the flags
/// `extra` too), none of them started.
pub fn unstarted_cluster(n: usize, extra: &[&str]) -> Vec<Server> {
    ensure_etcd_tools();
    let peers: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let initial = peers
        .iter()
        .enumerate()
        .map(|(i, port)| format!("m{}=http://127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    (0..n)
        .map(|i| {
            let mut member = member_server(&format!("m{}", i + 1), peers[i], &initial, "new");
            member
                .extra
                .extend(extra.iter().map(|flag| flag.to_string()));
            member
        })
        .collect()
}

/// Sets up root and alice (read-write on `/app/`) and enables auth, through `server`.
pub fn set_up_users(server: &Server) {
    for step in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        server.ok(step);
    }
}
