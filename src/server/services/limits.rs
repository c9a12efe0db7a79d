//! How an oversized client request is refused, in etcd's words.
//!
//! etcd has two limits on a request. The gRPC transport refuses a message larger than
//! `--max-request-bytes` + 512 KiB before anything decodes it: grpc-go answers
//! `RESOURCE_EXHAUSTED` "grpc: received message larger than max (N vs. M)". A message under
//! that but whose proposal is larger than `--max-request-bytes` reaches the server and is
//! refused there with `etcdserver: request is too large` (`Proposer::propose`).
//!
//! tonic enforces the first limit too, as early (from the length prefix of the message,
//! before its body is buffered), but answers `OUT_OF_RANGE` "Error, decoded message length
//! too large: found N bytes, the limit is: M bytes". Clients match etcd's code and text, so
//! `GrpcMessageLimitLayer` rewrites that answer into grpc-go's where it is a response's
//! header — every unary call, since tonic answers a request that fails to decode with a
//! trailers-only response. A stream (Watch, LeaseKeepAlive) that receives an oversized
//! message later ends with [`receive_failed`]'s status, as etcd's ends with its receive
//! error. The simulator's transport passes messages as values and has no size limit.

#[cfg(not(madsim))]
use std::future::Future;
#[cfg(not(madsim))]
use std::pin::Pin;
#[cfg(not(madsim))]
use std::task::{Context, Poll};

#[cfg(not(madsim))]
use tonic::codegen::http;
#[cfg(not(madsim))]
use tonic::codegen::Service;
use tonic::{Code, Status};

/// grpc-go lets a message be this much larger than `--max-request-bytes` before refusing it
/// at the transport (etcd's `grpcOverheadBytes`).
#[cfg(not(madsim))]
pub(crate) const GRPC_OVERHEAD_BYTES: u64 = 512 * 1024;

/// The largest message the client listener decodes.
#[cfg(not(madsim))]
pub(crate) fn grpc_message_bytes_max(request_bytes_max: u64) -> usize {
    usize::try_from(request_bytes_max.saturating_add(GRPC_OVERHEAD_BYTES)).unwrap_or(usize::MAX)
}

/// The sizes in tonic's "message too large" status, if `status` is one.
fn tonic_too_large(status: &Status) -> Option<(u64, u64)> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let rest = status
        .message()
        .strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

/// grpc-go's status for a received message over the limit.
pub(crate) fn received_too_large(found: u64, limit: u64) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("grpc: received message larger than max ({found} vs. {limit})"),
    )
}

/// The status a stream ends with when receiving from the client failed: etcd returns the
/// receive error, so an oversized message ends the stream with grpc-go's status.
pub(crate) fn receive_failed(status: Status) -> Status {
    match tonic_too_large(&status) {
        Some((found, limit)) => received_too_large(found, limit),
        None => status,
    }
}

/// Rewrites tonic's "message too large" status in `headers` into grpc-go's.
#[cfg(not(madsim))]
fn rewrite(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some((found, limit)) = tonic_too_large(&status) else {
        return;
    };
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if let Err(error) = received_too_large(found, limit).add_header(headers) {
        tracing::warn!(%error, "cannot rewrite the oversized-message status");
    }
}

#[cfg(not(madsim))]
/// Wraps the client services with [`GrpcMessageLimit`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GrpcMessageLimitLayer;

#[cfg(not(madsim))]
impl<S> tower_layer::Layer<S> for GrpcMessageLimitLayer {
    type Service = GrpcMessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMessageLimit { inner }
    }
}

#[cfg(not(madsim))]
/// Answers an oversized message as grpc-go does (see the module documentation).
#[derive(Clone, Debug)]
pub(crate) struct GrpcMessageLimit<S> {
    inner: S,
}

#[cfg(not(madsim))]
impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for GrpcMessageLimit<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite(response.headers_mut());
            Ok(response)
        })
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn tonic_status_becomes_grpc_go_status() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 2097162 bytes, the limit is: 2097152 bytes",
        )
        .add_header(&mut headers)
        .unwrap();
        rewrite(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (2097162 vs. 2097152)"
        );
    }

    #[test]
    fn other_statuses_are_left_alone() {
        for status in [
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision"),
            Status::invalid_argument("etcdserver: request is too large"),
            Status::new(Code::Ok, ""),
        ] {
            let mut headers = http::HeaderMap::new();
            status.add_header(&mut headers).unwrap();
            let before = headers.clone();
            rewrite(&mut headers);
            assert_eq!(headers, before);
        }
    }

    #[test]
    fn the_limit_is_etcds() {
        assert_eq!(grpc_message_bytes_max(1_572_864), 2_097_152);
        assert_eq!(grpc_message_bytes_max(u64::MAX), usize::MAX);
    }
}
