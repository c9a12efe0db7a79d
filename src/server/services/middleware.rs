//! Request middleware: what runs before every client request of every service, in one
//! place (etcd's gRPC interceptors). `wiring::listen` puts [`RequestGate`] in front of each
//! client service, in production and simulation builds alike.
//!
//! Today the gate answers etcd's leader requirement: a client that sends the `hasleader`
//! metadata (`clientv3.WithRequireLeader`, which Kubernetes uses for its watches) is
//! refused with "etcdserver: no leader" while this member knows no leader, instead of
//! waiting for a request that cannot complete. Authentication tokens are checked here once
//! authentication exists.
//!
//! It also names the user a verified client certificate stands for: on a TLS listener with
//! client certificate authentication the certificate's Common Name is the user (etcd's
//! `--client-cert-auth`), and the gate attaches it to the request as a [`CertificateUser`]
//! extension, the same type in both builds (the simulator has no TLS, so never one there).

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
pub(crate) use crate::server::types::request::CertificateUser;

/// The metadata key etcd's clients set to require a leader (`rpctypes.MetadataRequireLeaderKey`).
const REQUIRE_LEADER_KEY: &str = "hasleader";
/// Its value when set.
const REQUIRE_LEADER_VALUE: &str = "true";

/// Admits or refuses each client request before its service sees it.
#[derive(Clone)]
pub(crate) struct RequestGate {
    server: Arc<Server>,
}

impl RequestGate {
    pub(crate) fn new(server: Arc<Server>) -> RequestGate {
        RequestGate { server }
    }
}

impl Interceptor for RequestGate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // The Raft status is read only for the requests that ask for a leader: most requests
        // pass without touching shared state.
        admit(request.metadata(), || self.server.raft_status().leader)?;
        if let Some(user) = certificate_user(request.extensions()) {
            request.extensions_mut().insert(user);
        }
        Ok(request)
    }
}

/// The certificate user of a connection, from what the TLS layer recorded of it.
#[cfg(not(madsim))]
fn certificate_user(extensions: &tonic::Extensions) -> Option<CertificateUser> {
    let connection = extensions.get::<crate::net::tls::ConnectionInfo>()?;
    connection.common_name.clone().map(CertificateUser)
}

#[cfg(madsim)]
fn certificate_user(_extensions: &tonic::Extensions) -> Option<CertificateUser> {
    None
}

/// Whether a request with `metadata` may go on; `leader` tells the known leader (0: none).
fn admit(metadata: &MetadataMap, leader: impl FnOnce() -> u64) -> Result<(), ServerError> {
    let requires_leader = metadata
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|value| value.as_bytes() == REQUIRE_LEADER_VALUE.as_bytes());
    if requires_leader && leader() == 0 {
        return Err(ServerError::NoLeader);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in pairs {
            metadata.insert(*key, value.parse().expect("ascii value"));
        }
        metadata
    }

    #[test]
    fn a_request_requiring_a_leader_is_refused_without_one() {
        let required = metadata(&[(REQUIRE_LEADER_KEY, "true")]);
        assert_eq!(admit(&required, || 0), Err(ServerError::NoLeader));
        assert_eq!(admit(&required, || 7), Ok(()));
        let status = Status::from(ServerError::NoLeader);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "etcdserver: no leader");
    }

    #[cfg(not(madsim))]
    #[test]
    fn a_verified_certificate_names_the_user_and_a_plain_connection_none() {
        use crate::net::tls::ConnectionInfo;
        let mut extensions = tonic::Extensions::new();
        assert_eq!(certificate_user(&extensions), None);
        extensions.insert(ConnectionInfo { common_name: None });
        assert_eq!(certificate_user(&extensions), None);
        extensions.insert(ConnectionInfo {
            common_name: Some(Arc::from("alice")),
        });
        assert_eq!(
            certificate_user(&extensions),
            Some(CertificateUser(Arc::from("alice")))
        );
    }

    #[test]
    fn other_requests_pass_without_a_leader() {
        let unasked = || -> u64 { panic!("the leader is looked up only when required") };
        assert_eq!(admit(&metadata(&[]), unasked), Ok(()));
        let not_required = metadata(&[(REQUIRE_LEADER_KEY, "false")]);
        assert_eq!(admit(&not_required, unasked), Ok(()));
        assert_eq!(admit(&metadata(&[("token", "abc")]), unasked), Ok(()));
    }
}
