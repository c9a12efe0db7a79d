//! Serving the etcd v3 services on a client listener.
//!
//! The generated server types differ between the production build and the simulator build
//! (madsim's carry an extra type parameter and ignore message-size limits), so the router is
//! built in one small function per build and nothing else names those types.

use std::future::Future;
use std::sync::Arc;

use super::cluster::ClusterService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::maintenance::MaintenanceService;
use super::member::Member;
use super::watch::WatchService;
use crate::proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};

/// Serves every client service on `listener` until `shutdown` completes.
#[cfg(not(madsim))]
pub async fn serve(
    member: Arc<Member>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    // A message over the limit is refused at the transport, in grpc-go's words; one under
    // it but over `--max-request-bytes` is refused when proposed (see `limits`).
    let limit = super::limits::grpc_message_bytes_max(member.config.max_request_bytes);
    tonic::transport::Server::builder()
        .layer(super::limits::GrpcMessageLimitLayer)
        .add_service(
            KvServer::new(KvService {
                member: member.clone(),
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            WatchServer::new(WatchService {
                member: member.clone(),
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            LeaseServer::new(LeaseService {
                member: member.clone(),
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            ClusterServer::new(ClusterService {
                member: member.clone(),
            })
            .max_decoding_message_size(limit),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService { member })
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        // Not the plain TcpIncoming: etcdctl's `--cluster` commands send a URL as the
        // `:authority`, which h2 refuses unless it is mended first (see `authority`).
        .serve_with_incoming_shutdown(super::authority::Incoming::new(listener), shutdown)
        .await
}

/// Serves every client service on `address` until `shutdown` completes (simulator build:
/// madsim's transport passes messages as values, so there are no size limits to set).
#[cfg(madsim)]
pub async fn serve(
    member: Arc<Member>,
    address: std::net::SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(KvServer::new(KvService {
            member: member.clone(),
        }))
        .add_service(WatchServer::new(WatchService {
            member: member.clone(),
        }))
        .add_service(LeaseServer::new(LeaseService {
            member: member.clone(),
        }))
        .add_service(ClusterServer::new(ClusterService {
            member: member.clone(),
        }))
        .add_service(MaintenanceServer::new(MaintenanceService { member }))
        .serve_with_shutdown(address, shutdown)
        .await
}

/// Serves the Raft transport on a peer listener until `shutdown` completes.
#[cfg(not(madsim))]
pub async fn serve_peers(
    member: Arc<Member>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use crate::proto::oxcdpb::raft_transport_server::RaftTransportServer;
    tonic::transport::Server::builder()
        .add_service(
            RaftTransportServer::new(super::peer::RaftTransportService::new(member))
                .max_decoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Serves the Raft transport on `address` until `shutdown` completes (simulator build).
#[cfg(madsim)]
pub async fn serve_peers(
    member: Arc<Member>,
    address: std::net::SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use crate::proto::oxcdpb::raft_transport_server::RaftTransportServer;
    tonic::transport::Server::builder()
        .add_service(RaftTransportServer::new(
            super::peer::RaftTransportService::new(member),
        ))
        .serve_with_shutdown(address, shutdown)
        .await
}
