//! Patroni (Debian's package) keeping a pair of PostgreSQL servers highly available with
//! oxcd as its `etcd3` store, which it reaches through the JSON gateway only (`/version`,
//! member list, serializable prefix ranges, one-compare txns, leases with keep-alives, a
//! long-lived `POST /v3/watch` per process): the first node bootstraps and leads, the
//! second follows and a row written on the leader is read on it, the leader is killed
//! (Patroni and PostgreSQL, `kill -9`) and the follower takes over within the leader
//! key's TTL, and the old leader rejoins as a replica with the rows written since.
//!
//! Patroni and PostgreSQL are installed from Debian when missing; PostgreSQL refuses to
//! run as root, so as root the pair runs as the `postgres` user the package creates.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{free_port, Kind, Server};

/// Installs Patroni and PostgreSQL from Debian when they are missing.
fn ensure_patroni() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if Path::new("/usr/bin/patroni").exists() && postgres_bin_dir().is_some() {
            return;
        }
        let status = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patroni postgresql")
            .status()
            .expect("running apt-get");
        assert!(status.success(), "installing patroni and postgresql failed");
    });
}

/// The newest installed PostgreSQL's binaries (`/usr/lib/postgresql/<version>/bin`).
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// One Patroni node and the PostgreSQL it runs; both killed when dropped.
struct Node {
    name: String,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    rest_port: u16,
    pg_port: u16,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, name: &str, etcd: &str, bin_dir: &Path) -> Node {
        let rest_port = free_port();
        let pg_port = free_port();
        let data_dir = dir.join(format!("{name}-data"));
        let config = dir.join(format!("{name}.yml"));
        let yaml = format!(
            "scope: oxcd-pair
name: {name}
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
etcd3:
  hosts: {etcd}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
  initdb:
    - encoding: UTF8
    - auth: md5
  pg_hba:
    - host replication replicator 127.0.0.1/32 md5
    - host all all 127.0.0.1/32 md5
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {dir}/{name}.pgpass
  authentication:
    replication: {{username: replicator, password: reppass}}
    superuser: {{username: postgres, password: superpass}}
    rewind: {{username: rewinder, password: rewindpass}}
  parameters:
    unix_socket_directories: {dir}
",
            data = data_dir.display(),
            bin = bin_dir.display(),
            dir = dir.display(),
        );
        std::fs::write(&config, yaml).expect("writing the Patroni config");
        Node {
            name: name.to_owned(),
            log: dir.join(format!("{name}.log")),
            config,
            data_dir,
            rest_port,
            pg_port,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the node's log");
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", "patroni"]);
            command
        } else {
            Command::new("patroni")
        };
        command
            .arg(&self.config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(command.spawn().expect("starting patroni"));
    }

    /// Patroni and its PostgreSQL, at once (a crash of the machine, as Patroni sees it).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("patroni {}", self.config.display())])
            .status();
        let _ = Command::new("pkill")
            .args(["-9", "-f", &self.data_dir.display().to_string()])
            .status();
    }

    /// The HTTP status of Patroni's REST API at `path` (`/primary`, `/replica`).
    fn rest(&self, path: &str) -> Option<u16> {
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
            ])
            .arg(format!("http://127.0.0.1:{}{path}", self.rest_port))
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout).parse().ok()
    }

    fn sql(&self, statement: &str) -> Result<String, String> {
        let output = Command::new("psql")
            .env("PGPASSWORD", "superpass")
            .env("PGCONNECT_TIMEOUT", "3")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tA"])
            .arg("-p")
            .arg(self.pg_port.to_string())
            .arg("-c")
            .arg(statement)
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for(
    nodes: &[&Node],
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > within {
            let logs: Vec<String> = nodes
                .iter()
                .map(|node| format!("--- {} ---\n{}", node.name, node.log_text()))
                .collect();
            panic!("timed out waiting until {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    started.elapsed()
}

#[test]
fn a_patroni_pair_bootstraps_replicates_and_fails_over_on_oxcd() {
    ensure_patroni();
    let bin_dir = postgres_bin_dir().expect("PostgreSQL's binaries");
    let oxcd = Server::start(Kind::Oxcd);
    let dir = tempfile::tempdir().expect("a temp dir");
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
    }
    let etcd = oxcd.endpoint();
    let mut first = Node::new(dir.path(), "pg1", &etcd, &bin_dir);
    let mut second = Node::new(dir.path(), "pg2", &etcd, &bin_dir);

    first.start();
    wait_for(
        &[&first],
        "pg1 bootstraps and leads",
        Duration::from_secs(60),
        || first.rest("/primary") == Some(200),
    );
    second.start();
    wait_for(
        &[&first, &second],
        "pg2 replicates pg1",
        Duration::from_secs(60),
        || second.rest("/replica") == Some(200),
    );
    first
        .sql("CREATE TABLE t (x text); INSERT INTO t VALUES ('before failover')")
        .expect("a write on the leader");
    wait_for(
        &[&first, &second],
        "the row reaches pg2",
        Duration::from_secs(20),
        || {
            second
                .sql("SELECT x FROM t")
                .is_ok_and(|rows| rows == "before failover\n")
        },
    );
    // The leader key lives in oxcd under a lease Patroni keeps alive.
    let keys = oxcd.ok(&["get", "--prefix", "--keys-only", "/service/oxcd-pair/"]);
    assert!(keys.contains("/service/oxcd-pair/leader"), "{keys}");

    first.kill();
    let took = wait_for(
        &[&first, &second],
        "pg2 takes over",
        Duration::from_secs(60),
        || second.rest("/primary") == Some(200),
    );
    eprintln!("pg2 became the primary {took:?} after pg1 was killed");
    // Patroni answers as the primary once it holds the leader key; PostgreSQL's promotion
    // follows a moment later.
    wait_for(
        &[&first, &second],
        "pg2 takes writes",
        Duration::from_secs(30),
        || {
            second
                .sql("INSERT INTO t VALUES ('after failover')")
                .is_ok()
        },
    );

    first.start();
    wait_for(
        &[&first, &second],
        "pg1 rejoins as a replica",
        Duration::from_secs(90),
        || first.rest("/replica") == Some(200),
    );
    wait_for(
        &[&first, &second],
        "pg1 has every row",
        Duration::from_secs(20),
        || {
            first
                .sql("SELECT x FROM t ORDER BY x")
                .is_ok_and(|rows| rows == "after failover\nbefore failover\n")
        },
    );
    assert!(
        !second.log_text().contains("Traceback") && !first.log_text().contains("Traceback"),
        "Patroni failed with an exception:\n{}\n{}",
        first.log_text(),
        second.log_text()
    );
}
