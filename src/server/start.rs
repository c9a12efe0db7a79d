//! Starting a member: open (or create) its storage, replay it, start its tasks, serve.
//!
//! Recovery order on a restart:
//! 1. the WAL is opened (a torn tail is repaired; damage anywhere else refuses to start);
//! 2. the newest snapshot file gives the Raft log's starting point and membership;
//! 3. the backend (redb) gives the applied index it was committed through;
//! 4. the in-memory Raft log is rebuilt from the snapshot and the WAL entries after it;
//! 5. the core starts with `applied` = the backend's index, so the applier replays exactly
//!    the committed entries the backend had not yet made durable.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::apply::Applier;
use super::config::{Config, ConfigError};
use super::error::EtcdError;
use super::ids;
use super::lease::expiry_loop;
use super::member::Member;
use super::node::Node;
use super::peer::PeerTransport;
use super::store::Store;
use super::transport::Transport as _;
use crate::io::{Clock, Disk, StdDisk, SystemClock};
use crate::raft::{self, ConfState, MemStorage, RawNode};
use crate::wal::{SnapshotFiles, Wal, WalMetadata, WalOptions};

/// Inputs queued for the Raft task at most (proposals wait for room beyond that).
const NODE_INPUTS_QUEUED_MAX: usize = 8_192;
/// Snapshot files kept (etcd's --max-snapshots default).
const SNAPSHOT_FILES_KEPT: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the member stopped: {0}")]
    Stopped(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
}

/// Runs a member on the real disk until `shutdown` completes or the member fails.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    run_on(
        config,
        Arc::new(StdDisk),
        Arc::new(SystemClock),
        seed,
        shutdown,
    )
    .await
}

/// Runs a member on `disk` measuring time by `clock` (the simulator passes its crashable
/// disk and a clock it skews) with all randomness derived from `seed`.
pub async fn run_on(
    config: Config,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    seed: u64,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    config.validate()?;
    let storage_error =
        |what: &str, error: &dyn std::fmt::Display| StartError::Storage(format!("{what}: {error}"));

    let token = &config.initial_cluster_token;
    let initial_members = config.initial_cluster_members()?;
    let member_ids: Vec<u64> = initial_members
        .iter()
        .map(|(_, urls)| ids::member_id(urls, token))
        .collect();
    let configured_id = ids::member_id(&config.advertise_peer_urls(), token);

    disk.create_dir_all(&config.member_dir())
        .map_err(|error| storage_error("data dir", &error))?;
    let wal_dir = config.wal_dir();
    let wal_options = WalOptions::default();
    let existing = Wal::exists(disk.as_ref(), &wal_dir);
    // A new member of a running cluster learns its id and the cluster from its peers.
    let joined = if !existing && config.initial_cluster_state == "existing" {
        Some(join_cluster(&config, &initial_members).await?)
    } else {
        None
    };
    let (mut wal, recovered) = if existing {
        Wal::open(disk.clone(), &wal_dir, wal_options)
            .map_err(|error| storage_error("WAL", &error))?
    } else {
        let metadata = match &joined {
            Some(joined) => WalMetadata {
                member_id: joined.member_id,
                cluster_id: joined.cluster_id,
            },
            None => WalMetadata {
                member_id: configured_id,
                cluster_id: ids::cluster_id(&member_ids),
            },
        };
        Wal::create(disk.clone(), &wal_dir, metadata, wal_options)
            .map_err(|error| storage_error("WAL", &error))?
    };
    // A restarted member keeps the identity it was created with, whatever the flags say now.
    let member_id = recovered.metadata.member_id;
    let cluster_id = recovered.metadata.cluster_id;

    let snapshots = SnapshotFiles::open(disk.clone(), &config.snap_dir(), SNAPSHOT_FILES_KEPT)
        .map_err(|error| storage_error("snapshots", &error))?;
    let snapshot = snapshots
        .load_newest()
        .map_err(|error| storage_error("snapshot", &error))?;

    // A snapshot received from the leader whose image the applier had not yet moved over
    // the backend when the member stopped: finish the move now.
    let newest_index = snapshot
        .as_ref()
        .and_then(|snapshot| snapshot.metadata.as_ref())
        .map(|metadata| metadata.index);
    let pending_image = snapshots
        .settle_dbs(newest_index)
        .map_err(|error| storage_error("snapshot images", &error))?;
    if let Some(image) = pending_image {
        super::store::install_image(disk.as_ref(), &image, &config.backend_path())
            .map_err(|error| storage_error("snapshot image", &error))?;
        tracing::info!(index = ?newest_index, "moved the leader's snapshot image over the backend");
    }
    let store = Store::open(disk.clone(), clock, &config, seed)
        .map_err(|error| storage_error("backend", &error))?;
    let backend_index = store.consistent_index();

    let log = MemStorage::new();
    let mut conf_state = ConfState::default();
    let mut snapshot_index = 0;
    let fresh =
        recovered.entries.is_empty() && recovered.hard_state.is_none() && snapshot.is_none();
    let mut recovered = recovered;
    if let Some(snapshot) = snapshot {
        if let Some(metadata) = &snapshot.metadata {
            snapshot_index = metadata.index;
            if let Some(snapshot_conf) = &metadata.conf_state {
                conf_state = snapshot_conf.clone();
            }
        }
        log.apply_snapshot(snapshot)
            .map_err(|error| storage_error("log snapshot", &error))?;
    } else if fresh && joined.is_none() {
        // A brand-new member of a new cluster: the log starts with one committed entry per
        // initial member, made durable before anything else (a member that joins later
        // learns the initial membership from them).
        let hard_state = raft::HardState {
            term: 1,
            vote: 0,
            commit: member_ids.len() as u64,
        };
        let entries = raft::bootstrap_entries(&member_ids);
        wal.save(Some(&hard_state), &entries, true)
            .map_err(|error| storage_error("WAL bootstrap", &error))?;
        recovered.hard_state = Some(hard_state);
        recovered.entries = entries;
        conf_state = ConfState {
            voters: member_ids.clone(),
            ..Default::default()
        };
    }
    // Without a snapshot the membership is rebuilt by re-applying the log from its start.
    log.set_conf_state(conf_state.clone());
    if let Some(hard_state) = recovered.hard_state {
        log.set_hard_state(hard_state);
    }
    log.append(&recovered.entries)
        .map_err(|error| storage_error("log replay", &error))?;

    // The core hands out committed entries from the snapshot on; the applier skips the
    // backend work of those the backend already holds.
    let applied = snapshot_index;
    let raft_config = raft::Config {
        id: member_id,
        election_ticks: config.election_ticks(),
        heartbeat_ticks: 1,
        applied,
        max_size_per_msg_bytes: 1024 * 1024,
        max_inflight_msgs: 512,
        check_quorum: true,
        pre_vote: config.pre_vote,
        ..raft::Config::new(member_id)
    };
    let mut raw_node = RawNode::new(&raft_config, log.clone(), seed)?;
    #[cfg(madsim)]
    super::observe::report(member_id, super::observe::Observation::Started);
    let single_voter = conf_state.voters == [member_id] && conf_state.voters_outgoing.is_empty();
    if single_voter {
        // Nobody else can win; do not wait an election timeout to lead.
        raw_node.campaign()?;
    }

    let (node_inputs, inputs) = mpsc::channel(NODE_INPUTS_QUEUED_MAX);
    let (applier_batches, batches) = mpsc::unbounded_channel();
    let alarms = store.alarms();
    let transport = Arc::new(PeerTransport::default());
    // Request ids must not repeat across restarts: an entry of the previous life still
    // waiting in the log would otherwise answer a new request with its own result. The
    // clock (virtual, hence deterministic, in the simulator) makes every start different
    // even when the caller passes the same seed each time.
    let started_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let member = Arc::new(Member::new(
        config.clone(),
        member_id,
        cluster_id,
        store.clone(),
        transport.clone(),
        node_inputs,
        applied,
        conf_state,
        alarms,
        seed ^ started_nanos,
    ));
    tracing::info!(
        name = %config.name,
        member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        applied,
        replay = recovered.entries.len(),
        "starting member"
    );

    // What is known of every member, before anything is applied: what the backend recorded
    // (membership changes and publications), or what the peers said when this member
    // joined, or else the initial cluster.
    let _ = member.raft_log.set(log.clone());
    let saved = store.member_records();
    if saved.removed.contains(&member_id) {
        return Err(StartError::Stopped(super::peer::REMOVED.into()));
    }
    member.set_removed(saved.removed.iter().copied());
    if let Some(joined) = &joined {
        for record in &joined.members {
            member.set_member(record.clone());
        }
    } else if saved.members.is_empty() {
        for ((name, urls), &id) in initial_members.iter().zip(&member_ids) {
            member.set_member(crate::proto::oxcdpb::MemberRecord {
                id,
                name: name.clone(),
                peer_urls: urls.clone(),
                client_urls: Vec::new(),
                is_learner: false,
            });
        }
    }
    for record in saved.members {
        member.set_member(record);
    }
    member.set_member(member.own_record());
    for record in member.members() {
        if let (Some(url), true) = (record.peer_urls.first(), record.id != member_id) {
            transport.add_peer(record.id, url.clone());
        }
    }
    transport.start(&member);

    let node = Node {
        raw_node,
        storage: log,
        wal,
        snapshots,
        member: member.clone(),
        inputs,
        applier: applier_batches,
        campaign_after_advance: false,
    };
    let applier = Applier {
        member: member.clone(),
        backend: store.backend(),
        batches,
        applied_index: applied,
        backend_index,
        snapshot_index,
        uncommitted_entries: 0,
    };
    let node_task = tokio::spawn(node.run());
    let applier_task = tokio::spawn(applier.run());
    tokio::spawn(member.reads.clone().run(member.clone()));
    tokio::spawn(expiry_loop(member.clone()));

    tokio::spawn(publish(member.clone()));
    let mut servers = serve(member.clone(), Listeners::Clients).await?;
    servers.extend(serve(member.clone(), Listeners::Peers).await?);
    tracing::info!(urls = ?config.advertise_client_urls(), "ready to serve client requests");
    tokio::select! {
        biased;
        _ = shutdown => member.stop(),
        _ = member.stopped() => {}
    }
    for server in servers {
        server.abort();
    }
    let node_result = node_task.await.unwrap_or(Err(EtcdError::Stopped));
    let applier_result = applier_task.await.unwrap_or(Err(EtcdError::Stopped));
    if let Some(reason) = member.stop_reason() {
        return Err(StartError::Stopped(reason));
    }
    if let Err(error) = node_result.and(applier_result) {
        return Err(StartError::Stopped(error.to_string()));
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What a member joining a running cluster learns from its peers.
struct Joined {
    member_id: u64,
    cluster_id: u64,
    members: Vec<crate::proto::oxcdpb::MemberRecord>,
}

/// How long a joining member keeps asking its peers for the cluster's membership.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks the peers of `--initial-cluster` for the cluster's members, and finds this member
/// among them by its advertised peer URLs (it must have been added with MemberAdd).
async fn join_cluster(
    config: &Config,
    initial_members: &[(String, Vec<String>)],
) -> Result<Joined, StartError> {
    let own_urls = config.advertise_peer_urls();
    let peers: Vec<&String> = initial_members
        .iter()
        .flat_map(|(_, urls)| urls)
        .filter(|url| !own_urls.contains(url))
        .collect();
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        for url in &peers {
            let Some(mut client) = super::peer::connect(url).await else {
                continue;
            };
            let call = client.members(crate::proto::oxcdpb::MembersRequest {});
            let Ok(Ok(response)) =
                tokio::time::timeout(std::time::Duration::from_secs(2), call).await
            else {
                continue;
            };
            let response = response.into_inner();
            let own = response
                .members
                .iter()
                .find(|record| record.peer_urls.iter().any(|url| own_urls.contains(url)));
            let Some(own) = own else {
                return Err(StartError::Join(format!(
                    "no member with peer URLs {own_urls:?} in the cluster at {url}; add it \
                     first (etcdctl member add)"
                )));
            };
            return Ok(Joined {
                member_id: own.id,
                cluster_id: response.cluster_id,
                members: response.members.clone(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Join(format!(
                "no peer of --initial-cluster answered ({peers:?})"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Which services a listener serves.
#[derive(Clone, Copy)]
enum Listeners {
    /// The etcd v3 API, on the client URLs.
    Clients,
    /// The Raft transport, on the peer URLs.
    Peers,
}

/// Serves `which` on each of its listen addresses until the member stops.
async fn serve(
    member: Arc<Member>,
    which: Listeners,
) -> Result<Vec<tokio::task::JoinHandle<()>>, StartError> {
    let (addresses, what) = match which {
        Listeners::Clients => (member.config.client_listen_addrs()?, "client"),
        Listeners::Peers => (member.config.peer_listen_addrs()?, "peer"),
    };
    let mut servers = Vec::new();
    for address in addresses {
        // The simulator's transport binds by address; production binds here so that a
        // taken port fails the start instead of a background task.
        #[cfg(not(madsim))]
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Listen { address, source })?;
        #[cfg(madsim)]
        let listener = address;
        let member = member.clone();
        servers.push(tokio::spawn(async move {
            let stopping = member.clone();
            let shutdown = async move { stopping.stopped().await };
            let result = match which {
                Listeners::Clients => super::grpc::serve(member.clone(), listener, shutdown).await,
                Listeners::Peers => {
                    super::grpc::serve_peers(member.clone(), listener, shutdown).await
                }
            };
            if let Err(error) = result {
                tracing::error!(%error, %address, "{what} listener failed");
                member.stop_with_error(format!("{what} listener {address}: {error}"));
            }
        }));
    }
    Ok(servers)
}

/// Publishes this member's name and client URLs through Raft, retrying until it is applied,
/// so that every member lists it (etcd publishes the same way when a member starts).
async fn publish(member: Arc<Member>) {
    use crate::proto::oxcdpb::internal_request::Request;
    loop {
        match member
            .propose(Request::MemberAttributes(member.own_record()))
            .await
        {
            Ok(_) => return,
            Err(error) => tracing::debug!(%error, "publishing member attributes; retrying"),
        }
        tokio::select! {
            biased;
            _ = tokio::time::sleep(member.config.heartbeat() * 5) => {}
            _ = member.stopped() => return,
        }
    }
}
