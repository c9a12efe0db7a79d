//! Running members inside the simulator.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::task::NodeId;
use oxcd::io::{SimClock, SimDisk};
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::server::Config;
use tonic::transport::Channel;

/// The client port every simulated member listens on.
pub const CLIENT_PORT: u16 = 2379;

/// Runs `scenario` for one seed in a fresh simulated world, after printing how to replay it.
///
/// Each seed runs on a thread of its own: std's `HashMap` seeds its hashers from a
/// thread-local key made on first use, and madsim can make that key deterministic only if
/// the first use happens inside the simulation. On a reused thread, one seed's hash order
/// would depend on the seeds run before it.
pub fn run_seed<F, Fut, T>(test: &str, seed: u64, scenario: F) -> T
where
    F: FnOnce(u64) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    println!(
        "seed {seed}; reproduce with: {}",
        crate::reproduce_command(test, seed)
    );
    // SIM_LOG takes a tracing filter (for example `oxcd=debug`); warnings by default.
    let filter = std::env::var("SIM_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let world = std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.set_time_limit(Duration::from_secs(600));
            runtime.block_on(scenario(seed))
        })
        .expect("simulation thread starts");
    match world.join() {
        Ok(outcome) => outcome,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// One simulated member: its node, its disk and its clock (which survive restarts, as a
/// machine's do), its address.
pub struct SimMember {
    pub node: NodeHandle,
    pub disk: Arc<SimDisk>,
    pub clock: Arc<SimClock>,
    pub ip: IpAddr,
    /// The member's Raft id.
    pub id: u64,
    /// Its number: name `m{index}`, address 10.0.0.{index}.
    pub index: u8,
}

/// How the members of a simulated cluster are configured.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub size: u8,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_count: u64,
    /// Log entries kept behind a snapshot (small values force snapshot transfers).
    pub catch_up_entries: Option<u64>,
    /// `--strict-reconfig-check`. With it the leader refuses membership changes until it
    /// has been in touch with every member for five seconds, which a run's faults rarely
    /// allow; without it, member replacement runs its course.
    pub strict_reconfig: bool,
    /// WAL segment size. Far below etcd's 64 MiB, so that segments are cut (and a
    /// restart reads several of them, chained by their CRCs) within a run; a start also
    /// reads a whole preallocated segment, which at 64 MiB was most of a sweep's time.
    pub wal_segment_bytes: u64,
    /// `--experimental-watch-progress-notify-interval`, in milliseconds (etcd's default is
    /// ten minutes, so that a run sees a periodic progress notification only when it is
    /// shortened).
    pub progress_notify_ms: u64,
}

/// etcd's interval between periodic watch progress notifications.
pub const PROGRESS_NOTIFY_DEFAULT_MS: u64 = 600_000;

impl ClusterSpec {
    pub fn single() -> ClusterSpec {
        ClusterSpec {
            size: 1,
            heartbeat_ms: 100,
            election_ms: 1000,
            snapshot_count: 100_000,
            catch_up_entries: None,
            strict_reconfig: true,
            wal_segment_bytes: 64 << 10,
            progress_notify_ms: PROGRESS_NOTIFY_DEFAULT_MS,
        }
    }

    /// The shortest TTL the members grant.
    pub fn lease_ttl_min(&self) -> i64 {
        self.config(1).min_lease_ttl_secs()
    }

    /// The address of member `index` (1-based). Not 127.x: madsim treats loopback
    /// addresses as the node itself.
    pub fn ip(index: u8) -> IpAddr {
        [10, 0, 0, index].into()
    }

    /// The peer URL of member `index`.
    pub fn peer_url(index: u8) -> String {
        format!("http://{}:2380", Self::ip(index))
    }

    fn initial_cluster(&self) -> String {
        Self::cluster_of(1..=self.size)
    }

    /// The `--initial-cluster` value naming the members with these indexes.
    pub fn cluster_of(indexes: impl IntoIterator<Item = u8>) -> String {
        indexes
            .into_iter()
            .map(|index| format!("m{index}={}", Self::peer_url(index)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The Raft id member `index` gets (derived from its peer URL, as etcd derives it).
    pub fn member_id(index: u8) -> u64 {
        oxcd::server::member_id(&[Self::peer_url(index)], "etcd-cluster")
    }

    fn config(&self, index: u8) -> Config {
        self.config_in(index, &self.initial_cluster(), "new")
    }

    fn config_in(&self, index: u8, initial_cluster: &str, state: &str) -> Config {
        let ip = Self::ip(index);
        let peer = Self::peer_url(index);
        let client = format!("http://{ip}:{CLIENT_PORT}");
        let name = format!("m{index}");
        let mut args = vec![
            "oxcd".to_string(),
            "--name".into(),
            name.clone(),
            "--data-dir".into(),
            format!("/sim/{name}"),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer,
            "--initial-cluster".into(),
            initial_cluster.to_string(),
            "--initial-cluster-state".into(),
            state.to_string(),
            "--heartbeat-interval".into(),
            self.heartbeat_ms.to_string(),
            "--election-timeout".into(),
            self.election_ms.to_string(),
            "--snapshot-count".into(),
            self.snapshot_count.to_string(),
        ];
        args.push(format!("--strict-reconfig-check={}", self.strict_reconfig));
        args.push(format!(
            "--experimental-watch-progress-notify-interval={}",
            self.progress_notify_ms
        ));
        // bcrypt's cheapest cost: the auth scenario hashes and checks passwords, and the
        // simulator runs them on its one thread.
        args.push("--bcrypt-cost=4".into());
        if let Some(entries) = self.catch_up_entries {
            args.push("--experimental-snapshot-catchup-entries".into());
            args.push(entries.to_string());
        }
        let mut config = Config::try_parse_from(args).expect("simulated member flags parse");
        config.wal_segment_bytes = self.wal_segment_bytes;
        config
    }
}

impl SimMember {
    /// Creates and starts member `index` (1-based) of a one-member cluster.
    pub fn start_single(index: u8, seed: u64) -> SimMember {
        SimMember::start(index, &ClusterSpec::single(), seed)
    }

    /// Creates and starts member `index` (1-based) of the cluster `spec`. A member that
    /// stops on a storage failure (EIO on fsync) is restarted after a power cut of its disk,
    /// as a supervisor would restart the process.
    pub fn start(index: u8, spec: &ClusterSpec, seed: u64) -> SimMember {
        SimMember::launch(
            index,
            spec.config(index),
            seed,
            ClusterSpec::member_id(index),
        )
    }

    /// Starts member `index` joining a running cluster (`--initial-cluster-state
    /// existing`) after MemberAdd gave it the id `id`.
    pub fn join(
        index: u8,
        spec: &ClusterSpec,
        initial_cluster: &str,
        seed: u64,
        id: u64,
    ) -> SimMember {
        let config = spec.config_in(index, initial_cluster, "existing");
        SimMember::launch(index, config, seed, id)
    }

    fn launch(index: u8, config: Config, seed: u64, id: u64) -> SimMember {
        let ip = ClusterSpec::ip(index);
        let disk = Arc::new(SimDisk::new(seed ^ u64::from(index)));
        let node_disk = disk.clone();
        let clock = Arc::new(SimClock::new());
        let node_clock = clock.clone();
        let own_id: Arc<std::sync::OnceLock<NodeId>> = Arc::default();
        let node_id = own_id.clone();
        let node = Handle::current()
            .create_node()
            .name(format!("m{index}"))
            .ip(ip)
            .init(move || {
                let config = config.clone();
                let disk = node_disk.clone();
                let clock = node_clock.clone();
                let node_id = node_id.clone();
                async move {
                    // A new process: whatever answers from this address from now on is
                    // another server process than before.
                    PROCESS_LIVES.with(|lives| *lives.borrow_mut().entry(ip).or_default() += 1);
                    let stop = std::future::pending::<()>();
                    let result =
                        oxcd::server::run_on(config, disk.clone(), clock, seed, stop).await;
                    let Err(error) = result else { return };
                    if error.to_string().contains(oxcd::server::REMOVED) {
                        // Removed from the cluster: its supervisor lets it go.
                        tracing::warn!(%error, "member removed; not restarting it");
                        return;
                    }
                    // The process exits and its supervisor starts it again: the node is
                    // restarted, which closes every socket the old process held.
                    tracing::warn!(%error, "member stopped; restarting it");
                    disk.crash();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Some(&id) = node_id.get() {
                        // `kill` closes the node's sockets; `restart` alone would not.
                        Handle::current().kill(id);
                        Handle::current().restart(id);
                    }
                }
            })
            .build();
        let _ = own_id.set(node.id());
        SimMember {
            node,
            disk,
            clock,
            ip,
            id,
            index,
        }
    }

    pub fn client_address(&self) -> SocketAddr {
        SocketAddr::new(self.ip, CLIENT_PORT)
    }

    /// Power loss: the process dies and the disk keeps only what was synced.
    pub fn crash(&self) {
        Handle::current().kill(self.node.id());
        self.disk.crash();
    }

    pub fn restart(&self) {
        Handle::current().restart(self.node.id());
    }
}

thread_local! {
    /// Member address → how many processes started there so far. Thread-local: each
    /// simulated world runs on a thread of its own.
    static PROCESS_LIVES: std::cell::RefCell<std::collections::HashMap<IpAddr, u64>> =
        std::cell::RefCell::default();
}

/// How many server processes have started at `address` so far.
pub fn process_life(address: SocketAddr) -> u64 {
    PROCESS_LIVES.with(|lives| lives.borrow().get(&address.ip()).copied().unwrap_or(0))
}

/// The name jepsen-lite's histories give the server process that answered a request sent
/// to `address` while `life` was its process life (`member` on operations and watches),
/// if no other process started there before the answer came back: a request answered
/// with no restart in between was served by the process that was running when it left.
pub fn process_name(address: SocketAddr, life: u64) -> Option<String> {
    (life > 0 && process_life(address) == life).then(|| format!("{}#{life}", address.ip()))
}

/// Connects a KV client to `address`, retrying while the member starts.
pub async fn kv_client(address: SocketAddr) -> KvClient<Channel> {
    loop {
        match KvClient::connect(format!("http://{address}")).await {
            Ok(client) => return client,
            Err(error) => {
                tracing::debug!(%error, %address, "connect failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
}
