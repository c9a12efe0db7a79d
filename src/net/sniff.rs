//! Telling HTTP/2 from HTTP/1.1 on one listener, as etcd serves gRPC and its HTTP endpoints
//! (`/metrics`, `/health`, `/version`) on the same client port.
//!
//! Every HTTP/2 connection of a gRPC client opens with the 24-byte connection preface
//! `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4); no HTTP/1.1 request line can begin
//! like it. [`split`] reads the first bytes of each accepted connection, in a task of the
//! connection's own so that a client that sends nothing holds up no one else, and:
//!
//! - hands a connection that sent the preface on to the gRPC server, through the stream
//!   [`split`] returns, the bytes already read put back in front ([`Sniffed`]);
//! - serves any other connection as HTTP/1.1 with the given handler (`net::http1`);
//! - closes a connection that sends neither within [`SNIFF_TIMEOUT`], or closes first.
//!
//! Connections being sniffed or served as HTTP/1.1 are bounded ([`SNIFFING_MAX`],
//! [`http1::CONNECTIONS_MAX`]): past the bound a new connection is closed at once, so a
//! flood of idle or slow HTTP clients costs a bounded amount of memory and never stalls
//! accepting, nor the gRPC connections already open.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::Connected;

use super::http1::{self, Handler};

/// What every HTTP/2 client sends first.
pub(crate) const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may take to show which protocol it speaks.
pub(crate) const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections being sniffed at once, at most.
pub(crate) const SNIFFING_MAX: usize = 1_024;

/// How long to wait after accepting failed before accepting again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Sniffed gRPC connections queued for the gRPC server at most.
const GRPC_QUEUED_MAX: usize = 128;

/// Which protocol the first bytes of a connection announce, if they tell yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http2,
    Http1,
}

/// `Some` once `first` (the bytes read so far) decides the protocol.
pub(crate) fn classify(first: &[u8]) -> Option<Protocol> {
    let compared = first.len().min(HTTP2_PREFACE.len());
    if first[..compared] != HTTP2_PREFACE[..compared] {
        Some(Protocol::Http1)
    } else if compared == HTTP2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// A connection whose first bytes were read to sniff it; they are read again first.
pub(crate) struct Sniffed<S> {
    first: Vec<u8>,
    /// How much of `first` was read again already.
    replayed: usize,
    inner: S,
}

impl<S> Sniffed<S> {
    fn new(first: Vec<u8>, inner: S) -> Self {
        Sniffed {
            first,
            replayed: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.first.len() {
            let rest = &this.first[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.first.len() {
                this.first = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for Sniffed<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The gRPC connections of a listener whose other connections are served as HTTP/1.1.
pub(crate) struct Grpc<S> {
    connections: mpsc::Receiver<Sniffed<S>>,
}

impl<S> Stream for Grpc<S> {
    type Item = io::Result<Sniffed<S>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|next| next.map(Ok))
    }
}

/// Sniffs every connection `accepted` yields: HTTP/1.1 ones are served with `http1`, the
/// gRPC ones come out of the returned stream. Accepting stops when that stream is dropped
/// (the gRPC server stopped) or `accepted` ends.
pub(crate) fn split<I, S>(accepted: I, http1: Handler) -> Grpc<S>
where
    I: Stream<Item = io::Result<S>> + Send + Unpin + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Bounded: a gRPC server that stops taking connections holds up accepting instead of
    // letting them pile up.
    let (grpc, connections) = mpsc::channel(GRPC_QUEUED_MAX);
    tokio::spawn(accept(accepted, http1, grpc));
    Grpc { connections }
}

/// The accept loop of [`split`].
async fn accept<I, S>(mut accepted: I, http1: Handler, grpc: mpsc::Sender<Sniffed<S>>)
where
    I: Stream<Item = io::Result<S>> + Send + Unpin + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sniffing = Arc::new(Semaphore::new(SNIFFING_MAX));
    let serving = Arc::new(Semaphore::new(http1::CONNECTIONS_MAX));
    loop {
        // Why `select!`: a new connection and the gRPC server going away are independent;
        // the listener must close as soon as nobody takes its connections.
        let next = tokio::select! {
            next = std::future::poll_fn(|cx| Pin::new(&mut accepted).poll_next(cx)) => next,
            _ = grpc.closed() => return,
        };
        let stream = match next {
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                // Out of file descriptors, mostly: wait a moment rather than spin on it.
                tracing::warn!(%error, "accepting a client connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
            None => return,
        };
        let Ok(permit) = sniffing.clone().try_acquire_owned() else {
            tracing::warn!("too many client connections sniffed at once; closing a new one");
            continue;
        };
        let grpc = grpc.clone();
        let http1 = http1.clone();
        let serving = serving.clone();
        tokio::spawn(async move {
            let sniffed = tokio::time::timeout(SNIFF_TIMEOUT, sniff(stream)).await;
            drop(permit);
            match sniffed {
                Ok(Ok((Protocol::Http2, stream))) => {
                    let _ = grpc.send(stream).await;
                }
                Ok(Ok((Protocol::Http1, stream))) => {
                    let Ok(_serving) = serving.try_acquire_owned() else {
                        tracing::warn!("too many HTTP/1.1 connections; closing a new one");
                        return;
                    };
                    http1::serve_connection(stream, http1).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "client connection closed unsniffed"),
                Err(_) => tracing::debug!("client connection sent nothing in time; closed"),
            }
        });
    }
}

/// Reads from `stream` until its first bytes tell its protocol.
async fn sniff<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(Protocol, Sniffed<S>)> {
    let mut first = Vec::with_capacity(HTTP2_PREFACE.len());
    let mut buf = [0u8; HTTP2_PREFACE.len()];
    loop {
        // Never past the preface's length: what follows belongs to the protocol's reader.
        let wanted = HTTP2_PREFACE.len() - first.len();
        let n = stream.read(&mut buf[..wanted]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        first.extend_from_slice(&buf[..n]);
        if let Some(protocol) = classify(&first) {
            return Ok((protocol, Sniffed::new(first, stream)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_preface_decides_and_anything_else_is_http1() {
        let table: &[(&[u8], Option<Protocol>)] = &[
            (b"", None),
            (b"P", None),
            (b"PRI * HTTP/2.0\r\n", None),
            (HTTP2_PREFACE, Some(Protocol::Http2)),
            (b"G", Some(Protocol::Http1)),
            (b"GET /metrics HTTP/1.1\r\n", Some(Protocol::Http1)),
            (b"PRI * HTTP/1.1", Some(Protocol::Http1)),
            (b"POST", Some(Protocol::Http1)),
            (b"\x16\x03\x01", Some(Protocol::Http1)),
        ];
        for (first, want) in table {
            assert_eq!(
                classify(first),
                *want,
                "{:?}",
                String::from_utf8_lossy(first)
            );
        }
    }

    #[tokio::test]
    async fn sniffed_bytes_are_read_again_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        // Written in pieces: the sniffer must wait for enough bytes to decide.
        let writer = tokio::spawn(async move {
            client.write_all(b"PRI * HTTP").await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(&HTTP2_PREFACE[10..]).await.unwrap();
            client.write_all(b"frames").await.unwrap();
            client
        });
        let (protocol, mut sniffed) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http2);
        let mut seen = vec![0u8; HTTP2_PREFACE.len() + 6];
        sniffed.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen[..HTTP2_PREFACE.len()], HTTP2_PREFACE);
        assert_eq!(&seen[HTTP2_PREFACE.len()..], b"frames");
        drop(writer.await.unwrap());

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (protocol, mut sniffed) = sniff(server).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut seen = [0u8; 16];
        sniffed.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_connection_closed_early_is_not_handed_on() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI").await.unwrap();
        drop(client);
        assert!(sniff(server).await.is_err());
    }
}
