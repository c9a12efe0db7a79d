//! The HTTP face of a member, as etcd 3.5 serves it on the client URLs and on
//! `--listen-metrics-urls`: `/metrics` (Prometheus), `/health`, `/livez` and `/readyz`
//! (probes), and `/version`.
//!
//! `net::http1` carries the requests (HTTP/1.1 connections the client listener's sniffer
//! finds, and every connection of a metrics listener); [`respond`] answers them. Answers
//! follow etcd's handlers byte for byte where clients parse them:
//!
//! - `/health`: `{"health":"true","reason":""}` with 200, or `"false"` and a reason with 503:
//!   an active alarm (`ALARM NOSPACE`, `ALARM CORRUPT`; `?exclude=NOSPACE` ignores one), no
//!   leader (`RAFT NO LEADER`), or a failed read (`RANGE ERROR:…`). The read is
//!   linearizable, so a member cut off from its quorum is unhealthy even while it still
//!   believes in a leader; `?serializable=true` checks the local member only and skips the
//!   leader check.
//! - `/livez` (a serializable read) and `/readyz` (no CORRUPT alarm, a serializable and a
//!   linearizable read, not a learner): `ok` with 200 or the failed checks with 503;
//!   `?verbose` lists every check, `?exclude=<check>` skips one, `/readyz/<check>` runs one.
//! - `/version`: `{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`.
//!
//! Every endpoint answers GET only (405 otherwise, with `Allow: GET`); any other path is a
//! 404.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;

use crate::net::http1::{whole, ReplyBody};
use crate::proto::etcdserverpb::{AlarmType, RangeRequest};
use crate::server::services::grpc_metrics::is_grpc;
use crate::server::state::server::Server;
use crate::server::types::config::{ETCD_API_VERSION, ETCD_CLUSTER_VERSION};
use crate::server::types::error::ServerError;
use crate::server::types::json::go_string;
use crate::server::types::metrics::{Scrape, CONTENT_TYPE};
use crate::server::types::process::ProcessStats;

const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to `request` on a client URL: the JSON gateway's `/v3/...` requests, and
/// the endpoints below.
pub(crate) async fn respond_client(
    server: Arc<Server>,
    request: http::Request<Bytes>,
) -> Response<ReplyBody> {
    if super::gateway::is_gateway_path(request.uri().path()) {
        return super::gateway::respond(server, request).await;
    }
    if super::v2http::is_v2_path(request.uri().path()) {
        return super::v2http::respond(server, request).await;
    }
    whole(respond(server, request).await)
}

/// The answer to `request` for the endpoints of this module (no endpoint reads a body).
pub(crate) async fn respond<B>(
    server: Arc<Server>,
    request: http::Request<B>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let query = Query::parse(request.uri().query().unwrap_or(""));
    let known = matches!(
        path,
        "/metrics" | "/health" | "/version" | "/livez" | "/readyz"
    ) || Probe::of(path).is_some();
    if !known {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return response;
    }
    match path {
        "/metrics" => {
            let page = server.metrics.render(&scrape(&server));
            reply(StatusCode::OK, CONTENT_TYPE, page)
        }
        "/health" => health(&server, &query).await,
        "/version" => {
            let body = format!(
                "{{\"etcdserver\":\"{ETCD_API_VERSION}\",\"etcdcluster\":\"{ETCD_CLUSTER_VERSION}\"}}"
            );
            reply(StatusCode::OK, "application/json", body)
        }
        "/livez" => probe(&server, LIVEZ, &query).await,
        "/readyz" => probe(&server, READYZ, &query).await,
        _ => match Probe::of(path) {
            Some((checks, check)) => {
                probe(&server, &checks[check..=check], &Query::default()).await
            }
            None => text(StatusCode::NOT_FOUND, "404 page not found\n"),
        },
    }
}

/// Answers the requests for the HTTP endpoints that arrive over HTTP/2 on the gRPC server:
/// h2c with prior knowledge, and HTTPS clients whose TLS handshake chose `h2` (Go's HTTP
/// client, and with it Prometheus, does whenever the server offers it). A request that is
/// not gRPC (by its content type) is answered by [`respond`]; gRPC calls go on to `inner`.
#[derive(Clone)]
pub(crate) struct OverHttp2Layer {
    server: Arc<Server>,
}

impl OverHttp2Layer {
    pub(crate) fn new(server: Arc<Server>) -> Self {
        OverHttp2Layer { server }
    }
}

impl<S> tower_layer::Layer<S> for OverHttp2Layer {
    type Service = OverHttp2<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverHttp2 {
            inner,
            server: self.server.clone(),
        }
    }
}

/// See [`OverHttp2Layer`].
#[derive(Clone)]
pub(crate) struct OverHttp2<S> {
    inner: S,
    server: Arc<Server>,
}

impl<S> tonic::codegen::Service<http::Request<tonic::body::Body>> for OverHttp2<S>
where
    S: tonic::codegen::Service<
        http::Request<tonic::body::Body>,
        Response = Response<tonic::body::Body>,
    >,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if is_grpc(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let server = self.server.clone();
        let (head, body) = request.into_parts();
        Box::pin(async move {
            let response = match crate::net::http1::read_body(body).await {
                Ok(body) => respond_client(server, http::Request::from_parts(head, body)).await,
                Err(status) => whole(crate::net::http1::status_only(status)),
            };
            Ok(response.map(tonic::body::Body::new))
        })
    }
}

/// What a metrics page shows besides the counters.
fn scrape(server: &Server) -> Scrape {
    let status = server.raft_status();
    let (keys, watch) = server.store.key_and_watch_counts();
    Scrape {
        member_id: server.id,
        leader: status.leader,
        is_leader: status.is_leader,
        is_learner: is_learner(server),
        committed_index: status.commit,
        applied_index: server.applied_index(),
        proposals_pending: server.proposer.waiters.len() as u64,
        quota_backend_bytes: server.config.quota_bytes(),
        server_version: ETCD_API_VERSION,
        cluster_version: cluster_major_minor(),
        db_size_bytes: server.store.db_size_bytes(),
        db_size_in_use_bytes: server.store.db_size_in_use_bytes(),
        keys: keys as u64,
        watch_streams: watch.streams as u64,
        watchers: watch.watchers as u64,
        slow_watchers: watch.slow as u64,
        auth_revision: server.auth.revision(),
        process: ProcessStats::read(),
    }
}

/// The cluster version as etcd labels its metric: major.minor.
fn cluster_major_minor() -> &'static str {
    let mut dots = ETCD_CLUSTER_VERSION.match_indices('.');
    match dots.nth(1) {
        Some((at, _)) => &ETCD_CLUSTER_VERSION[..at],
        None => ETCD_CLUSTER_VERSION,
    }
}

fn is_learner(server: &Server) -> bool {
    server
        .membership
        .member(server.id)
        .is_some_and(|member| member.is_learner)
}

/// The parameters of a query string that the endpoints read.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    /// Every `exclude=` value (alarm names for `/health`, check names for the probes).
    exclude: Vec<String>,
    serializable: bool,
    verbose: bool,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "exclude" if !value.is_empty() => parsed.exclude.push(value.to_string()),
                "serializable" => parsed.serializable = value == "true",
                // Present at all, as etcd tests it.
                "verbose" => parsed.verbose = true,
                _ => {}
            }
        }
        parsed
    }
}

/// etcd's `/health`.
async fn health(server: &Server, query: &Query) -> Response<Full<Bytes>> {
    let reason = match unhealthy(server, query).await {
        None => {
            server.metrics.health_success.inc();
            return reply(
                StatusCode::OK,
                TEXT,
                "{\"health\":\"true\",\"reason\":\"\"}".into(),
            );
        }
        Some(reason) => reason,
    };
    server.metrics.health_failures.inc();
    tracing::warn!(%reason, "serving /health false");
    let body = format!(
        "{{\"health\":\"false\",\"reason\":{}}}\n",
        go_string(&reason)
    );
    reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, body)
}

/// Why the member is unhealthy, if it is: alarms, then the leader, then a read.
async fn unhealthy(server: &Server, query: &Query) -> Option<String> {
    for alarm in server.alarms.list() {
        let kind = AlarmType::try_from(alarm.alarm).unwrap_or(AlarmType::None);
        if query.exclude.iter().any(|name| name == kind.as_str_name()) {
            continue;
        }
        return Some(
            match kind {
                AlarmType::Nospace => "ALARM NOSPACE",
                AlarmType::Corrupt => "ALARM CORRUPT",
                AlarmType::None => "ALARM UNKNOWN",
            }
            .to_string(),
        );
    }
    if !query.serializable && server.raft_status().leader == 0 {
        return Some("RAFT NO LEADER".to_string());
    }
    read(server, query.serializable)
        .await
        .err()
        .map(|error| format!("RANGE ERROR:{error}"))
}

/// A one-key read, linearizable unless `serializable`, bounded by the request timeout.
async fn read(server: &Server, serializable: bool) -> Result<(), ServerError> {
    if !serializable {
        tokio::time::timeout(server.request_timeout(), server.read_barrier())
            .await
            .map_err(|_| ServerError::Timeout)??;
    }
    let request = RangeRequest {
        key: Bytes::from_static(b"health"),
        keys_only: true,
        limit: 1,
        serializable,
        ..RangeRequest::default()
    };
    server.store.range(&request).map(|_| ())
}

/// The checks of a probe endpoint, by name, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }

    async fn run(self, server: &Server) -> Result<(), String> {
        match self {
            Check::DataCorruption if server.alarms.is_active(AlarmType::Corrupt) => {
                Err("alarm activated: CORRUPT".to_string())
            }
            Check::DataCorruption => Ok(()),
            Check::SerializableRead => read(server, true).await.map_err(|e| e.to_string()),
            Check::LinearizableRead => read(server, false).await.map_err(|e| e.to_string()),
            Check::NonLearner if is_learner(server) => Err("not supported for learner".to_string()),
            Check::NonLearner => Ok(()),
        }
    }
}

/// `/livez`: the process can serve a local read.
const LIVEZ: &[Check] = &[Check::SerializableRead];
/// `/readyz`: the member can serve the cluster's clients.
const READYZ: &[Check] = &[
    Check::DataCorruption,
    Check::SerializableRead,
    Check::LinearizableRead,
    Check::NonLearner,
];

struct Probe;

impl Probe {
    /// For `/livez/<check>` and `/readyz/<check>`: the probe's checks and where the named
    /// one is among them.
    fn of(path: &str) -> Option<(&'static [Check], usize)> {
        let (checks, name) = if let Some(name) = path.strip_prefix("/livez/") {
            (LIVEZ, name)
        } else {
            (READYZ, path.strip_prefix("/readyz/")?)
        };
        let at = checks.iter().position(|check| check.name() == name)?;
        Some((checks, at))
    }
}

/// Runs `checks` but those the query excludes; 200 `ok` when all pass, else 503 listing them.
async fn probe(server: &Server, checks: &[Check], query: &Query) -> Response<Full<Bytes>> {
    let mut report = String::new();
    let mut failed = false;
    for check in checks {
        if query.exclude.iter().any(|name| name == check.name()) {
            continue;
        }
        match check.run(server).await {
            Ok(()) => {
                let _ = writeln!(report, "[+]{} ok", check.name());
            }
            Err(error) => {
                failed = true;
                let _ = writeln!(report, "[-]{} failed: {error}", check.name());
            }
        }
    }
    if failed {
        // As etcd: the failed checks always, and the line break its error writer adds.
        tracing::warn!(%report, "health check failed");
        return reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{report}\n"));
    }
    let body = if query.verbose {
        format!("{report}ok\n")
    } else {
        "ok\n".to_string()
    };
    let mut response = reply(StatusCode::OK, TEXT, body);
    response.headers_mut().insert(
        header::HeaderName::from_static("x-content-type-options"),
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(status, TEXT, body.to_string())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_as_etcd_reads_them() {
        assert_eq!(Query::parse(""), Query::default());
        let query = Query::parse("exclude=NOSPACE&serializable=true&verbose&exclude=&x=1");
        assert_eq!(
            query,
            Query {
                exclude: vec!["NOSPACE".to_string()],
                serializable: true,
                verbose: true,
            }
        );
        assert!(!Query::parse("serializable=1").serializable);
    }

    #[test]
    fn probe_sub_paths_name_one_check() {
        assert_eq!(Probe::of("/livez/serializable_read"), Some((LIVEZ, 0)));
        assert_eq!(Probe::of("/readyz/linearizable_read"), Some((READYZ, 2)));
        assert_eq!(Probe::of("/readyz/non_learner"), Some((READYZ, 3)));
        assert_eq!(Probe::of("/livez/linearizable_read"), None);
        assert_eq!(Probe::of("/readyz/"), None);
        assert_eq!(Probe::of("/readyz"), None);
    }

    #[test]
    fn reasons_are_json_strings() {
        assert_eq!(go_string("RAFT NO LEADER"), "\"RAFT NO LEADER\"");
        assert_eq!(go_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn the_cluster_version_label_is_major_minor() {
        assert_eq!(cluster_major_minor(), "3.4");
    }
}
