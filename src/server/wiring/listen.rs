//! Serving the etcd v3 services on a client listener.
//!
//! The generated server types differ between the production build and the simulator build
//! (madsim's carry an extra type parameter and ignore message-size limits), so the router is
//! built in one small function per build and nothing else names those types. Both put the
//! request middleware (`services::middleware`) in front of every client service.

use std::future::Future;
use std::sync::Arc;

use crate::proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::server::services::cluster::ClusterService;
use crate::server::services::kv::KvService;
use crate::server::services::lease::LeaseService;
#[cfg(not(madsim))]
use crate::server::services::limits;
use crate::server::services::maintenance::MaintenanceService;
use crate::server::services::middleware::RequestGate;
use crate::server::services::peer::RaftTransportService;
use crate::server::services::watch::WatchService;
use crate::server::state::server::Server;

/// Serves every client service on `listener` until `shutdown` completes.
#[cfg(not(madsim))]
pub(crate) async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use tonic::service::interceptor::InterceptedService;
    // A message over the limit is refused at the transport, in grpc-go's words; one under
    // it but over `--max-request-bytes` is refused when proposed (see `limits`).
    let limit = limits::grpc_message_bytes_max(server.config.max_request_bytes);
    let gate = RequestGate::new(server.clone());
    let kv = KvServer::new(KvService {
        server: server.clone(),
    })
    .max_decoding_message_size(limit);
    let watch = WatchServer::new(WatchService {
        server: server.clone(),
    })
    .max_decoding_message_size(limit);
    let lease = LeaseServer::new(LeaseService {
        server: server.clone(),
    })
    .max_decoding_message_size(limit);
    let cluster = ClusterServer::new(ClusterService {
        server: server.clone(),
    })
    .max_decoding_message_size(limit);
    let maintenance = MaintenanceServer::new(MaintenanceService { server })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .layer(limits::GrpcMessageLimitLayer)
        .add_service(InterceptedService::new(kv, gate.clone()))
        .add_service(InterceptedService::new(watch, gate.clone()))
        .add_service(InterceptedService::new(lease, gate.clone()))
        .add_service(InterceptedService::new(cluster, gate.clone()))
        .add_service(InterceptedService::new(maintenance, gate))
        // The client connection stack (`net::client_listener`), not the plain TcpIncoming:
        // etcdctl's `--cluster` commands send a URL as the `:authority`, which h2 refuses
        // unless it is mended first (`net::authority`); TLS will join the stack there.
        .serve_with_incoming_shutdown(
            crate::net::client_listener::Incoming::new(listener),
            shutdown,
        )
        .await
}

/// Serves every client service on `address` until `shutdown` completes (simulator build:
/// madsim's transport passes messages as values, so there are no size limits to set).
#[cfg(madsim)]
pub(crate) async fn serve(
    server: Arc<Server>,
    address: std::net::SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let gate = RequestGate::new(server.clone());
    let kv = KvService {
        server: server.clone(),
    };
    let watch = WatchService {
        server: server.clone(),
    };
    let lease = LeaseService {
        server: server.clone(),
    };
    let cluster = ClusterService {
        server: server.clone(),
    };
    let maintenance = MaintenanceService { server };
    tonic::transport::Server::builder()
        .add_service(KvServer::with_interceptor(kv, gate.clone()))
        .add_service(WatchServer::with_interceptor(watch, gate.clone()))
        .add_service(LeaseServer::with_interceptor(lease, gate.clone()))
        .add_service(ClusterServer::with_interceptor(cluster, gate.clone()))
        .add_service(MaintenanceServer::with_interceptor(maintenance, gate))
        .serve_with_shutdown(address, shutdown)
        .await
}

/// Serves the Raft transport on a peer listener until `shutdown` completes.
#[cfg(not(madsim))]
pub(crate) async fn serve_peers(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use crate::proto::oxcdpb::raft_transport_server::RaftTransportServer;
    tonic::transport::Server::builder()
        .add_service(
            RaftTransportServer::new(RaftTransportService::new(server))
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
pub(crate) async fn serve_peers(
    server: Arc<Server>,
    address: std::net::SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use crate::proto::oxcdpb::raft_transport_server::RaftTransportServer;
    tonic::transport::Server::builder()
        .add_service(RaftTransportServer::new(RaftTransportService::new(server)))
        .serve_with_shutdown(address, shutdown)
        .await
}
