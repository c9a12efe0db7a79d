//! What grpc-prometheus and etcd's gRPC byte counters measure, as a tower layer on the
//! production client listener: calls started and handled per method and status code
//! (`grpc_server_started_total`, `grpc_server_handled_total`), their latency with
//! `--metrics extensive` (`grpc_server_handling_seconds`), and the bytes of every message
//! in and out (`etcd_network_client_grpc_{received,sent}_bytes_total`).
//!
//! A call is handled when its status is known: from the response headers of a trailers-only
//! answer (every error tonic returns before a body) or from the trailers that end the
//! response body. A body dropped before its status (the client went away) counts as
//! `Canceled`, as grpc-go counts a call whose context the client canceled. Byte counts are
//! the gRPC wire bytes of the HTTP/2 data frames, 5-byte message prefixes included.
//!
//! Counting takes no lock: the method is found by binary search in a static table and every
//! count is an atomic add (`types::metrics`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::codegen::{http, Service};

use crate::server::types::metrics::Metrics;

/// grpc-go's code for a call whose client canceled it.
const CANCELED: usize = 1;
/// grpc-go's code for a call that ended without a status.
const UNKNOWN: usize = 2;

/// Wraps the client services with [`GrpcMetrics`].
#[derive(Clone)]
pub(crate) struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts every call passing through to `inner` (see the module documentation).
#[derive(Clone)]
pub(crate) struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ResponseBody> Service<http::Request<tonic::body::Body>> for GrpcMetrics<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Body<Data = Bytes> + Unpin,
{
    type Response = http::Response<CountedResponse<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The HTTP endpoints answer over HTTP/2 too (`http_endpoints::OverHttp2`): such
        // requests are no gRPC calls and their bytes no gRPC bytes.
        let grpc = is_grpc(request.headers());
        let mut call = Call {
            method: self
                .metrics
                .grpc_method_index(request.uri().path())
                .filter(|_| grpc),
            started: self.metrics.extensive.then(Instant::now),
            metrics: self.metrics.clone(),
            finished: !grpc,
            grpc,
        };
        call.start();
        let request = if grpc {
            let (parts, body) = request.into_parts();
            let body = tonic::body::Body::new(CountedRequest {
                inner: body,
                metrics: self.metrics.clone(),
            });
            http::Request::from_parts(parts, body)
        } else {
            request
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    // A trailers-only answer carries the status in its headers.
                    if let Some(code) = grpc_status(response.headers()) {
                        call.finish(code);
                    }
                    Ok(response.map(|inner| CountedResponse { inner, call }))
                }
                Err(error) => {
                    call.finish(UNKNOWN);
                    Err(error)
                }
            }
        })
    }
}

/// Whether a request is a gRPC call (by its content type, as gRPC servers tell).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The status code a `grpc-status` header or trailer holds.
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One call being counted; counts it as handled exactly once.
struct Call {
    metrics: Arc<Metrics>,
    /// In the method table; `None` for a path no service serves (not counted per method).
    method: Option<usize>,
    /// When the call began; only with `--metrics extensive`.
    started: Option<Instant>,
    finished: bool,
    /// False for a request that is no gRPC call: nothing of it is counted.
    grpc: bool,
}

impl Call {
    fn start(&self) {
        if let Some(method) = self.method.and_then(|at| self.metrics.grpc_method_at(at)) {
            method.started.inc();
        }
    }

    fn finish(&mut self, code: usize) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if let Some(method) = self.method.and_then(|at| self.metrics.grpc_method_at(at)) {
            method.finished(code, self.started.map(|started| started.elapsed()));
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CANCELED);
    }
}

/// A request body whose data frames are counted as received.
struct CountedRequest<B> {
    inner: B,
    metrics: Arc<Metrics>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountedRequest<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.metrics.client_received_bytes.add(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body whose data frames are counted as sent, and whose trailers end the call.
pub(crate) struct CountedResponse<B> {
    inner: B,
    call: Call,
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountedResponse<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.call.grpc {
                        this.call.metrics.client_sent_bytes.add(data.len() as u64);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish(grpc_status(trailers).unwrap_or(UNKNOWN));
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.call.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A service answering like tonic: `status` in the headers (trailers-only) when it is
    /// an error, else one message and then the status in the trailers.
    #[derive(Clone)]
    struct Answer {
        status: usize,
    }

    impl Service<http::Request<tonic::body::Body>> for Answer {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
            let mut response = if self.status == 0 {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let frames = vec![
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"12345678"))),
                    Ok(Frame::trailers(trailers)),
                ];
                let stream = futures_stream(frames);
                http::Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(
                    stream,
                )))
            } else {
                http::Response::new(tonic::body::Body::empty())
            };
            if self.status != 0 {
                let code = http::HeaderValue::from_str(&self.status.to_string()).unwrap();
                response.headers_mut().insert("grpc-status", code);
            }
            std::future::ready(Ok(response))
        }
    }

    /// A stream of `frames`, without a dependency on a stream crate.
    fn futures_stream<T: Unpin>(frames: Vec<T>) -> impl futures_core::Stream<Item = T> + Unpin {
        struct Frames<T>(std::collections::VecDeque<T>);
        impl<T: Unpin> futures_core::Stream for Frames<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
                Poll::Ready(self.0.pop_front())
            }
        }
        Frames(frames.into())
    }

    async fn call(metrics: &Arc<Metrics>, path: &str, status: usize, read_body: bool) {
        let mut service =
            tower_layer::Layer::layer(&GrpcMetricsLayer::new(metrics.clone()), Answer { status });
        let request = http::Request::builder()
            .uri(path)
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(http_body_util::Full::new(
                Bytes::from_static(b"abc"),
            )))
            .unwrap();
        let response = service.call(request).await.unwrap();
        if read_body {
            let _ = response.into_body().collect().await;
        }
    }

    fn handled(metrics: &Metrics, path: &str, code: usize) -> u64 {
        metrics.grpc_method(path).unwrap().handled[code].get()
    }

    #[tokio::test]
    async fn calls_are_counted_by_method_and_status() {
        let metrics = Arc::new(Metrics::new(true));
        call(&metrics, "/etcdserverpb.KV/Put", 0, true).await;
        call(&metrics, "/etcdserverpb.KV/Put", 14, true).await;
        call(&metrics, "/etcdserverpb.KV/Range", 0, false).await;
        call(&metrics, "/no.Such/Method", 0, true).await;
        let put = metrics.grpc_method("/etcdserverpb.KV/Put").unwrap();
        assert_eq!(put.started.get(), 2);
        assert_eq!(handled(&metrics, "/etcdserverpb.KV/Put", 0), 1);
        assert_eq!(
            handled(&metrics, "/etcdserverpb.KV/Put", 14),
            1,
            "Unavailable"
        );
        assert_eq!(put.handling.count(), 2, "extensive: latency observed");
        assert_eq!(
            handled(&metrics, "/etcdserverpb.KV/Range", CANCELED),
            1,
            "a body dropped before its trailers is a canceled call"
        );
        assert_eq!(metrics.client_sent_bytes.get(), 8 * 2);
    }
}
