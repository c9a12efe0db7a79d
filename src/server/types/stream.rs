//! Streams over channels: how a task feeds a gRPC response stream, and how a client feeds
//! the request side of a streaming call.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;
use tonic::Status;

/// A stream of responses fed by a task through a bounded channel.
pub struct ChannelStream<T>(pub(crate) mpsc::Receiver<Result<T, Status>>);

impl<T> Stream for ChannelStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(context)
    }
}

/// A stream of whatever arrives on a channel: the request side of a client's streaming
/// call (watch, keep-alive, a snapshot sent to a peer), for the peer transport, oxbench and
/// the simulator.
pub struct ReceiverStream<T>(pub mpsc::Receiver<T>);

impl<T> Stream for ReceiverStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(context)
    }
}

/// Where a streaming call's requests come from: a gRPC stream, or requests given all at
/// once (the JSON gateway reads them from one request body) after which the call stays
/// open until its client goes away.
pub(crate) trait RequestSource<T>: Send + 'static {
    /// The next request; `Ok(None)` when the client closed its side.
    fn next(&mut self) -> impl std::future::Future<Output = Result<Option<T>, Status>> + Send;
}

impl<T: Send + 'static> RequestSource<T> for tonic::Streaming<T> {
    async fn next(&mut self) -> Result<Option<T>, Status> {
        self.message().await
    }
}

/// Requests given up front (the JSON gateway's body), then either the end of the requests
/// (as a gRPC client's half-close: etcd ends a keep-alive stream there) or none, without
/// ending the call (a watch goes on delivering events).
#[cfg(not(madsim))]
pub(crate) struct GivenRequests<T> {
    requests: std::vec::IntoIter<T>,
    then_end: bool,
}

#[cfg(not(madsim))]
impl<T> GivenRequests<T> {
    /// `requests`, then the end of the requests.
    pub(crate) fn then_end(requests: Vec<T>) -> Self {
        GivenRequests {
            requests: requests.into_iter(),
            then_end: true,
        }
    }

    /// `requests`, then none, for as long as the call lasts.
    pub(crate) fn then_wait(requests: Vec<T>) -> Self {
        GivenRequests {
            requests: requests.into_iter(),
            then_end: false,
        }
    }
}

#[cfg(not(madsim))]
impl<T: Send + 'static> RequestSource<T> for GivenRequests<T> {
    async fn next(&mut self) -> Result<Option<T>, Status> {
        match self.requests.next() {
            Some(request) => Ok(Some(request)),
            None if self.then_end => Ok(None),
            None => std::future::pending().await,
        }
    }
}
