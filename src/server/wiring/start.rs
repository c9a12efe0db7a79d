//! Starting a member: bootstrap its state, build the server, seed its membership, spawn its
//! tasks, serve, and stop.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use super::bootstrap::StartError;
use super::bootstrap::{bootstrap, MemberSource, Recovered};
use super::listen;
use crate::io::{Clock, Disk, StdDisk, SystemClock};
use crate::server::state::alarms::Alarms;
use crate::server::state::auth::Auth;
use crate::server::state::membership::Membership;
use crate::server::state::proposer::Proposer;
use crate::server::state::server::{self, Parts, Server};
use crate::server::tasks::apply::Applier;
#[cfg(madsim)]
use crate::server::tasks::message_faults::FaultyTransport;
use crate::server::tasks::peer_transport::PeerTransport;
use crate::server::tasks::raft_node::{HeartbeatDelays, RaftNode};
use crate::server::tasks::{lease_expiry, read_index};
use crate::server::types::config::Config;
use crate::server::types::error::ServerError;
#[cfg(madsim)]
use crate::server::types::observe;
use crate::server::types::progress::Progress;
use crate::server::types::request::REMOVED;
use crate::server::types::transport::Transport;

/// Inputs queued for the Raft task at most (proposals wait for room beyond that).
const NODE_INPUTS_QUEUED_MAX: usize = 8_192;

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
    // Before bootstrap: a joining member already talks to its peers there.
    let tls = Arc::new(listen::ListenerTls::prepare(&config)?);
    let mut recovered = bootstrap(&config, disk, clock, seed).await?;
    let member_id = recovered.member_id;
    #[cfg(madsim)]
    {
        observe::report(member_id, observe::Observation::Started);
        observe::report(
            member_id,
            observe::Observation::Loaded {
                index: recovered.backend_index,
                revision: recovered.store.current_revision(),
                digest: recovered.store.state_digest(),
            },
        );
    }
    let conf_state = &recovered.conf_state;
    let single_voter = conf_state.voters == [member_id] && conf_state.voters_outgoing.is_empty();
    if single_voter {
        // Nobody else can win; do not wait an election timeout to lead.
        recovered.raw_node.campaign()?;
    }

    let (node_inputs, inputs) = mpsc::channel(NODE_INPUTS_QUEUED_MAX);
    let (applier_batches, batches) = mpsc::unbounded_channel();
    let transport = Arc::new(PeerTransport::default());
    // The seam Raft messages leave through: the peer transport, behind the simulator's
    // message faults in simulation builds.
    #[cfg(not(madsim))]
    let seam: Arc<dyn Transport> = transport.clone();
    #[cfg(madsim)]
    let seam: Arc<dyn Transport> = Arc::new(FaultyTransport::new(transport.clone()));
    // Request ids must not repeat across restarts: an entry of the previous life still
    // waiting in the log would otherwise answer a new request with its own result. The
    // clock (virtual, hence deterministic, in the simulator) makes every start different
    // even when the caller passes the same seed each time.
    let started_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let store = recovered.store.clone();
    let server = Arc::new(Server::new(Parts {
        config: config.clone(),
        id: member_id,
        cluster_id: recovered.cluster_id,
        store: store.clone(),
        membership: Membership::new(
            member_id,
            store.clone(),
            seam.clone(),
            config.election(),
            recovered.applied_index,
            recovered.conf_state.clone(),
        ),
        alarms: Alarms::load(store.clone()),
        auth: Auth::load(store.clone(), &config).map_err(StartError::Auth)?,
        proposer: Proposer::new(
            node_inputs,
            member_id,
            seed ^ started_nanos,
            config.max_request_bytes,
            server::request_timeout(&config),
            store.metrics(),
        ),
        transport: seam,
        applied_index: recovered.applied_index,
    }));
    tracing::info!(
        name = %config.name,
        member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{:x}", recovered.cluster_id),
        applied = recovered.applied_index,
        replay = recovered.replayed,
        "starting member"
    );
    let _ = server.raft_log.set(recovered.log.clone());
    seed_membership(&server, &mut recovered)?;
    transport.start(&server);

    // Every fsync of the WAL lands in etcd's fsync histogram.
    let fsyncs = server.metrics.clone();
    recovered
        .wal
        .observe_syncs(Box::new(move |elapsed| fsyncs.wal_fsync.observe(elapsed)));
    let raft_node = RaftNode {
        raw_node: recovered.raw_node,
        storage: recovered.log,
        wal: recovered.wal,
        snapshots: recovered.snapshots,
        server: server.clone(),
        inputs,
        applier: applier_batches,
        campaign_after_advance: false,
        known_leader: 0,
        heartbeats: HeartbeatDelays::default(),
    };
    let applier = Applier {
        server: server.clone(),
        backend: store,
        batches,
        applied_index: recovered.applied_index,
        backend_index: recovered.backend_index,
        snapshot_index: recovered.snapshot_index,
        uncommitted_entries: 0,
    };
    let node_task = tokio::spawn(raft_node.run());
    let applier_task = tokio::spawn(applier.run());
    tokio::spawn(read_index::run(server.clone()));
    tokio::spawn(lease_expiry::run(server.clone()));

    // Clients are served once this member's name and client URLs are applied (etcd's
    // `ReadyNotify`): before that, other members do not list it (`endpoint status
    // --cluster`, `member list`), and it has not yet caught up with the log far enough to
    // apply its own entry. The client listeners are bound now, so a taken port still fails
    // the start; connections wait in the backlog meanwhile, as with etcd.
    let published = Arc::new(Progress::new(0));
    tokio::spawn(publish(server.clone(), published.clone()));
    let mut servers = serve(server.clone(), Listeners::Peers, &tls, None).await?;
    servers.extend(serve(server.clone(), Listeners::Metrics, &tls, None).await?);
    servers.extend(serve(server.clone(), Listeners::Clients, &tls, Some(published)).await?);
    tokio::select! {
        biased;
        _ = shutdown => server.lifecycle.stop(),
        _ = server.lifecycle.stopped() => {}
    }
    for listener in servers {
        listener.abort();
    }
    let node_result = node_task.await.unwrap_or(Err(ServerError::Stopped));
    let applier_result = applier_task.await.unwrap_or(Err(ServerError::Stopped));
    if let Some(reason) = server.lifecycle.stop_reason() {
        return Err(StartError::Stopped(reason));
    }
    if let Err(error) = node_result.and(applier_result) {
        return Err(StartError::Stopped(error.to_string()));
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What is known of every member, before anything is applied: what the backend recorded
/// (membership changes and publications), or what the peers said when this member joined,
/// or else the initial cluster. Then the transport carries messages to every one of them.
fn seed_membership(server: &Server, recovered: &mut Recovered) -> Result<(), StartError> {
    let membership = &server.membership;
    let saved = recovered.store.member_records();
    if saved.removed.contains(&server.id) {
        return Err(StartError::Stopped(REMOVED.into()));
    }
    membership.set_removed(saved.removed.iter().copied());
    match &recovered.member_source {
        MemberSource::Joined(records) => {
            for record in records {
                membership.set_member(record.clone());
            }
        }
        MemberSource::Initial(records) if saved.members.is_empty() => {
            for record in records {
                membership.set_member(record.clone());
            }
        }
        MemberSource::Initial(_) => {}
    }
    for record in saved.members {
        membership.set_member(record);
    }
    membership.set_member(server.own_record());
    membership.connect_peers();
    Ok(())
}

/// Which services a listener serves.
#[derive(Clone, Copy)]
enum Listeners {
    /// The etcd v3 API, on the client URLs.
    Clients,
    /// The Raft transport, on the peer URLs.
    Peers,
    /// The HTTP endpoints (metrics, health, version), on `--listen-metrics-urls`. Real
    /// sockets only: the simulator has no HTTP/1.1 clients.
    Metrics,
}

/// Serves `which` on each of its listen addresses until the member stops; with `ready`,
/// binds at once but serves only once it reaches 1.
async fn serve(
    server: Arc<Server>,
    which: Listeners,
    tls: &Arc<listen::ListenerTls>,
    ready: Option<Arc<Progress>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, StartError> {
    let (addresses, what) = match which {
        Listeners::Clients => (server.config.client_listeners()?, "client"),
        Listeners::Peers => (server.config.peer_listeners()?, "peer"),
        // Plain HTTP: the metrics listeners do not terminate TLS.
        #[cfg(not(madsim))]
        Listeners::Metrics => {
            let addresses = server.config.metrics_listen_addrs()?;
            (
                addresses
                    .into_iter()
                    .map(|address| (address, false))
                    .collect(),
                "metrics",
            )
        }
        #[cfg(madsim)]
        Listeners::Metrics => (Vec::new(), "metrics"),
    };
    let mut servers = Vec::new();
    for (address, https) in addresses {
        // The simulator's transport binds by address; production binds here so that a
        // taken port fails the start instead of a background task.
        #[cfg(not(madsim))]
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Listen { address, source })?;
        #[cfg(madsim)]
        let listener = address;
        let server = server.clone();
        let tls = tls.clone();
        let ready = ready.clone();
        servers.push(tokio::spawn(async move {
            if let Some(ready) = ready {
                tokio::select! {
                    biased;
                    _ = server.lifecycle.stopped() => return,
                    _ = ready.reached(1) => {}
                }
            }
            let stopping = server.clone();
            let shutdown = async move { stopping.lifecycle.stopped().await };
            let result = match which {
                Listeners::Clients => {
                    listen::serve(server.clone(), listener, &tls, https, shutdown).await
                }
                Listeners::Peers => {
                    listen::serve_peers(server.clone(), listener, &tls, https, shutdown).await
                }
                #[cfg(not(madsim))]
                Listeners::Metrics => {
                    listen::serve_metrics(server.clone(), listener, shutdown).await;
                    Ok(())
                }
                #[cfg(madsim)]
                Listeners::Metrics => Ok(()),
            };
            if let Err(error) = result {
                tracing::error!(%error, %address, "{what} listener failed");
                server
                    .lifecycle
                    .stop_with_error(format!("{what} listener {address}: {error}"));
            }
        }));
    }
    Ok(servers)
}

/// Publishes this member's name and client URLs through Raft, retrying until it is applied,
/// so that every member lists it (etcd publishes the same way when a member starts).
///
/// Clients wait for it, so an attempt lost to a leader change (the entry overwritten by the
/// new leader's log) is given up after two election timeouts rather than etcd's request
/// timeout of five seconds and more. A member that needs longer to apply its own entry
/// (catching up from far behind) proposes it again; the records are the same, and applying
/// one twice changes nothing.
async fn publish(server: Arc<Server>, published: Arc<Progress>) {
    use crate::proto::oxcdpb::internal_request::Request;
    let attempt = server.config.election() * 2;
    loop {
        match server
            .proposer
            .propose_within(Request::MemberAttributes(server.own_record()), attempt)
            .await
        {
            Ok(_) => {
                published.advance(1);
                tracing::info!(
                    urls = ?server.config.advertise_client_urls(),
                    "ready to serve client requests"
                );
                return;
            }
            Err(error) => tracing::debug!(%error, "publishing member attributes; retrying"),
        }
        tokio::select! {
            biased;
            _ = tokio::time::sleep(server.config.heartbeat() * 5) => {}
            _ = server.lifecycle.stopped() => return,
        }
    }
}
