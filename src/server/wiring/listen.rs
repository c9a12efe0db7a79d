//! Serving the etcd v3 services on a client listener (with the gRPC health service, and
//! the HTTP endpoints for the HTTP/1.1 connections the listener's sniffer finds), and the
//! HTTP endpoints alone on a metrics listener.
//!
//! The generated server types differ between the production build and the simulator build
//! (madsim's carry an extra type parameter and ignore message-size limits), so the router is
//! built in one small function per build and nothing else names those types. Both put the
//! request middleware (`services::middleware`) in front of every client service.

use std::future::Future;
use std::sync::Arc;

use crate::proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::proto::healthpb::health_server::HealthServer;
use crate::server::services::auth::AuthService;
use crate::server::services::cluster::ClusterService;
#[cfg(not(madsim))]
use crate::server::services::grpc_metrics::GrpcMetricsLayer;
use crate::server::services::health::HealthService;
#[cfg(not(madsim))]
use crate::server::services::http_endpoints;
use crate::server::services::kv::KvService;
use crate::server::services::lease::LeaseService;
#[cfg(not(madsim))]
use crate::server::services::limits;
use crate::server::services::maintenance::MaintenanceService;
use crate::server::services::middleware::RequestGate;
use crate::server::services::peer::RaftTransportService;
use crate::server::services::watch::WatchService;
use crate::server::state::server::Server;
use crate::server::types::config::Config;
#[cfg(not(madsim))]
use crate::server::types::config::TlsSide;
use crate::server::wiring::bootstrap::StartError;

/// The TLS set-up of the listeners, prepared once at start: the self-signed certificates
/// of auto-TLS generated, and every certificate file loaded, so that a bad file fails the
/// start rather than every handshake. The configurations reload themselves when the files
/// change (`net::tls`).
#[cfg(not(madsim))]
pub(crate) struct ListenerTls {
    /// For the `https://` client listeners.
    clients: Option<Arc<crate::net::tls::ServerTls>>,
    /// For the `https://` peer listeners.
    peers: Option<Arc<crate::net::tls::ServerTls>>,
}

/// The simulator's listeners have no TLS.
#[cfg(madsim)]
pub(crate) struct ListenerTls;

impl ListenerTls {
    #[cfg(madsim)]
    pub(crate) fn prepare(_config: &Config) -> Result<Self, StartError> {
        Ok(ListenerTls)
    }

    #[cfg(not(madsim))]
    pub(crate) fn prepare(config: &Config) -> Result<Self, StartError> {
        use crate::net::tls::{self, ClientTls, ServerTls};
        let failed = |error: tls::TlsError| StartError::Tls(error.to_string());
        for side in [TlsSide::Client, TlsSide::Peer] {
            if config.tls_files(side).is_some_and(|files| files.generated) {
                tls::self_signed(
                    &config.fixtures_dir(side),
                    &config.tls_hosts(side),
                    config.self_signed_cert_validity,
                )
                .map_err(failed)?;
            }
        }
        let clients = match config.client_listeners()?.iter().any(|(_, https)| *https) {
            true => config
                .tls_options(TlsSide::Client)
                .map_err(failed)?
                .map(ServerTls::new)
                .transpose()
                .map_err(failed)?,
            false => None,
        };
        let peer_options = config.tls_options(TlsSide::Peer).map_err(failed)?;
        let peers = match config.peer_listeners()?.iter().any(|(_, https)| *https) {
            true => peer_options
                .clone()
                .map(ServerTls::new)
                .transpose()
                .map_err(failed)?,
            false => None,
        };
        // The same files make the client side of peer connections: check them now too.
        if let Some(options) = peer_options {
            ClientTls::new(options).map_err(failed)?;
        }
        Ok(ListenerTls { clients, peers })
    }

    /// What a client listener with an `https://` URL (when `https`) terminates TLS with.
    #[cfg(not(madsim))]
    fn for_clients(&self, https: bool) -> Option<Arc<crate::net::tls::ServerTls>> {
        self.clients.clone().filter(|_| https)
    }

    #[cfg(not(madsim))]
    fn for_peers(&self, https: bool) -> Option<Arc<crate::net::tls::ServerTls>> {
        self.peers.clone().filter(|_| https)
    }
}

/// Serves every client service on `listener` until `shutdown` completes, over TLS when
/// `https` (its URL's scheme).
#[cfg(not(madsim))]
pub(crate) async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: &ListenerTls,
    https: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use tonic::service::interceptor::InterceptedService;
    // A message over the limit is refused at the transport, in grpc-go's words; one under
    // it but over `--max-request-bytes` is refused when proposed (see `limits`).
    let limit = limits::grpc_message_bytes_max(server.config.max_request_bytes);
    let gate = RequestGate::new(server.clone());
    let server_metrics = server.metrics.clone();
    let over_http2 = http_endpoints::OverHttp2Layer::new(server.clone());
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
    let auth = AuthServer::new(AuthService {
        server: server.clone(),
    })
    .max_decoding_message_size(limit);
    let health = HealthServer::new(HealthService {
        server: server.clone(),
    });
    let http1 = client_http_handler(server.clone());
    let maintenance = MaintenanceServer::new(MaintenanceService { server })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        // Outermost, so that it counts the status the client receives.
        .layer(GrpcMetricsLayer::new(server_metrics))
        .layer(limits::GrpcMessageLimitLayer)
        // Innermost: what it answers itself (the HTTP endpoints over HTTP/2) is no gRPC.
        .layer(over_http2)
        .add_service(InterceptedService::new(kv, gate.clone()))
        .add_service(InterceptedService::new(watch, gate.clone()))
        .add_service(InterceptedService::new(lease, gate.clone()))
        .add_service(InterceptedService::new(cluster, gate.clone()))
        .add_service(InterceptedService::new(auth, gate.clone()))
        .add_service(InterceptedService::new(maintenance, gate))
        .add_service(health)
        // The client connection stack (`net::client_listener`), not the plain TcpIncoming:
        // TLS when the URL is https (`net::tls`); connections that are not HTTP/2 are
        // HTTP/1.1 requests for the HTTP endpoints (`net::sniff`); and etcdctl's `--cluster`
        // commands send a URL as the `:authority`, which h2 refuses unless it is mended first
        // (`net::authority`).
        .serve_with_incoming_shutdown(
            crate::net::client_listener::Incoming::new(listener, tls.for_clients(https), http1),
            shutdown,
        )
        .await
}

/// The HTTP endpoints (`services::http_endpoints`) as the HTTP/1.1 server calls them.
#[cfg(not(madsim))]
fn http_handler(server: Arc<Server>) -> crate::net::http1::Handler {
    Arc::new(move |request| {
        let server = server.clone();
        Box::pin(
            async move { crate::net::http1::whole(http_endpoints::respond(server, request).await) },
        )
    })
}

/// The HTTP/1.1 requests of a client listener: the HTTP endpoints and the JSON gateway.
#[cfg(not(madsim))]
fn client_http_handler(server: Arc<Server>) -> crate::net::http1::Handler {
    Arc::new(move |request| Box::pin(http_endpoints::respond_client(server.clone(), request)))
}

/// Serves the HTTP endpoints on a `--listen-metrics-urls` listener until `shutdown`
/// completes.
#[cfg(not(madsim))]
pub(crate) async fn serve_metrics(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    crate::net::http1::serve(listener, http_handler(server), shutdown).await
}

/// Serves every client service on `address` until `shutdown` completes (simulator build:
/// madsim's transport passes messages as values, so there are no size limits to set).
#[cfg(madsim)]
pub(crate) async fn serve(
    server: Arc<Server>,
    address: std::net::SocketAddr,
    _tls: &ListenerTls,
    _https: bool,
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
    let auth = AuthService {
        server: server.clone(),
    };
    let health = HealthServer::new(HealthService {
        server: server.clone(),
    });
    let maintenance = MaintenanceService { server };
    tonic::transport::Server::builder()
        .add_service(KvServer::with_interceptor(kv, gate.clone()))
        .add_service(WatchServer::with_interceptor(watch, gate.clone()))
        .add_service(LeaseServer::with_interceptor(lease, gate.clone()))
        .add_service(ClusterServer::with_interceptor(cluster, gate.clone()))
        .add_service(AuthServer::with_interceptor(auth, gate.clone()))
        .add_service(MaintenanceServer::with_interceptor(maintenance, gate))
        .add_service(health)
        .serve_with_shutdown(address, shutdown)
        .await
}

/// Serves the Raft transport on a peer listener until `shutdown` completes, over TLS when
/// `https`.
#[cfg(not(madsim))]
pub(crate) async fn serve_peers(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    tls: &ListenerTls,
    https: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use crate::proto::oxcdpb::raft_transport_server::RaftTransportServer;
    tonic::transport::Server::builder()
        .add_service(
            RaftTransportServer::new(RaftTransportService::new(server))
                .max_decoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(
            crate::net::tls::Incoming::new(listener, tls.for_peers(https)),
            shutdown,
        )
        .await
}

/// Serves the Raft transport on `address` until `shutdown` completes (simulator build).
#[cfg(madsim)]
pub(crate) async fn serve_peers(
    server: Arc<Server>,
    address: std::net::SocketAddr,
    _tls: &ListenerTls,
    _https: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use crate::proto::oxcdpb::raft_transport_server::RaftTransportServer;
    tonic::transport::Server::builder()
        .add_service(RaftTransportServer::new(RaftTransportService::new(server)))
        .serve_with_shutdown(address, shutdown)
        .await
}
