//! The gRPC health checking service (`grpc.health.v1.Health`), registered on the client
//! listener as etcd registers it: the server as a whole (service name "") is SERVING while
//! the member serves clients — etcd sets it once its gRPC server starts and keeps it, its
//! HTTP `/health` being the check that looks at leader and quorum — and NOT_SERVING once the
//! member stops. Any other service name is unknown (NOT_FOUND; SERVICE_UNKNOWN in a watch),
//! as in grpc-go's health server.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::proto::healthpb::health_check_response::ServingStatus;
use crate::proto::healthpb::health_server::Health;
use crate::proto::healthpb::{HealthCheckRequest, HealthCheckResponse};
use crate::server::state::server::Server;
use crate::server::types::stream::ChannelStream;

/// The name under which the server as a whole reports its health.
const ALL_SERVICES: &str = "";

pub(crate) struct HealthService {
    pub(crate) server: Arc<Server>,
}

impl HealthService {
    fn status(&self, service: &str) -> Option<ServingStatus> {
        if service != ALL_SERVICES {
            return None;
        }
        Some(if self.server.lifecycle.is_stopping() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        })
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match self.status(&request.get_ref().service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found("unknown service")),
        }
    }

    type WatchStream = ChannelStream<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let status = self
            .status(&request.get_ref().service)
            .unwrap_or(ServingStatus::ServiceUnknown);
        // Room for the two answers a watch can get: the status now and NOT_SERVING at stop.
        let (answers, stream) = mpsc::channel(2);
        let _ = answers.try_send(Ok(response(status)));
        if status == ServingStatus::Serving {
            let server = self.server.clone();
            tokio::spawn(async move {
                // Why `select!`: the watch ends when the client leaves or the member stops,
                // whichever comes first.
                tokio::select! {
                    _ = answers.closed() => {}
                    _ = server.lifecycle.stopped() => {
                        let _ = answers.send(Ok(response(ServingStatus::NotServing))).await;
                    }
                }
            });
        } else {
            // Nothing will change for an unknown service: the stream stays open until the
            // client ends the call, as grpc-go's does.
            tokio::spawn(async move { answers.closed().await });
        }
        Ok(Response::new(ChannelStream(stream)))
    }
}
