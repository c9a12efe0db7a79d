//! The stack a client connection passes through before HTTP/2 sees it, in one place:
//!
//! ```text
//! TCP (TCP_NODELAY) → [TLS, when the URL is https] → authority::ClientStream → HTTP/2
//! ```
//!
//! Each layer wraps the stream of the one below it; [`Incoming`] yields the top of the
//! stack for every accepted connection, and the gRPC server reads it. TLS terminates
//! beneath the authority adapter, which must see plaintext HTTP/2 frames.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;

use super::authority::ClientStream;

/// The accepted client connections of one listener, each wrapped in the layers above TCP.
pub(crate) struct Incoming {
    tcp: TcpIncoming,
}

impl Incoming {
    pub(crate) fn new(listener: TcpListener) -> Self {
        Incoming {
            tcp: TcpIncoming::from(listener).with_nodelay(Some(true)),
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<ClientStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.tcp)
            .poll_next(cx)
            .map(|accepted| accepted.map(|socket| socket.map(ClientStream::new)))
    }
}
