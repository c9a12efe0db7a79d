//! The cluster under test: one server process per member, and the network they talk over.
//!
//! Two networks are possible. With root and `ip` (iproute2), every member runs in its own
//! network namespace, joined to a bridge in the runner's namespace by a veth pair; the
//! members listen on their namespace's address and the runner reaches all of them through
//! the bridge. A partition is a set of blackhole routes inside the members' namespaces (a
//! member's packets to the other side go nowhere), so it cuts peer traffic and nothing
//! else on the machine, and the runner still reaches every member, the isolated ones
//! included. Without root or `ip`, the members listen on loopback ports and partitions
//! are not possible (the runner says so and skips that nemesis).
//!
//! For the full-disk fault, one member's data dir is a small tmpfs of its own; the fault
//! fills it with a balloon file and the heal removes it.
//!
//! The processes and the namespaces are released in `Drop` (kill -9 of every child still
//! running, paused ones included; the namespaces, veth pairs and bridge deleted), so an
//! error, a panic or an interrupt that unwinds out of the run leaves nothing behind.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One member's process and addresses.
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The namespace it runs in, if any.
    namespace: Option<String>,
    child: Option<Child>,
    paused: bool,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The namespaces and bridge of a run (see the module doc).
struct Namespaces {
    /// The bridge, once made.
    bridge: Option<String>,
    /// The veth ends in the runner's namespace (normally deleted with their namespace's
    /// end; listed for a set-up that failed half-way).
    host_ends: Vec<String>,
    /// Per member: namespace name.
    names: Vec<String>,
    /// Per member: its address.
    addresses: Vec<Ipv4Addr>,
    /// Blackhole routes in place: (member whose namespace holds it, address dropped).
    blackholes: Vec<(usize, Ipv4Addr)>,
}

pub struct Cluster {
    server_bin: PathBuf,
    token: String,
    pub members: Vec<Member>,
    namespaces: Option<Namespaces>,
    /// The member whose data dir is a small file system of its own (for the full-disk
    /// fault), if any; unmounted in `Drop`.
    small_disk: Option<usize>,
    /// Per member, how many times it was started: a restarted member is a new process,
    /// which may serve requests before it has replayed its log (etcd 3.4 waits for its
    /// publish request to apply; a server under test need not), so the history names
    /// processes, not members (see [`Incarnations`]).
    incarnations: Incarnations,
}

/// How many times each member was started, shared with the clients and watchers.
#[derive(Clone)]
pub struct Incarnations(Arc<Vec<AtomicU64>>);

impl Incarnations {
    pub fn new(members: usize) -> Incarnations {
        Incarnations(Arc::new((0..members).map(|_| AtomicU64::new(0)).collect()))
    }

    pub fn get(&self, member: usize) -> u64 {
        self.0[member].load(Ordering::SeqCst)
    }

    /// The name of the process of `member` that served a request, given its
    /// incarnation before the request was sent (`before`): `m1.2`, or a name no other
    /// request gets when the member was restarted meanwhile.
    pub fn process(&self, member: usize, before: u64) -> Option<String> {
        let after = self.get(member);
        if after == before {
            Some(format!("m{member}.{before}"))
        } else {
            None
        }
    }
}

/// Size of the small file system of the full-disk fault: room for the WAL's preallocated
/// segments and the backend of a run of a few minutes, for oxcd and etcd alike.
const SMALL_DISK_MB: u64 = 512;
/// The file that fills the small file system.
const BALLOON: &str = "disk-full-balloon";

/// Runs `ip` with `args`; an error names the command and what it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("ip {}: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A free loopback port (for the loopback network).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port: {error}"))
}

impl Namespaces {
    /// Builds the bridge and one namespace per member, named after `tag`.
    fn create(tag: &str, subnet: u8, members: usize) -> Result<Namespaces, String> {
        let bridge = format!("{tag}br");
        let mut namespaces = Namespaces {
            bridge: None,
            host_ends: Vec::new(),
            names: Vec::new(),
            addresses: Vec::new(),
            blackholes: Vec::new(),
        };
        // From here on, `Drop` removes whatever was made, also when a later step fails.
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        namespaces.bridge = Some(bridge.clone());
        let gateway = format!("10.213.{subnet}.1/24");
        ip(&["addr", "add", &gateway, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..members {
            let name = format!("{tag}m{index}");
            let host_end = format!("{tag}h{index}");
            let inner_end = format!("{tag}n{index}");
            let address = Ipv4Addr::new(10, 213, subnet, 10 + index as u8);
            ip(&["netns", "add", &name])?;
            namespaces.names.push(name.clone());
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &inner_end,
            ])?;
            namespaces.host_ends.push(host_end.clone());
            ip(&["link", "set", &inner_end, "netns", &name])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                &inner_end,
            ])?;
            ip(&["-n", &name, "link", "set", &inner_end, "up"])?;
            namespaces.addresses.push(address);
        }
        Ok(namespaces)
    }

    /// Drops every packet between `side` and the other members, both ways.
    fn cut(&mut self, side: &[usize]) -> Result<(), String> {
        for a in side.iter().copied() {
            for b in (0..self.names.len()).filter(|b| !side.contains(b)) {
                for (from, to) in [(a, b), (b, a)] {
                    let address = self.addresses[to];
                    ip(&[
                        "-n",
                        &self.names[from],
                        "route",
                        "add",
                        "blackhole",
                        &format!("{address}/32"),
                    ])?;
                    self.blackholes.push((from, address));
                }
            }
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), String> {
        let mut first_error = None;
        for (from, address) in std::mem::take(&mut self.blackholes) {
            let result = ip(&[
                "-n",
                &self.names[from],
                "route",
                "del",
                "blackhole",
                &format!("{address}/32"),
            ]);
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the other end.
        for name in &self.names {
            if let Err(error) = ip(&["netns", "del", name]) {
                eprintln!("jepsen-runner: cleaning up: {error}");
            }
        }
        for host_end in &self.host_ends {
            // Gone with its peer unless the set-up stopped before moving the peer.
            let _ = ip(&["link", "del", host_end]);
        }
        if let Some(bridge) = &self.bridge {
            if let Err(error) = ip(&["link", "del", bridge]) {
                eprintln!("jepsen-runner: cleaning up: {error}");
            }
        }
    }
}

/// Whether namespaces can be made here: root, and `ip netns` works.
pub fn namespaces_possible() -> Result<(), String> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|error| format!("cannot run id: {error}"))?;
    if String::from_utf8_lossy(&output.stdout).trim() != "0" {
        return Err("not root".into());
    }
    ip(&["netns", "list"]).map_err(|error| format!("iproute2 unusable: {error}"))
}

impl Cluster {
    /// Lays out `members` members under `out` (data dirs and logs), on namespaces when
    /// `use_namespaces`, else on loopback ports. Starts nothing.
    pub fn new(
        server_bin: &Path,
        out: &Path,
        members: usize,
        use_namespaces: bool,
    ) -> Result<Cluster, String> {
        let server_bin = server_bin
            .canonicalize()
            .map_err(|error| format!("--server-bin {}: {error}", server_bin.display()))?;
        let pid = std::process::id();
        // Interface names hold at most 15 bytes: "oxj" + 5 digits + "br" or "h9"/"n9"/"m9".
        let tag = format!("oxj{:05}", pid % 100_000);
        let namespaces = if use_namespaces {
            Some(Namespaces::create(&tag, (pid % 250) as u8, members)?)
        } else {
            None
        };
        let mut list = Vec::new();
        for index in 0..members {
            let (client, peer, namespace) = match &namespaces {
                Some(namespaces) => {
                    let address = namespaces.addresses[index];
                    (
                        SocketAddr::from((address, 2379)),
                        SocketAddr::from((address, 2380)),
                        Some(namespaces.names[index].clone()),
                    )
                }
                None => (
                    SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                    SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                    None,
                ),
            };
            let name = format!("m{index}");
            list.push(Member {
                data_dir: out.join(format!("{name}.data")),
                log: out.join(format!("{name}.log")),
                name,
                client,
                peer,
                namespace,
                child: None,
                paused: false,
            });
        }
        Ok(Cluster {
            server_bin,
            token: format!("jepsen-runner-{pid}"),
            members: list,
            namespaces,
            small_disk: None,
            incarnations: Incarnations::new(members),
        })
    }

    pub fn incarnations(&self) -> Incarnations {
        self.incarnations.clone()
    }

    pub fn on_namespaces(&self) -> bool {
        self.namespaces.is_some()
    }

    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|member| member.client).collect()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("{}=http://{}", member.name, member.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `index` (the same flags every time; on a restart the data dir decides
    /// and the initial-cluster flags are ignored, as etcd does). Its output is appended to
    /// its log.
    pub fn start(&mut self, index: usize) -> Result<(), String> {
        self.spawn(index, "new")
    }

    /// Starts member `index`, with an empty data dir, to join the running cluster that
    /// has just added it (`--initial-cluster-state existing`).
    pub fn join(&mut self, index: usize) -> Result<(), String> {
        self.spawn(index, "existing")
    }

    /// Kills member `index` and deletes its data dir (it was removed from the cluster).
    pub fn wipe(&mut self, index: usize) -> Result<(), String> {
        self.kill(index);
        let dir = &self.members[index].data_dir;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(format!("{}: {error}", dir.display())),
        }
    }

    fn spawn(&mut self, index: usize, state: &str) -> Result<(), String> {
        let initial_cluster = self.initial_cluster();
        let member = &mut self.members[index];
        if member.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .map_err(|error| format!("{}: {error}", member.log.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|error| format!("{}: {error}", member.log.display()))?;
        let mut command = match &member.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", namespace])
                    .arg(&self.server_bin);
                command
            }
            None => Command::new(&self.server_bin),
        };
        let client_url = format!("http://{}", member.client);
        let peer_url = format!("http://{}", member.peer);
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command
            .spawn()
            .map_err(|error| format!("starting {}: {error}", self.server_bin.display()))?;
        member.child = Some(child);
        // Before the process serves anything: a request that saw the old count and
        // finished after this one may have been served by either process.
        self.incarnations.0[index].fetch_add(1, Ordering::SeqCst);
        member.paused = false;
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), String> {
        for index in 0..self.members.len() {
            self.start(index)?;
        }
        Ok(())
    }

    /// kill -9 of member `index`, waiting until it is gone.
    pub fn kill(&mut self, index: usize) {
        let member = &mut self.members[index];
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        member.paused = false;
    }

    /// Sends `signal` (a name `kill` knows) to member `index`.
    fn signal(&mut self, index: usize, signal: &str) -> Result<(), String> {
        let Some(pid) = self.members[index].pid() else {
            return Err(format!("{} is not running", self.members[index].name));
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|error| format!("kill -{signal} {pid}: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {pid} failed"))
        }
    }

    /// SIGSTOP: the process stays, frozen, with its sockets open.
    pub fn pause(&mut self, index: usize) -> Result<(), String> {
        self.signal(index, "STOP")?;
        self.members[index].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, index: usize) -> Result<(), String> {
        if !self.members[index].paused {
            return Ok(());
        }
        self.signal(index, "CONT")?;
        self.members[index].paused = false;
        Ok(())
    }

    /// Cuts `side` off from the other members.
    pub fn partition(&mut self, side: &[usize]) -> Result<(), String> {
        match &mut self.namespaces {
            Some(namespaces) => namespaces.cut(side),
            None => Err("partitions need network namespaces".into()),
        }
    }

    /// Removes every partition, resumes every paused member and starts every stopped one.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first_error = None;
        if let Err(error) = self.free_disk() {
            first_error.get_or_insert(error);
        }
        if let Some(namespaces) = &mut self.namespaces {
            if let Err(error) = namespaces.heal() {
                first_error.get_or_insert(error);
            }
        }
        for index in 0..self.members.len() {
            if let Err(error) = self.resume(index) {
                first_error.get_or_insert(error);
            }
            if let Err(error) = self.start(index) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether a member exited on its own (a crash, not a kill): its name and status.
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for member in &mut self.members {
            if let Some(child) = &mut member.child {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push(format!("{} exited by itself ({status})", member.name));
                    member.child = None;
                }
            }
        }
        out
    }

    /// Kills every process (see the module doc).
    pub fn shutdown(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }

    /// Puts member `index`'s data dir on a tmpfs of its own (before it first starts), so
    /// that the disk can be filled without touching anything else on the machine.
    pub fn mount_small_disk(&mut self, index: usize) -> Result<(), String> {
        let dir = &self.members[index].data_dir;
        std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={SMALL_DISK_MB}m"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|error| format!("mount: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        self.small_disk = Some(index);
        Ok(())
    }

    pub fn small_disk(&self) -> Option<usize> {
        self.small_disk
    }

    /// Fills the small file system to the last byte (ENOSPC for the member's next write).
    pub fn fill_disk(&mut self) -> Result<u64, String> {
        use std::io::Write as _;
        let index = self.small_disk.ok_or("no small disk")?;
        let path = self.members[index].data_dir.join(BALLOON);
        let mut file =
            std::fs::File::create(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        // Whole megabytes, then single bytes, until the file system refuses.
        for size in [chunk.len(), 4096, 1] {
            while let Ok(()) = file.write_all(&chunk[..size]) {
                written += size as u64;
            }
        }
        let _ = file.sync_all();
        Ok(written)
    }

    /// Removes what [`Cluster::fill_disk`] wrote.
    pub fn free_disk(&mut self) -> Result<(), String> {
        let Some(index) = self.small_disk else {
            return Ok(());
        };
        let path = self.members[index].data_dir.join(BALLOON);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(format!("{}: {error}", path.display())),
        }
    }

    /// Whether member `index` exited by itself (and if so, forgets its process so that
    /// a heal starts it again): its exit status.
    pub fn exited_member(&mut self, index: usize) -> Option<String> {
        let member = &mut self.members[index];
        let status = member.child.as_mut()?.try_wait().ok()??;
        member.child = None;
        member.paused = false;
        Some(status.to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(index) = self.small_disk.take() {
            let dir = &self.members[index].data_dir;
            match Command::new("umount").arg(dir).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "jepsen-runner: cleaning up: umount {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                Err(error) => eprintln!("jepsen-runner: cleaning up: umount: {error}"),
            }
        }
        // `namespaces` drops after this, with the processes in them gone.
    }
}
