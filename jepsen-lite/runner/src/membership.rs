//! Membership changes under load: a member (a random one, or the leader) is removed from
//! the cluster, its process killed and its data dir wiped, then added back with the same
//! name and peer URL as a learner, started to join the existing cluster, and promoted to
//! a voter once it has caught up (which both servers refuse until then). The change goes
//! through the Cluster API of the other members, as an operator (or etcdadm) makes it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use oxcd::proto::etcdserverpb::cluster_client::ClusterClient;
use oxcd::proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
};

use crate::workload::connect;

/// How long each step may keep trying (a step fails while the cluster has no leader).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

async fn cluster_client(
    endpoint: SocketAddr,
) -> Result<ClusterClient<tonic::transport::Channel>, String> {
    Ok(ClusterClient::new(connect(endpoint).await?))
}

/// Runs `step` against each of `endpoints` in turn until one succeeds or
/// [`STEP_TIMEOUT`] passes; the last error otherwise.
async fn retrying<T, F, Fut>(endpoints: &[SocketAddr], what: &str, mut step: F) -> Result<T, String>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = String::new();
    loop {
        for &endpoint in endpoints {
            match tokio::time::timeout(CALL_TIMEOUT, step(endpoint)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => last = error,
                Err(_) => last = "timed out".into(),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The ID of the member named `name`, asked of `endpoints`.
pub async fn member_id(endpoints: &[SocketAddr], name: &str) -> Result<u64, String> {
    retrying(endpoints, "member list", |endpoint| async move {
        let members = cluster_client(endpoint)
            .await?
            .member_list(MemberListRequest { linearizable: true })
            .await
            .map_err(|status| status.message().to_string())?
            .into_inner()
            .members;
        members
            .iter()
            .find(|member| member.name == name)
            .map(|member| member.id)
            .ok_or_else(|| format!("no member named {name}"))
    })
    .await
}

/// Removes member `id`, through `endpoints` (which must not include it).
pub async fn remove(endpoints: &[SocketAddr], id: u64) -> Result<(), String> {
    retrying(endpoints, "member remove", |endpoint| async move {
        let result = cluster_client(endpoint)
            .await?
            .member_remove(MemberRemoveRequest { id })
            .await;
        match result {
            Ok(_) => Ok(()),
            // A retry of a removal that took effect.
            Err(status) if status.message() == "etcdserver: member not found" => Ok(()),
            Err(status) => Err(status.message().to_string()),
        }
    })
    .await
}

/// Adds a learner with `peer_url`; its new ID.
pub async fn add_learner(endpoints: &[SocketAddr], peer_url: &str) -> Result<u64, String> {
    let url = peer_url.to_string();
    retrying(endpoints, "member add --learner", |endpoint| {
        let url = url.clone();
        async move {
            let result = cluster_client(endpoint)
                .await?
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec![url.clone()],
                    is_learner: true,
                })
                .await;
            match result {
                Ok(response) => response
                    .into_inner()
                    .member
                    .map(|member| member.id)
                    .ok_or_else(|| "an add without the new member".to_string()),
                // A retry of an addition that took effect: find it.
                Err(status) if status.message() == "etcdserver: Peer URLs already exists" => {
                    let members = cluster_client(endpoint)
                        .await?
                        .member_list(MemberListRequest { linearizable: true })
                        .await
                        .map_err(|status| status.message().to_string())?
                        .into_inner()
                        .members;
                    members
                        .iter()
                        .find(|member| member.peer_ur_ls.contains(&url))
                        .map(|member| member.id)
                        .ok_or_else(|| "the added member is not listed".to_string())
                }
                Err(status) => Err(status.message().to_string()),
            }
        }
    })
    .await
}

/// Promotes learner `id` once it has caught up (refused until then).
pub async fn promote(endpoints: &[SocketAddr], id: u64) -> Result<(), String> {
    retrying(endpoints, "member promote", |endpoint| async move {
        let result = cluster_client(endpoint)
            .await?
            .member_promote(MemberPromoteRequest { id })
            .await;
        match result {
            Ok(_) => Ok(()),
            // A retry of a promotion that took effect.
            Err(status) if status.message() == "etcdserver: can only promote a learner member" => {
                Ok(())
            }
            Err(status) => Err(status.message().to_string()),
        }
    })
    .await
}
