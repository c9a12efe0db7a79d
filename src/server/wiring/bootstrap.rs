//! Bootstrap: a member's durable state, recovered from its data dir or created new (etcd's
//! `bootstrap.go`). Nothing here starts a task; `start` builds the server from what this
//! returns.
//!
//! Recovery order on a restart:
//! 1. the WAL is opened (a torn tail is repaired; damage anywhere else refuses to start);
//! 2. the newest snapshot file gives the Raft log's starting point and membership;
//! 3. the backend (redb) gives the applied index it was committed through;
//! 4. the in-memory Raft log is rebuilt from the snapshot and the WAL entries after it;
//! 5. the core starts with `applied` = the snapshot's index, so the applier replays exactly
//!    the committed entries after it (skipping the backend work of those the backend
//!    already holds).

use std::sync::Arc;

use crate::io::{Clock, Disk};
use crate::proto::oxcdpb::Member;
use crate::raft::{self, ConfState, MemStorage, RawNode};
use crate::server::state::store::{self, Store};
use crate::server::tasks::peer_transport;
use crate::server::types::config::{Config, ConfigError};
use crate::server::types::ids;
use crate::server::types::metrics::Metrics;
use crate::wal::{SnapshotFiles, Wal, WalMetadata, WalOptions};

/// Why a member could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Auth(String),
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
    #[error("TLS: {0}")]
    Tls(String),
}

/// Snapshot files kept (etcd's --max-snapshots default).
const SNAPSHOT_FILES_KEPT: usize = 5;

/// Where the member list comes from before anything is applied.
pub(crate) enum MemberSource {
    /// The peers said, when this member joined a running cluster.
    Joined(Vec<Member>),
    /// The initial cluster of the flags (used only when the backend recorded none).
    Initial(Vec<Member>),
}

/// A member's state, recovered or new, ready for the tasks.
pub(crate) struct Recovered {
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) wal: Wal,
    pub(crate) snapshots: SnapshotFiles,
    pub(crate) store: Store,
    /// The Raft log, rebuilt from the snapshot and the WAL.
    pub(crate) log: MemStorage,
    pub(crate) raw_node: RawNode<MemStorage>,
    /// The configuration at the start of the log (the snapshot's, or the bootstrap's).
    pub(crate) conf_state: ConfState,
    /// The core hands out committed entries from here on.
    pub(crate) applied_index: u64,
    /// The backend holds the effects of every entry up to here.
    pub(crate) backend_index: u64,
    pub(crate) snapshot_index: u64,
    /// Entries replayed from the WAL.
    pub(crate) replayed: usize,
    pub(crate) member_source: MemberSource,
}

/// Opens (or creates) the member's storage on `disk` and rebuilds its Raft log and core.
pub(crate) async fn bootstrap(
    config: &Config,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    seed: u64,
) -> Result<Recovered, StartError> {
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
    let wal_options = WalOptions {
        segment_bytes: config.wal_segment_bytes,
        ..WalOptions::default()
    };
    let existing = Wal::exists(disk.as_ref(), &wal_dir);
    // A new member of a running cluster learns its id and the cluster from its peers.
    let joined = if !existing && config.initial_cluster_state == "existing" {
        Some(join_cluster(config, &initial_members).await?)
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
        store::install_image(disk.as_ref(), &image, &config.backend_path())
            .map_err(|error| storage_error("snapshot image", &error))?;
        tracing::info!(index = ?newest_index, "moved the leader's snapshot image over the backend");
    }
    let metrics = Arc::new(Metrics::new(config.extensive_metrics()));
    let store = Store::open(disk.clone(), clock, config, seed, metrics)
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
    let applied_index = snapshot_index;
    let raft_config = raft::Config {
        id: member_id,
        election_ticks: config.election_ticks(),
        heartbeat_ticks: 1,
        applied: applied_index,
        max_size_per_msg_bytes: 1024 * 1024,
        max_inflight_msgs: 512,
        check_quorum: true,
        pre_vote: config.pre_vote,
        ..raft::Config::new(member_id)
    };
    let raw_node = RawNode::new(&raft_config, log.clone(), seed)?;
    let member_source = match joined {
        Some(joined) => MemberSource::Joined(joined.members),
        None => MemberSource::Initial(
            initial_members
                .iter()
                .zip(&member_ids)
                .map(|((name, urls), &id)| Member {
                    id,
                    name: name.clone(),
                    peer_urls: urls.clone(),
                    client_urls: Vec::new(),
                    is_learner: false,
                })
                .collect(),
        ),
    };
    Ok(Recovered {
        member_id,
        cluster_id,
        wal,
        snapshots,
        store,
        log,
        raw_node,
        conf_state,
        applied_index,
        backend_index,
        snapshot_index,
        replayed: recovered.entries.len(),
        member_source,
    })
}

/// What a member joining a running cluster learns from its peers.
struct Joined {
    member_id: u64,
    cluster_id: u64,
    members: Vec<Member>,
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
            let Some(mut client) = peer_transport::connect(url, config).await else {
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
                     first (etcdctl server add)"
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
