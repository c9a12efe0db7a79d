//! etcd 3.4's v2 API on the client URLs, served with `--enable-v2` (404 otherwise, as
//! etcd answers): what `ETCDCTL_API=2 etcdctl` and v2 client libraries speak.
//!
//! - `/v2/keys/…`: GET and HEAD (`recursive`, `sorted`, `quorum`, `wait`, `waitIndex`,
//!   `stream`), PUT (`value`, `ttl`, `dir`, `prevExist`, `prevValue`, `prevIndex`,
//!   `refresh`), POST (in-order keys), DELETE (`dir`, `recursive`, `prevValue`,
//!   `prevIndex`), with etcd's parameter checks, headers (`X-Etcd-Index`, `X-Raft-Index`,
//!   `X-Raft-Term`, `X-Etcd-Cluster-Id`), JSON and errors. Writes and quorum reads go
//!   through the log; plain reads answer from the local store; a wait is answered from
//!   the store's event history or by the next event that concerns the key.
//! - `/v2/members` (list, add, remove, update, `leader`), `/v2/machines`,
//!   `/v2/stats/self`, `/v2/stats/leader` and `/v2/stats/store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use tokio::sync::{broadcast, mpsc};

use crate::net::http1::{whole, ReplyBody};
use crate::proto::etcdserverpb::cluster_server::Cluster as _;
use crate::proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberRemoveRequest, MemberUpdateRequest,
};
use crate::proto::oxcdpb::internal_request::Request as Internal;
use crate::proto::oxcdpb::{v2_request::Method as V2Method, V2Request};
use crate::server::services::cluster::ClusterService;
use crate::server::services::gateway::text;
use crate::server::state::server::Server;
use crate::server::types::json::{go_string, go_strings};
use crate::server::types::request::V2Outcome;
use crate::v2::error::{self as code, V2Error};
use crate::v2::{self, Event, NodeView, Op};

const KEYS_PREFIX: &str = "/v2/keys";
const MEMBERS_PREFIX: &str = "/v2/members";

/// v2 watches waiting now (the store statistics' `watchers`).
static WATCHERS: AtomicU64 = AtomicU64::new(0);

/// Whether `path` belongs to the v2 API.
pub(crate) fn is_v2_path(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// The answer to a request for a `/v2/…` path.
pub(crate) async fn respond(
    server: Arc<Server>,
    request: http::Request<Bytes>,
) -> Response<ReplyBody> {
    let path = request.uri().path().to_owned();
    let enabled = server.config.enable_v2;
    let mut response = if !enabled {
        whole(text(StatusCode::NOT_FOUND, "404 page not found\n"))
    } else if path == KEYS_PREFIX || path.starts_with("/v2/keys/") {
        keys(server.clone(), request).await
    } else if path == MEMBERS_PREFIX || path.starts_with("/v2/members/") {
        whole(members(&server, request).await)
    } else {
        whole(match path.as_str() {
            "/v2/machines" => machines(&server, &request).await,
            "/v2/stats/self" => self_stats(&server, &request),
            "/v2/stats/store" => store_stats(&server, &request),
            "/v2/stats/leader" => leader_stats(&server, &request),
            _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
        })
    };
    if enabled {
        let headers = response.headers_mut();
        headers.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("accept, content-type, authorization"),
        );
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    }
    response
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// 405 with the methods allowed, as Go's handlers answer.
fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `{"message":…}` with `status` (etcd's `httptypes.HTTPError`).
fn http_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, format!("{{\"message\":{}}}\n", go_string(message)))
}

fn cluster_id_header(server: &Server, response: &mut Response<Full<Bytes>>) {
    if let Ok(value) = HeaderValue::from_str(&format!("{:x}", server.cluster_id)) {
        response.headers_mut().insert("x-etcd-cluster-id", value);
    }
}

// ---------------------------------------------------------------------------------------
// Forms

/// Percent-decodes `text` (`+` as a space in form values); `None` for a malformed escape.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = bytes.get(at + 1..at + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                at += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                at += 1;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    Some(out)
}

/// A parsed form: the body's values before the query's, as Go's `ParseForm` orders them.
#[derive(Debug, Default)]
struct Form(Vec<(String, String)>);

impl Form {
    fn parse_into(&mut self, encoded: &str) -> Result<(), String> {
        for pair in encoded.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |part: &str| {
                let bytes = percent_decode(part, true)
                    .ok_or_else(|| format!("invalid URL escape {:?}", part))?;
                String::from_utf8(bytes).map_err(|_| "invalid UTF-8 in the form".to_owned())
            };
            self.0.push((decode(name)?, decode(value)?));
        }
        Ok(())
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }

    /// The first value of `name` (Go's `FormValue`: empty when absent).
    fn value(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// Go's `strconv.ParseBool` of the first value; false when absent.
    fn bool(&self, name: &str) -> Result<bool, ()> {
        if !self.has(name) {
            return Ok(false);
        }
        match self.value(name) {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            _ => Err(()),
        }
    }

    /// Go's `strconv.ParseUint` of the first value; 0 when absent.
    fn uint(&self, name: &str) -> Result<u64, ()> {
        if !self.has(name) {
            return Ok(0);
        }
        let value = self.value(name);
        if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(());
        }
        value.parse().map_err(|_| ())
    }
}

/// A keys request as etcd's `parseKeyRequest` reads it.
#[derive(Debug)]
pub(crate) struct KeyRequest {
    pub(crate) request: V2Request,
    wait: bool,
    wait_index: u64,
    stream: bool,
    quorum: bool,
    no_value_on_success: bool,
}

fn request_error(code: u32, cause: &str) -> V2Error {
    V2Error::new(code, cause, 0)
}

pub(crate) fn parse_key_request(
    request: &http::Request<Bytes>,
    now: i64,
) -> Result<KeyRequest, V2Error> {
    let invalid_form = |cause: String| request_error(code::INVALID_FORM, &cause);
    let mut form = Form::default();
    let method = request.method().clone();
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|kind| {
            kind.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if (method == Method::PUT || method == Method::POST) && is_form {
        let body = std::str::from_utf8(request.body())
            .map_err(|_| invalid_form("invalid UTF-8 in the form".into()))?;
        form.parse_into(body).map_err(invalid_form)?;
    }
    form.parse_into(request.uri().query().unwrap_or(""))
        .map_err(invalid_form)?;
    let raw_path = &request.uri().path()[KEYS_PREFIX.len()..];
    let path = percent_decode(raw_path, false)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| invalid_form(format!("invalid URL escape in {raw_path:?}")))?;
    let path = v2::clean_path(&path);

    let uint = |name: &str| {
        form.uint(name)
            .map_err(|()| request_error(code::INDEX_NAN, &format!("invalid value for \"{name}\"")))
    };
    let prev_index = uint("prevIndex")?;
    let wait_index = uint("waitIndex")?;
    let flag = |name: &str| {
        form.bool(name).map_err(|()| {
            request_error(
                code::INVALID_FIELD,
                &format!("invalid value for \"{name}\""),
            )
        })
    };
    let recursive = flag("recursive")?;
    let sorted = flag("sorted")?;
    let wait = flag("wait")?;
    let dir = flag("dir")?;
    let quorum = flag("quorum")?;
    let stream = flag("stream")?;
    if wait && method != Method::GET {
        return Err(request_error(
            code::INVALID_FIELD,
            "\"wait\" can only be used with GET requests",
        ));
    }
    let prev_value = form.value("prevValue").to_owned();
    if form.has("prevValue") && prev_value.is_empty() {
        return Err(request_error(
            code::PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
        ));
    }
    let no_value_on_success = flag("noValueOnSuccess")?;
    let mut ttl = None;
    if !form.value("ttl").is_empty() {
        ttl = Some(
            form.uint("ttl")
                .map_err(|()| request_error(code::TTL_NAN, "invalid value for \"ttl\""))?,
        );
    }
    let mut prev_exist = None;
    if form.has("prevExist") {
        prev_exist = Some(
            form.bool("prevExist")
                .map_err(|()| request_error(code::INVALID_FIELD, "invalid value for prevExist"))?,
        );
    }
    let mut refresh = false;
    if form.has("refresh") {
        refresh = form
            .bool("refresh")
            .map_err(|()| request_error(code::INVALID_FIELD, "invalid value for refresh"))?;
        if refresh {
            if form.has("value") && !form.value("value").is_empty() {
                return Err(request_error(
                    code::REFRESH_VALUE,
                    "A value was provided on a refresh",
                ));
            }
            if ttl.is_none() {
                return Err(request_error(
                    code::REFRESH_TTL_REQUIRED,
                    "No TTL value set",
                ));
            }
        }
    }
    let expiration = match ttl {
        // A TTL too large for the clock never expires in practice.
        Some(seconds) => (seconds as i64)
            .checked_mul(1_000_000_000)
            .and_then(|nanos| now.checked_add(nanos))
            .unwrap_or(i64::MAX),
        None => 0,
    };
    let v2_method = match method {
        Method::PUT => V2Method::Put,
        Method::POST => V2Method::Post,
        Method::DELETE => V2Method::Delete,
        _ => V2Method::Qget,
    };
    Ok(KeyRequest {
        request: V2Request {
            method: v2_method as i32,
            path,
            val: form.value("value").to_owned(),
            dir,
            prev_value,
            prev_index,
            prev_exist,
            expiration,
            refresh,
            recursive,
            sorted,
            time: 0,
        },
        wait,
        wait_index,
        stream,
        quorum,
        no_value_on_success,
    })
}

// ---------------------------------------------------------------------------------------
// JSON

/// Go's RFC 3339 with nanoseconds, trailing zeros dropped, in UTC.
fn rfc3339_nanos(unix_nanos: i64) -> String {
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos as i128) else {
        return "0001-01-01T00:00:00Z".into();
    };
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let nanos = at.nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

fn rfc3339_of(time: SystemTime) -> String {
    let nanos = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos().min(i64::MAX as u128) as i64);
    rfc3339_nanos(nanos)
}

/// A node as etcd's `NodeExtern` marshals: empty fields left out.
fn node_json(out: &mut String, node: &NodeView) {
    let mut fields: Vec<String> = Vec::new();
    if !node.key.is_empty() {
        fields.push(format!("\"key\":{}", go_string(&node.key)));
    }
    if let Some(value) = &node.value {
        fields.push(format!("\"value\":{}", go_string(value)));
    }
    if node.dir {
        fields.push("\"dir\":true".into());
    }
    if let Some(expiration) = node.expiration {
        fields.push(format!("\"expiration\":\"{}\"", rfc3339_nanos(expiration)));
    }
    if node.ttl != 0 {
        fields.push(format!("\"ttl\":{}", node.ttl));
    }
    if let Some(nodes) = node.nodes.as_ref().filter(|nodes| !nodes.is_empty()) {
        let mut list = String::from("\"nodes\":[");
        for (at, child) in nodes.iter().enumerate() {
            if at > 0 {
                list.push(',');
            }
            node_json(&mut list, child);
        }
        list.push(']');
        fields.push(list);
    }
    if node.modified != 0 {
        fields.push(format!("\"modifiedIndex\":{}", node.modified));
    }
    if node.created != 0 {
        fields.push(format!("\"createdIndex\":{}", node.created));
    }
    out.push('{');
    out.push_str(&fields.join(","));
    out.push('}');
}

/// An event as etcd writes it, with the newline of Go's JSON encoder.
pub(crate) fn event_json(event: &Event, no_value: bool) -> String {
    let mut out = format!("{{\"action\":\"{}\"", event.action.as_str());
    if !no_value {
        out.push_str(",\"node\":");
        node_json(&mut out, &event.node);
        if let Some(prev) = &event.prev_node {
            out.push_str(",\"prevNode\":");
            node_json(&mut out, prev);
        }
    }
    if event.refresh {
        out.push_str(",\"refresh\":true");
    }
    out.push_str("}\n");
    out
}

pub(crate) fn error_json(error: &V2Error) -> String {
    let mut out = format!(
        "{{\"errorCode\":{},\"message\":{}",
        error.code,
        go_string(error.message())
    );
    if !error.cause.is_empty() {
        out.push_str(&format!(",\"cause\":{}", go_string(&error.cause)));
    }
    out.push_str(&format!(",\"index\":{}}}\n", error.index));
    out
}

// ---------------------------------------------------------------------------------------
// Keys

fn key_error(server: &Server, error: &V2Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json(status, error_json(error));
    if let Ok(index) = HeaderValue::from_str(&error.index.to_string()) {
        response.headers_mut().insert("x-etcd-index", index);
    }
    cluster_id_header(server, &mut response);
    response
}

fn raft_headers(server: &Server, response: &mut Response<impl http_body::Body>, etcd_index: u64) {
    let headers = response.headers_mut();
    let numbers = [
        ("x-etcd-index", etcd_index),
        ("x-raft-index", server.applied_index()),
        ("x-raft-term", server.raft_status().term),
    ];
    for (name, number) in numbers {
        if let Ok(value) = HeaderValue::from_str(&number.to_string()) {
            headers.insert(name, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{:x}", server.cluster_id)) {
        headers.insert("x-etcd-cluster-id", value);
    }
}

fn key_event(server: &Server, event: &Event, no_value_on_success: bool) -> Response<Full<Bytes>> {
    use v2::Action;
    let no_value = no_value_on_success
        && matches!(
            event.action,
            Action::Set | Action::CompareAndSwap | Action::Create | Action::Update
        );
    let status = if event.is_created() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json(status, event_json(event, no_value));
    raft_headers(server, &mut response, event.etcd_index);
    response
}

/// A failure to go through the log, as etcd answers it: a Raft internal error.
fn raft_error(
    server: &Server,
    error: &crate::server::types::error::ServerError,
) -> Response<Full<Bytes>> {
    key_error(
        server,
        &V2Error::new(code::RAFT_INTERNAL, error.to_string(), 0),
    )
}

async fn keys(server: Arc<Server>, request: http::Request<Bytes>) -> Response<ReplyBody> {
    let method = request.method().clone();
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
    ) {
        return whole(not_allowed("HEAD,GET,PUT,POST,DELETE"));
    }
    let now = v2::unix_nanos_now();
    let parsed = match parse_key_request(&request, now) {
        Ok(parsed) => parsed,
        Err(error) => return whole(key_error(&server, &error)),
    };
    let is_read = method == Method::GET || method == Method::HEAD;
    if is_read && parsed.wait {
        let Some(permit) = super::gateway::stream_permit() else {
            return whole(http_error(
                StatusCode::TOO_MANY_REQUESTS,
                super::gateway::TOO_MANY_STREAMS,
            ));
        };
        return super::gateway::with_permit(watch(server, parsed), Some(permit));
    }
    if is_read && !parsed.quorum {
        let request = &parsed.request;
        return whole(
            match server
                .store
                .v2_get(&request.path, request.recursive, request.sorted, now)
            {
                Ok(event) => key_event(&server, &event, parsed.no_value_on_success),
                Err(error) => key_error(&server, &error),
            },
        );
    }
    let proposed = server
        .proposer
        .propose_as::<V2Outcome>(Internal::V2(parsed.request))
        .await;
    whole(match proposed {
        Ok((Ok(event), _)) => key_event(&server, &event, parsed.no_value_on_success),
        Ok((Err(error), _)) => key_error(&server, &error),
        Err(error) => raft_error(&server, &error),
    })
}

/// A body fed by a task: one piece per event.
struct Chunks(mpsc::Receiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(context)
            .map(|piece| piece.map(|piece| Ok(http_body::Frame::data(piece))))
    }
}

/// A wait: the headers at once (etcd flushes them before the event), then the first event
/// at or after `waitIndex` that concerns the key, or every such event with `stream`.
fn watch(server: Arc<Server>, parsed: KeyRequest) -> Response<ReplyBody> {
    let key = parsed.request.path.clone();
    let recursive = parsed.request.recursive;
    let (found, start_index, receiver) =
        match server.store.v2_watch(&key, recursive, parsed.wait_index) {
            Ok(watch) => watch,
            Err(error) => return whole(key_error(&server, &error)),
        };
    let since = if parsed.wait_index == 0 {
        start_index + 1
    } else {
        parsed.wait_index
    };
    let (sender, pieces) = mpsc::channel(16);
    let mut response = Response::new(Chunks(pieces).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    raft_headers(&server, &mut response, start_index);
    let watched = Watched {
        server,
        key,
        recursive,
        stream: parsed.stream,
    };
    tokio::spawn(watched.run(found, since, receiver, sender));
    response
}

struct Watched {
    server: Arc<Server>,
    key: String,
    recursive: bool,
    stream: bool,
}

impl Watched {
    async fn run(
        self,
        found: Option<Arc<Event>>,
        mut since: u64,
        mut events: broadcast::Receiver<Arc<Event>>,
        sender: mpsc::Sender<Bytes>,
    ) {
        WATCHERS.fetch_add(1, Ordering::Relaxed);
        let _counted = scopeguard(|| {
            WATCHERS.fetch_sub(1, Ordering::Relaxed);
        });
        if let Some(event) = found {
            if sender
                .send(Bytes::from(event_json(&event, false)))
                .await
                .is_err()
                || !self.stream
            {
                return;
            }
            since = event.index() + 1;
        }
        loop {
            let event = tokio::select! {
                _ = sender.closed() => return,
                _ = self.server.lifecycle.stopped() => return,
                event = events.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live events: catch up from the store's history.
                    match self.server.store.v2_watch(&self.key, self.recursive, since) {
                        Ok((Some(event), _, receiver)) => {
                            events = receiver;
                            event
                        }
                        Ok((None, _, receiver)) => {
                            events = receiver;
                            continue;
                        }
                        Err(_) => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if event.index() < since || !event.concerns(&self.key, self.recursive) {
                continue;
            }
            if sender
                .send(Bytes::from(event_json(&event, false)))
                .await
                .is_err()
                || !self.stream
            {
                return;
            }
            since = event.index() + 1;
        }
    }
}

/// Runs `done` when dropped.
fn scopeguard(done: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(done) = self.0.take() {
                done();
            }
        }
    }
    Guard(Some(done))
}

// ---------------------------------------------------------------------------------------
// Members, machines, stats

fn member_json(id: u64, name: &str, peer_urls: &[String], client_urls: &[String]) -> String {
    format!(
        "{{\"id\":\"{id:x}\",\"name\":{},\"peerURLs\":{},\"clientURLs\":{}}}",
        go_string(name),
        go_strings(peer_urls),
        go_strings(client_urls)
    )
}

/// The `peerURLs` of a member add or update body.
fn peer_urls_of(request: &http::Request<Bytes>) -> Result<Vec<String>, Response<Full<Bytes>>> {
    let kind = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|kind| kind.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if kind != "application/json" {
        return Err(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Bad Content-Type {kind}, accept application/json"),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "peerURLs", default)]
        peer_urls: Vec<String>,
    }
    let body: Body = serde_json::from_slice(request.body())
        .map_err(|error| http_error(StatusCode::BAD_REQUEST, &error.to_string()))?;
    for url in &body.peer_urls {
        let valid = (url.starts_with("http://") || url.starts_with("https://"))
            && crate::server::types::config::parse_url(url).is_ok();
        if !valid {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                &format!("URL scheme must be http, https, unix, or unixs: {url}"),
            ));
        }
    }
    Ok(body.peer_urls)
}

fn member_status_error(status: &tonic::Status, id: u64) -> Response<Full<Bytes>> {
    let message = status.message();
    if message.contains("member not found") {
        http_error(StatusCode::NOT_FOUND, &format!("No such member: {id:x}"))
    } else if message.contains("Peer URLs already exists") {
        http_error(StatusCode::CONFLICT, "membership: peerURL exists")
    } else if message.contains("member ID already exist") {
        http_error(StatusCode::CONFLICT, "membership: ID exists")
    } else {
        http_error(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

async fn members(server: &Arc<Server>, request: http::Request<Bytes>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    if !matches!(
        method,
        Method::GET | Method::POST | Method::DELETE | Method::PUT
    ) {
        return not_allowed("GET,POST,DELETE,PUT");
    }
    let rest = request.uri().path()[MEMBERS_PREFIX.len()..].trim_start_matches('/');
    let rest = rest.to_owned();
    let service = ClusterService {
        server: server.clone(),
    };
    let mut response = match method {
        Method::GET => {
            let listed = service
                .member_list(tonic::Request::new(MemberListRequest {
                    linearizable: false,
                }))
                .await;
            let members = match listed {
                Ok(response) => response.into_inner().members,
                Err(status) => {
                    return http_error(StatusCode::INTERNAL_SERVER_ERROR, status.message())
                }
            };
            match rest.as_str() {
                "" => {
                    let listed: Vec<String> = members
                        .iter()
                        .map(|m| member_json(m.id, &m.name, &m.peer_ur_ls, &m.client_ur_ls))
                        .collect();
                    json(
                        StatusCode::OK,
                        format!("{{\"members\":[{}]}}\n", listed.join(",")),
                    )
                }
                "leader" => {
                    let leader = server.raft_status().leader;
                    match members.iter().find(|m| m.id == leader && leader != 0) {
                        Some(m) => json(
                            StatusCode::OK,
                            format!(
                                "{}\n",
                                member_json(m.id, &m.name, &m.peer_ur_ls, &m.client_ur_ls)
                            ),
                        ),
                        None => http_error(StatusCode::SERVICE_UNAVAILABLE, "During election"),
                    }
                }
                _ => http_error(StatusCode::NOT_FOUND, "Not found"),
            }
        }
        Method::POST => {
            let peer_urls = match peer_urls_of(&request) {
                Ok(urls) => urls,
                Err(response) => return response,
            };
            let added = service
                .member_add(tonic::Request::new(MemberAddRequest {
                    peer_ur_ls: peer_urls.clone(),
                    is_learner: false,
                }))
                .await;
            match added {
                Ok(response) => {
                    let id = response.into_inner().member.map_or(0, |m| m.id);
                    json(
                        StatusCode::CREATED,
                        format!("{}\n", member_json(id, "", &peer_urls, &[])),
                    )
                }
                Err(status) => member_status_error(&status, 0),
            }
        }
        _ => {
            if rest.is_empty() {
                return not_allowed("GET, POST");
            }
            let Ok(id) = u64::from_str_radix(&rest, 16) else {
                return http_error(StatusCode::NOT_FOUND, &format!("No such member: {rest}"));
            };
            let done = if method == Method::DELETE {
                service
                    .member_remove(tonic::Request::new(MemberRemoveRequest { id }))
                    .await
                    .map(|_| ())
            } else {
                let peer_urls = match peer_urls_of(&request) {
                    Ok(urls) => urls,
                    Err(response) => return response,
                };
                service
                    .member_update(tonic::Request::new(MemberUpdateRequest {
                        id,
                        peer_ur_ls: peer_urls,
                    }))
                    .await
                    .map(|_| ())
            };
            match done {
                Ok(()) => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    response
                }
                Err(status) => member_status_error(&status, id),
            }
        }
    };
    cluster_id_header(server, &mut response);
    response
}

/// The client URLs of every member, comma-separated (`/v2/machines`).
async fn machines(server: &Arc<Server>, request: &http::Request<Bytes>) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return not_allowed("GET,HEAD");
    }
    let service = ClusterService {
        server: server.clone(),
    };
    let members = match service
        .member_list(tonic::Request::new(MemberListRequest {
            linearizable: false,
        }))
        .await
    {
        Ok(response) => response.into_inner().members,
        Err(status) => return http_error(StatusCode::INTERNAL_SERVER_ERROR, status.message()),
    };
    let urls: Vec<String> = members
        .into_iter()
        .flat_map(|member| member.client_ur_ls)
        .collect();
    let mut response = Response::new(Full::new(Bytes::from(urls.join(", "))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Go's `Duration.String` (`6m33.651015567s`).
fn go_duration(duration: Duration) -> String {
    let total = duration.as_nanos();
    if total == 0 {
        return "0s".into();
    }
    if total < 1_000_000_000 {
        // Below a second Go picks the unit: ns, µs or ms, with the fraction's zeros dropped.
        let (unit, scale) = match total {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        let whole = total / scale;
        let fraction = total % scale;
        if fraction == 0 {
            return format!("{whole}{unit}");
        }
        let digits = scale.ilog10() as usize;
        let fraction = format!("{fraction:0digits$}");
        return format!("{whole}.{}{unit}", fraction.trim_end_matches('0'));
    }
    let seconds = duration.as_secs();
    let (hours, minutes, secs) = (seconds / 3600, (seconds / 60) % 60, seconds % 60);
    let nanos = duration.subsec_nanos();
    let mut secs_text = secs.to_string();
    if nanos != 0 {
        secs_text.push('.');
        secs_text.push_str(format!("{nanos:09}").trim_end_matches('0'));
    }
    match (hours, minutes) {
        (0, 0) => format!("{secs_text}s"),
        (0, _) => format!("{minutes}m{secs_text}s"),
        _ => format!("{hours}h{minutes}m{secs_text}s"),
    }
}

/// `/v2/stats/self`: this member's name, id, Raft role, start time, leader and the Raft
/// append requests it sent and received.
fn self_stats(server: &Server, request: &http::Request<Bytes>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return not_allowed("GET");
    }
    let status = server.raft_status();
    let state = if status.is_leader {
        "StateLeader"
    } else if status.leader != 0 {
        "StateFollower"
    } else {
        "StateCandidate"
    };
    let (leader, since) = server.leader_since();
    let uptime = SystemTime::now().duration_since(since).unwrap_or_default();
    let body = format!(
        "{{\"name\":{},\"id\":\"{:x}\",\"state\":\"{state}\",\"startTime\":\"{}\",\"leaderInfo\":{{\"leader\":\"{}\",\"uptime\":\"{}\",\"startTime\":\"{}\"}},\"recvAppendRequestCnt\":{},\"sendAppendRequestCnt\":{}}}",
        go_string(&server.name),
        server.id,
        rfc3339_of(server.started),
        if leader == 0 { String::new() } else { format!("{leader:x}") },
        go_duration(uptime),
        rfc3339_of(since),
        server.appends_received.load(Ordering::Relaxed),
        server.appends_sent.load(Ordering::Relaxed),
    );
    json(StatusCode::OK, body)
}

/// `/v2/stats/leader`, on the leader: for each follower, the latency of this member's
/// probes of it (milliseconds: the last, average, standard deviation, minimum, maximum)
/// and how many were answered or failed. Elsewhere 403, as etcd answers.
fn leader_stats(server: &Server, request: &http::Request<Bytes>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return not_allowed("GET");
    }
    if !server.raft_status().is_leader {
        return http_error(StatusCode::FORBIDDEN, "not current leader");
    }
    let mut followers = Vec::new();
    for member in server.membership.members() {
        if member.id == server.id {
            continue;
        }
        let stats = *server
            .metrics
            .peer(member.id)
            .probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        followers.push(format!(
            "\"{:x}\":{{\"latency\":{{\"current\":{},\"average\":{},\"standardDeviation\":{},\"minimum\":{},\"maximum\":{}}},\"counts\":{{\"fail\":{},\"success\":{}}}}}",
            member.id,
            stats.current,
            stats.average(),
            stats.standard_deviation(),
            stats.minimum,
            stats.maximum,
            stats.fail,
            stats.success
        ));
    }
    json(
        StatusCode::OK,
        format!(
            "{{\"leader\":\"{:x}\",\"followers\":{{{}}}}}",
            server.id,
            followers.join(",")
        ),
    )
}

/// `/v2/stats/store`: the v2 store's operation counts since the member started.
fn store_stats(server: &Server, request: &http::Request<Bytes>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return not_allowed("GET");
    }
    let body = server.store.v2_stats(|stats| {
        let (gets, gets_fail) = stats.of(Op::Get);
        let (sets, sets_fail) = stats.of(Op::Set);
        let (deletes, deletes_fail) = stats.of(Op::Delete);
        let (updates, updates_fail) = stats.of(Op::Update);
        let (creates, creates_fail) = stats.of(Op::Create);
        let (swaps, swaps_fail) = stats.of(Op::CompareAndSwap);
        let (cads, cads_fail) = stats.of(Op::CompareAndDelete);
        format!(
            "{{\"getsSuccess\":{gets},\"getsFail\":{gets_fail},\"setsSuccess\":{sets},\"setsFail\":{sets_fail},\"deleteSuccess\":{deletes},\"deleteFail\":{deletes_fail},\"updateSuccess\":{updates},\"updateFail\":{updates_fail},\"createSuccess\":{creates},\"createFail\":{creates_fail},\"compareAndSwapSuccess\":{swaps},\"compareAndSwapFail\":{swaps_fail},\"compareAndDeleteSuccess\":{cads},\"compareAndDeleteFail\":{cads_fail},\"expireCount\":{},\"watchers\":{}}}",
            stats.expired(),
            WATCHERS.load(Ordering::Relaxed)
        )
    });
    json(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, form: &str) -> http::Request<Bytes> {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Bytes::from(form.to_owned()))
            .unwrap()
    }

    #[test]
    fn forms_parse_as_go_parses_them() {
        let parsed = parse_key_request(
            &request(
                Method::PUT,
                "/v2/keys/a%20b/../c?ttl=5&value=query",
                "value=x+y%21",
            ),
            1_000,
        )
        .unwrap();
        assert_eq!(parsed.request.path, "/c");
        assert_eq!(parsed.request.val, "x y!", "the body's value comes first");
        assert_eq!(parsed.request.expiration, 1_000 + 5_000_000_000);
        let error = |uri: &str, form: &str| {
            parse_key_request(&request(Method::PUT, uri, form), 0).unwrap_err()
        };
        assert_eq!(error("/v2/keys/t", "ttl=abc").code, 202);
        assert_eq!(
            error("/v2/keys/t", "ttl=abc").cause,
            "invalid value for \"ttl\""
        );
        assert_eq!(error("/v2/keys/t?recursive=maybe", "").code, 209);
        assert_eq!(error("/v2/keys/t?prevIndex=-1", "").code, 203);
        assert_eq!(error("/v2/keys/t?prevValue=", "").code, 201);
        assert_eq!(error("/v2/keys/t?wait=true", "").code, 209);
        assert_eq!(error("/v2/keys/t?refresh=true", "").code, 212);
        assert_eq!(error("/v2/keys/t?refresh=true&ttl=1", "value=v").code, 211);
        assert_eq!(error("/v2/keys/t", "value=%zz").code, 210);
        let exists = parse_key_request(&request(Method::PUT, "/v2/keys/t?prevExist=false", ""), 0);
        assert_eq!(exists.unwrap().request.prev_exist, Some(false));
    }

    #[test]
    fn events_and_errors_marshal_as_etcd_marshals_them() {
        let mut store = v2::V2Store::default();
        let at = 1_796_306_154_220_455_925;
        let event = store
            .set("/dir/a", false, "1".into(), at, false, at - 100_000_000_000)
            .unwrap();
        assert_eq!(
            event_json(&event, false),
            "{\"action\":\"set\",\"node\":{\"key\":\"/dir/a\",\"value\":\"1\",\"expiration\":\"2026-12-03T13:55:54.220455925Z\",\"ttl\":100,\"modifiedIndex\":1,\"createdIndex\":1}}\n"
        );
        let root = store.get("/", true, true, at).unwrap();
        assert!(event_json(&root, false).starts_with("{\"action\":\"get\",\"node\":{\"dir\":true,\"nodes\":[{\"key\":\"/dir\",\"dir\":true,\"nodes\":"));
        let error = V2Error::new(101, "[nope != baz]", 5);
        assert_eq!(
            error_json(&error),
            "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[nope != baz]\",\"index\":5}\n"
        );
        assert_eq!(
            rfc3339_nanos(1_796_306_154_000_000_000),
            "2026-12-03T13:55:54Z"
        );
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(
            go_duration(Duration::new(393, 651_015_567)),
            "6m33.651015567s"
        );
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(1_500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(250)), "250ns");
    }
}
