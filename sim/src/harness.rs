//! Running members inside the simulator.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use oxcd::io::SimDisk;
use oxcd::proto::etcdserverpb::kv_client::KvClient;
use oxcd::server::Config;
use tonic::transport::Channel;

/// The client port every simulated member listens on.
pub const CLIENT_PORT: u16 = 2379;

/// Runs `scenario` for one seed in a fresh simulated world, after printing how to replay it.
pub fn run_seed<F, Fut, T>(test: &str, seed: u64, scenario: F) -> T
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = T>,
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
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(Duration::from_secs(600));
    runtime.block_on(scenario(seed))
}

/// One simulated member: its node, its disk (which survives restarts), its address.
pub struct SimMember {
    pub node: NodeHandle,
    pub disk: Arc<SimDisk>,
    pub ip: IpAddr,
}

impl SimMember {
    /// Creates and starts member `index` (1-based) of a one-member cluster.
    pub fn start_single(index: u8, seed: u64) -> SimMember {
        // Not 127.x: madsim treats loopback addresses as the node itself.
        let ip: IpAddr = [10, 0, 0, index].into();
        let disk = Arc::new(SimDisk::new(seed ^ u64::from(index)));
        let peer = format!("http://{ip}:2380");
        let client = format!("http://{ip}:{CLIENT_PORT}");
        let name = format!("m{index}");
        let config = Config::try_parse_from([
            "oxcd",
            "--name",
            &name,
            "--data-dir",
            &format!("/sim/{name}"),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("{name}={peer}"),
        ])
        .expect("simulated member flags parse");
        let node_disk = disk.clone();
        let node = Handle::current()
            .create_node()
            .name(name)
            .ip(ip)
            .init(move || {
                let config = config.clone();
                let disk = node_disk.clone();
                async move {
                    let stop = std::future::pending::<()>();
                    if let Err(error) = oxcd::server::start::run_on(config, disk, seed, stop).await
                    {
                        tracing::warn!(%error, "member exited");
                    }
                }
            })
            .build();
        SimMember { node, disk, ip }
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
