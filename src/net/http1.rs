//! Serving HTTP/1.1 with hyper: the connections the client listener's sniffer finds are not
//! gRPC (`net::sniff`), and every connection of a `--listen-metrics-urls` listener.
//!
//! The handler is whatever the caller passes (the server's HTTP face answers `/metrics`,
//! `/health` and the like, and the JSON gateway's `/v3/...`); it sees the request with its
//! whole body. Limits keep a bad client from costing more than its own connection:
//!
//! - a request head must arrive within [`HEADER_READ_TIMEOUT`] (slow clients, slowloris)
//!   and fit in [`HEAD_BYTES_MAX`] (hyper answers `431` past it, `400` to garbage);
//! - a body must arrive within [`BODY_READ_TIMEOUT`] and fit in [`BODY_BYTES_MAX`] (`408`
//!   and `413` otherwise, and the connection closes);
//! - a connection lives at most [`CONNECTION_LIFETIME_MAX`], idle or not;
//! - at most [`CONNECTIONS_MAX`] connections per listener are served at once; more are
//!   closed as they arrive.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send a request head.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head (request line and headers) read, in bytes.
pub(crate) const HEAD_BYTES_MAX: usize = 16 * 1024;

/// How long a client may take to send a request body.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body read, in bytes: the largest request etcd takes
/// (`--max-request-bytes` tops out at a few MiB) in base64 within JSON.
pub(crate) const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How long one connection is served at most (keep-alive included).
pub(crate) const CONNECTION_LIFETIME_MAX: Duration = Duration::from_secs(300);

/// HTTP/1.1 connections served at once per listener, at most.
pub(crate) const CONNECTIONS_MAX: usize = 256;

/// The body of an answer: whole, or streamed (the gateway's watch and keep-alive).
pub(crate) type ReplyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The answer to one request.
pub(crate) type Reply = Pin<Box<dyn Future<Output = http::Response<ReplyBody>> + Send>>;

/// Answers requests; cheap to clone.
pub(crate) type Handler = Arc<dyn Fn(http::Request<Bytes>) -> Reply + Send + Sync>;

/// Reads a whole request body within the limits; the status to answer when it cannot.
pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, http::StatusCode>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(body, BODY_BYTES_MAX);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(http::StatusCode::PAYLOAD_TOO_LARGE)
        }
        Ok(Err(_)) => Err(http::StatusCode::BAD_REQUEST),
        Err(_) => Err(http::StatusCode::REQUEST_TIMEOUT),
    }
}

/// An answer with its whole body, as a [`ReplyBody`].
pub(crate) fn whole(response: http::Response<Full<Bytes>>) -> http::Response<ReplyBody> {
    use http_body_util::BodyExt as _;
    response.map(|body| body.boxed_unsync())
}

/// A bare answer with `status` (a body that could not be read).
pub(crate) fn status_only(status: http::StatusCode) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(format!(
        "{}\n",
        status.canonical_reason().unwrap_or("")
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// Serves HTTP/1.1 requests on `stream` with `handler` until the client closes, a limit
/// ends it, or an error does.
pub(crate) async fn serve_connection<S>(stream: S, handler: Handler)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let handler = handler.clone();
            async move {
                let (head, body) = request.into_parts();
                let response = match read_body(body).await {
                    Ok(body) => handler(http::Request::from_parts(head, body)).await,
                    Err(status) => whole(status_only(status)),
                };
                Ok::<_, Infallible>(response)
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HEAD_BYTES_MAX)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_LIFETIME_MAX, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "HTTP/1.1 connection ended"),
        Err(_) => tracing::debug!("HTTP/1.1 connection reached its lifetime; closed"),
    }
}

/// Serves every connection of `listener` as HTTP/1.1 with `handler` until `shutdown`
/// completes (a `--listen-metrics-urls` listener).
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) {
    let serving = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        // Why `select!`: a new connection and shutdown are independent events.
        let accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)> = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, mostly: wait a moment rather than spin.
                tracing::warn!(%error, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = serving.clone().try_acquire_owned() else {
            tracing::warn!("too many metrics connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            serve_connection(stream, handler).await;
            drop(permit);
        });
    }
}
