//! Transport security against the real binary and the real etcdctl 3.4: mutual TLS for
//! clients and peers, the refusals, auto-TLS, certificate rotation. Every certificate is
//! made here, with rcgen: a CA, server certificates for 127.0.0.1 and localhost, client
//! certificates, a second CA nobody trusts, an expired certificate.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ensure_etcd_tools, free_port};

/// A certificate authority writing what it signs into one directory.
struct Authority {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    dir: PathBuf,
}

impl Authority {
    /// A CA whose certificate is written to `<dir>/<stem>.crt`.
    fn new(dir: &Path, stem: &str) -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{stem} authority"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let certificate = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join(format!("{stem}.crt")), certificate.pem()).expect("writing");
        Authority {
            params,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// Signs `<stem>.crt` and `<stem>.key` for `common_name` and `hosts`, usable by
    /// servers and clients alike (as Kubernetes' etcd certificates are), valid until
    /// `not_after`.
    fn issue_until(
        &self,
        stem: &str,
        common_name: &str,
        hosts: &[&str],
        not_after: time::OffsetDateTime,
    ) {
        let hosts = hosts
            .iter()
            .map(|host| host.to_string())
            .collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(hosts).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = not_after;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer).expect("signing");
        std::fs::write(self.dir.join(format!("{stem}.crt")), certificate.pem()).expect("writing");
        std::fs::write(self.dir.join(format!("{stem}.key")), key.serialize_pem()).expect("writing");
    }

    fn issue(&self, stem: &str, common_name: &str, hosts: &[&str]) {
        let year = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        self.issue_until(stem, common_name, hosts, year);
    }
}

/// Every certificate the tests use, in one temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ca = Authority::new(dir.path(), "ca");
        let local = ["127.0.0.1", "localhost"];
        ca.issue("server", "kube-etcd", &local);
        ca.issue("peer", "kube-etcd-peer", &local);
        ca.issue("client", "alice", &local);
        let yesterday = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        ca.issue_until("expired", "alice", &local, yesterday);
        let stranger = Authority::new(dir.path(), "other-ca");
        stranger.issue("stranger", "alice", &local);
        stranger.issue("stranger-peer", "kube-etcd-peer", &local);
        // The server certificate an operator rotates to: from a new CA, so that a client
        // can tell which one it was shown.
        let next = Authority::new(dir.path(), "next-ca");
        next.issue("server-next", "kube-etcd", &local);
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

/// An oxcd process with its flags and log; killed when dropped.
struct Member {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Member {
    fn start(args: &[String]) -> Member {
        ensure_etcd_tools();
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("oxcd.log");
        let child = Command::new(env!("CARGO_BIN_EXE_oxcd"))
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting oxcd");
        Member {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// etcdctl (API 3) with `args`, a short dial timeout (a refused handshake surfaces only as
/// one), run in `dir`.
fn etcdctl(dir: &Path, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .current_dir(dir)
        .env("ETCDCTL_API", "3")
        .arg("--dial-timeout=1s")
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("running etcdctl")
}

fn succeeds(dir: &Path, args: &[&str]) -> String {
    let output = etcdctl(dir, args);
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

fn fails(dir: &Path, args: &[&str]) {
    let output = etcdctl(dir, args);
    assert!(
        !output.status.success(),
        "etcdctl {args:?} should fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Retries `args` until etcdctl succeeds (a member starting up).
fn wait_until_serving(dir: &Path, args: &[&str], member: &Member) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcdctl(dir, args).status.success() {
        assert!(
            Instant::now() < deadline,
            "etcdctl {args:?} never succeeded:\n{}",
            member.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts members m1…mN with client and peer mutual TLS; returns them with their client
/// URLs.
fn start_tls_cluster(n: usize, extra: &[String]) -> (Vec<Member>, Vec<String>) {
    let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let client_urls: Vec<String> = (0..n)
        .map(|_| format!("https://127.0.0.1:{}", free_port()))
        .collect();
    let initial = peer_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("m{}=https://127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let members = (0..n)
        .map(|i| {
            let mut args = vec![
                format!("--name=m{}", i + 1),
                format!("--listen-client-urls={}", client_urls[i]),
                format!("--advertise-client-urls={}", client_urls[i]),
                format!("--listen-peer-urls=https://127.0.0.1:{}", peer_ports[i]),
                format!(
                    "--initial-advertise-peer-urls=https://127.0.0.1:{}",
                    peer_ports[i]
                ),
                format!("--initial-cluster={initial}"),
            ];
            args.extend(extra.iter().cloned());
            Member::start(&args)
        })
        .collect();
    (members, client_urls)
}

fn mutual_tls_flags(pki: &Pki) -> Vec<String> {
    vec![
        format!("--cert-file={}", pki.path("server.crt")),
        format!("--key-file={}", pki.path("server.key")),
        format!("--trusted-ca-file={}", pki.path("ca.crt")),
        "--client-cert-auth".to_string(),
        format!("--peer-cert-file={}", pki.path("peer.crt")),
        format!("--peer-key-file={}", pki.path("peer.key")),
        format!("--peer-trusted-ca-file={}", pki.path("ca.crt")),
        "--peer-client-cert-auth".to_string(),
        "--peer-cert-allowed-cn=kube-etcd-peer".to_string(),
    ]
}

#[test]
fn the_kubernetes_command_against_a_cluster_with_client_and_peer_mutual_tls() {
    ensure_etcd_tools();
    let pki = Pki::new();
    let dir = pki.dir.path();
    // Without the strict reconfiguration check, a member can be added at once (not only
    // after the leader has been in touch with every member for five seconds).
    let mut flags = mutual_tls_flags(&pki);
    flags.push("--strict-reconfig-check=false".to_string());
    let (members, urls) = start_tls_cluster(3, &flags);
    let tls = [
        "--cacert",
        "ca.crt",
        "--cert",
        "server.crt",
        "--key",
        "server.key",
    ];
    let at = |url: &String, args: &[&str]| -> Vec<String> {
        let mut all = vec![format!("--endpoints={url}")];
        all.extend(tls.iter().map(|s| s.to_string()));
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    for (member, url) in members.iter().zip(&urls) {
        let args = at(url, &["endpoint", "health"]);
        wait_until_serving(
            dir,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            member,
        );
    }

    // A Kubernetes-like tree, written through every member (followers forward to the leader
    // over the peer TLS).
    let mut keys: Vec<String> = Vec::new();
    for kind in ["pods", "services", "configmaps"] {
        for i in 0..6 {
            keys.push(format!("/registry/{kind}/default/{kind}-{i}"));
        }
    }
    for (i, key) in keys.iter().enumerate() {
        let args = at(&urls[i % 3], &["put", key, "{}"]);
        succeeds(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    keys.sort();

    // The seed's command, exactly, with the endpoint of each member.
    for url in &urls {
        let output = Command::new("etcdctl")
            .current_dir(dir)
            .env("ETCDCTL_API", "3")
            .args([
                "get",
                "/",
                "--prefix",
                "--keys-only",
                "--limit=10",
                "--cacert",
                "ca.crt",
                "--cert",
                "server.crt",
                "--key",
                "server.key",
            ])
            .arg(format!("--endpoints={url}"))
            .output()
            .expect("running etcdctl");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(listed, keys[..10].to_vec(), "from {url}");
    }

    // `--cluster` dials every member's advertised https URL.
    let status = succeeds(
        dir,
        &at(&urls[0], &["endpoint", "status", "--cluster", "-w", "json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    for url in &urls {
        assert_eq!(
            status.matches(&format!("\"Endpoint\":\"{url}\"")).count(),
            1,
            "{status}"
        );
    }
    let health = succeeds(
        dir,
        &at(&urls[1], &["endpoint", "health", "--cluster"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    for url in &urls {
        assert!(health.contains(&format!("{url} is healthy")), "{health}");
    }
    assert!(!health.contains("unhealthy"), "{health}");

    // A member whose peer certificate comes from a CA the cluster does not trust is added,
    // and started: it never joins, and the cluster goes on.
    let rogue_peer = free_port();
    let rogue_peer_url = format!("https://127.0.0.1:{rogue_peer}");
    let added = succeeds(
        dir,
        &at(
            &urls[0],
            &[
                "member",
                "add",
                "m4",
                &format!("--peer-urls={rogue_peer_url}"),
            ],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    let initial = added
        .lines()
        .find_map(|line| line.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("member add prints the initial cluster")
        .to_string();
    let rogue_client = format!("https://127.0.0.1:{}", free_port());
    let rogue = Member::start(&[
        "--name=m4".to_string(),
        format!("--listen-client-urls={rogue_client}"),
        format!("--advertise-client-urls={rogue_client}"),
        format!("--listen-peer-urls={rogue_peer_url}"),
        format!("--initial-advertise-peer-urls={rogue_peer_url}"),
        format!("--initial-cluster={initial}"),
        "--initial-cluster-state=existing".to_string(),
        format!("--cert-file={}", pki.path("server.crt")),
        format!("--key-file={}", pki.path("server.key")),
        format!("--peer-cert-file={}", pki.path("stranger-peer.crt")),
        format!("--peer-key-file={}", pki.path("stranger-peer.key")),
        format!("--peer-trusted-ca-file={}", pki.path("ca.crt")),
    ]);
    // Each member it dials refuses its certificate at the handshake, and says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !members
        .iter()
        .any(|member| member.log().contains("refused a TLS connection"))
    {
        assert!(Instant::now() < deadline, "no member refused the rogue");
        std::thread::sleep(Duration::from_millis(100));
    }
    let refusals: String = members.iter().map(Member::log).collect();
    assert!(refusals.contains("UnknownIssuer"), "{refusals}");
    let list = succeeds(
        dir,
        &at(&urls[2], &["member", "list"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(list.contains(", unstarted, ,"), "m4 never starts: {list}");
    // Three of four members are a quorum: writes and linearizable reads go on.
    let args = at(&urls[1], &["put", "/registry/after", "rogue"]);
    succeeds(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = at(&urls[2], &["get", "/registry/after", "--print-value-only"]);
    assert_eq!(
        succeeds(dir, &args.iter().map(String::as_str).collect::<Vec<_>>()),
        "rogue\n"
    );
    drop(rogue);
}

#[test]
fn refusals_leave_the_listener_serving_and_rotated_certificates_take_effect() {
    ensure_etcd_tools();
    let pki = Pki::new();
    let dir = pki.dir.path();
    // The member's own copies of its certificate files, which this test rotates.
    std::fs::copy(dir.join("server.crt"), dir.join("live.crt")).expect("copy");
    std::fs::copy(dir.join("server.key"), dir.join("live.key")).expect("copy");
    let tls_port = free_port();
    let plain_port = free_port();
    // A second TLS listener on an address the certificate does not name.
    let misnamed_port = free_port();
    let member = Member::start(&[
        format!(
            "--listen-client-urls=https://127.0.0.1:{tls_port},http://127.0.0.1:{plain_port},https://127.0.0.2:{misnamed_port}"
        ),
        format!("--advertise-client-urls=https://127.0.0.1:{tls_port}"),
        format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()),
        format!("--cert-file={}", pki.path("live.crt")),
        format!("--key-file={}", pki.path("live.key")),
        format!("--trusted-ca-file={}", pki.path("ca.crt")),
        "--client-cert-auth".to_string(),
    ]);
    let endpoint = format!("--endpoints=https://127.0.0.1:{tls_port}");
    let bare = format!("--endpoints=127.0.0.1:{tls_port}");
    let good = [
        endpoint.as_str(),
        "--cacert",
        "ca.crt",
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ];
    wait_until_serving(dir, &with_str(&good, &["endpoint", "health"]), &member);
    assert!(succeeds(dir, &with_str(&good, &["put", "k", "v"])).contains("OK"));

    // Each refusal, then the listener still serves a good client.
    let refused: [(Vec<&str>, &str); 4] = [
        // A plaintext client on the TLS port (no scheme, no TLS flags: etcdctl speaks
        // plaintext).
        (vec![bare.as_str()], "does not speak TLS"),
        // No client certificate where one is required.
        (
            vec![endpoint.as_str(), "--cacert", "ca.crt"],
            "presented no certificate",
        ),
        // A certificate from a CA the server does not trust.
        (
            vec![
                endpoint.as_str(),
                "--cacert",
                "ca.crt",
                "--cert",
                "stranger.crt",
                "--key",
                "stranger.key",
            ],
            "UnknownIssuer",
        ),
        // An expired certificate.
        (
            vec![
                endpoint.as_str(),
                "--cacert",
                "ca.crt",
                "--cert",
                "expired.crt",
                "--key",
                "expired.key",
            ],
            "certificate expired",
        ),
    ];
    for (flags, logged) in &refused {
        fails(dir, &with_str(flags, &["get", "k"]));
        member.wait_for_log(logged);
        assert_eq!(
            succeeds(dir, &with_str(&good, &["get", "k", "--print-value-only"])),
            "v\n"
        );
    }
    // A server whose certificate does not name the address dialled: the client refuses it.
    let misnamed = format!("--endpoints=https://127.0.0.2:{misnamed_port}");
    let mut misnamed_flags = good.to_vec();
    misnamed_flags[0] = misnamed.as_str();
    fails(dir, &with_str(&misnamed_flags, &["get", "k"]));
    member.wait_for_log("does not name the address the client dialled");
    // Plaintext listeners serve beside TLS ones.
    let plain = format!("--endpoints=http://127.0.0.1:{plain_port}");
    assert_eq!(
        succeeds(dir, &[plain.as_str(), "get", "k", "--print-value-only"]),
        "v\n"
    );
    assert!(
        !member.log().contains("panicked"),
        "no panic: {}",
        member.log()
    );

    // Rotation. A watch opened before keeps its connection; new connections are shown
    // the new certificate, which only the new CA verifies.
    let mut watch = Command::new("etcdctl")
        .current_dir(dir)
        .env("ETCDCTL_API", "3")
        .args(with_str(&good, &["watch", "rotated"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    std::thread::sleep(Duration::from_millis(500));
    for (from, to) in [
        ("server-next.crt", "live.crt"),
        ("server-next.key", "live.key"),
    ] {
        let staged = dir.join(format!("{to}.new"));
        std::fs::copy(dir.join(from), &staged).expect("copy");
        std::fs::rename(&staged, dir.join(to)).expect("rename");
    }
    let mut next = good.to_vec();
    next[2] = "next-ca.crt";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !etcdctl(dir, &with_str(&next, &["put", "rotated", "yes"]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "{}", member.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    fails(dir, &with_str(&good, &["get", "k"]));
    member.wait_for_log("reloaded TLS certificates");
    // The watch, on its connection from before the rotation, sees the write.
    let mut stdout = watch.stdout.take().expect("watch output");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buffer = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if seen.contains("yes") {
                let _ = sender.send(seen.clone());
                return;
            }
        }
        let _ = sender.send(seen);
    });
    let seen = receiver
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("PUT\nrotated\nyes"), "watch saw {seen:?}");
}

/// With `--client-cert-auth`, the verified certificate's Common Name is the user once auth
/// is enabled: the client certificate (CN alice) reads and writes what alice's roles allow
/// without a password, a token wins over the certificate, and a certificate whose CN names
/// no user is refused.
#[test]
fn the_certificate_common_name_is_the_user_when_auth_is_enabled() {
    ensure_etcd_tools();
    let pki = Pki::new();
    let dir = pki.dir.path();
    let flags = mutual_tls_flags(&pki);
    let (members, urls) = start_tls_cluster(1, &flags);
    let endpoint = format!("--endpoints={}", urls[0]);
    let as_cert = |cert: &'static str, args: &[&'static str]| -> Vec<String> {
        let mut all = vec![
            endpoint.clone(),
            "--cacert".into(),
            "ca.crt".into(),
            "--cert".into(),
            format!("{cert}.crt"),
            "--key".into(),
            format!("{cert}.key"),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all
    };
    let run =
        |args: Vec<String>| etcdctl(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let ok = |args: Vec<String>| {
        let output = run(args.clone());
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let error = |args: Vec<String>| {
        let output = run(args.clone());
        assert!(!output.status.success(), "etcdctl {args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        stderr
            .lines()
            .find(|line| line.starts_with("Error:"))
            .unwrap_or(&stderr)
            .to_string()
    };
    let health = as_cert("client", &["endpoint", "health"]);
    wait_until_serving(
        dir,
        &health.iter().map(String::as_str).collect::<Vec<_>>(),
        &members[0],
    );
    for step in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice", "--no-password"],
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
        ok(as_cert("client", step));
    }
    // The client certificate is alice's.
    ok(as_cert("client", &["put", "/app/k", "v"]));
    assert_eq!(
        ok(as_cert("client", &["get", "/app/k", "--print-value-only"])),
        "v\n"
    );
    assert_eq!(
        error(as_cert("client", &["put", "/other", "v"])),
        "Error: etcdserver: permission denied"
    );
    assert_eq!(
        error(as_cert("client", &["user", "list"])),
        "Error: etcdserver: permission denied"
    );
    // A token wins over the certificate.
    ok(as_cert(
        "client",
        &["put", "/other", "v", "--user=root:rootpw"],
    ));
    // The server certificate's CN (kube-etcd) names no user.
    assert_eq!(
        error(as_cert("server", &["get", "/app/k"])),
        "Error: etcdserver: permission denied"
    );
}

fn with_str<'a>(flags: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    flags.iter().chain(args).copied().collect()
}

#[test]
fn auto_tls_for_clients_and_peers() {
    ensure_etcd_tools();
    let pki = Pki::new();
    let dir = pki.dir.path();
    let (members, urls) = start_tls_cluster(
        3,
        &["--auto-tls".to_string(), "--peer-auto-tls".to_string()],
    );
    let insecure = ["--insecure-skip-tls-verify", "--insecure-transport=false"];
    for (member, url) in members.iter().zip(&urls) {
        let endpoint = format!("--endpoints={url}");
        let mut args = insecure.to_vec();
        args.extend([endpoint.as_str(), "endpoint", "health"]);
        wait_until_serving(dir, &args, member);
        let fixtures = member.data_dir().join("fixtures");
        for side in ["client", "peer"] {
            assert!(fixtures.join(side).join("cert.pem").exists());
            assert!(fixtures.join(side).join("key.pem").exists());
        }
    }
    // A write through a follower and a read on another member cross the peer TLS.
    let first = format!("--endpoints={}", urls[0]);
    let last = format!("--endpoints={}", urls[2]);
    let mut put = insecure.to_vec();
    put.extend([first.as_str(), "put", "auto", "tls"]);
    assert!(succeeds(dir, &put).contains("OK"));
    let mut get = insecure.to_vec();
    get.extend([last.as_str(), "get", "auto", "--print-value-only"]);
    assert_eq!(succeeds(dir, &get), "tls\n");
    // Without skipping verification, a self-signed certificate is refused by the client.
    fails(
        dir,
        &[first.as_str(), "--insecure-transport=false", "get", "auto"],
    );
}

#[test]
fn tls_flags_that_cannot_work_stop_the_start_with_a_clear_error() {
    ensure_etcd_tools();
    let pki = Pki::new();
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec![format!(
                "--listen-client-urls=https://127.0.0.1:{}",
                free_port()
            )],
            "must be provided for client url",
        ),
        (
            vec![
                format!("--listen-client-urls=https://127.0.0.1:{}", free_port()),
                format!("--cert-file={}", pki.path("server.crt")),
                format!("--key-file={}", pki.path("missing.key")),
            ],
            "missing.key",
        ),
        (
            vec![
                format!("--listen-client-urls=https://127.0.0.1:{}", free_port()),
                format!("--cert-file={}", pki.path("server.crt")),
                format!("--key-file={}", pki.path("server.key")),
                "--tls-min-version=TLS1.1".to_string(),
            ],
            "TLS1.1 is not supported",
        ),
        (
            vec![
                format!("--listen-client-urls=https://127.0.0.1:{}", free_port()),
                format!("--cert-file={}", pki.path("server.crt")),
                format!("--key-file={}", pki.path("server.key")),
                "--cipher-suites=TLS_RSA_WITH_RC4_128_SHA".to_string(),
            ],
            "is not supported",
        ),
    ];
    for (args, message) in cases {
        let mut all = args.clone();
        all.push(format!(
            "--listen-peer-urls=http://127.0.0.1:{}",
            free_port()
        ));
        let mut member = Member::start(&all);
        let status = member
            .child
            .as_mut()
            .expect("running")
            .wait()
            .expect("exit status");
        assert!(!status.success(), "{args:?} started");
        let log = member.log();
        assert!(log.contains(message), "{args:?}: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[test]
fn oxctl_dials_with_a_ca_alone_when_the_server_asks_no_client_certificate() {
    let pki = Pki::new();
    let (members, urls) = start_tls_cluster(
        1,
        &[
            format!("--cert-file={}", pki.path("server.crt")),
            format!("--key-file={}", pki.path("server.key")),
            format!("--peer-cert-file={}", pki.path("peer.crt")),
            format!("--peer-key-file={}", pki.path("peer.key")),
            format!("--peer-trusted-ca-file={}", pki.path("ca.crt")),
        ],
    );
    let dir = pki.dir.path();
    let endpoint = format!("--endpoints={}", urls[0]);
    let ca = format!("--cacert={}", pki.path("ca.crt"));
    wait_until_serving(dir, &[&endpoint, &ca, "endpoint", "health"], &members[0]);
    succeeds(dir, &[&endpoint, &ca, "put", "k", "v"]);
    let oxctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_oxctl"))
            .current_dir(dir)
            .args(args)
            .output()
            .expect("running oxctl")
    };
    let saved = oxctl(&[&endpoint, &ca, "snapshot", "save", "ca-only.db"]);
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let status = oxctl(&["snapshot", "status", "ca-only.db", "-w", "json"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"totalKey\""));
    // The key-value verbs dial the same way.
    let read = oxctl(&[&endpoint, &ca, "get", "k", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&read.stdout), "v\n");
    assert!(oxctl(&[&endpoint, &ca, "put", "k2", "v2"]).status.success());
    let health = oxctl(&[&endpoint, &ca, "endpoint", "health", "-w", "json"]);
    assert!(String::from_utf8_lossy(&health.stdout).contains("\"health\":true"));
    // A server certificate from another CA is refused; half a client certificate is an
    // error of the flags.
    let stranger = format!("--cacert={}", pki.path("other-ca.crt"));
    assert!(!oxctl(&[&endpoint, &stranger, "snapshot", "save", "x.db"])
        .status
        .success());
    let cert = format!("--cert={}", pki.path("client.crt"));
    let half = oxctl(&[&endpoint, &ca, &cert, "snapshot", "save", "x.db"]);
    assert!(String::from_utf8_lossy(&half.stderr).contains("--cert and --key go together"));
}
