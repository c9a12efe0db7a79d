//! The stack a client connection passes through before HTTP/2 sees it, in one place:
//!
//! ```text
//! TCP (TCP_NODELAY) → [TLS, when the URL is https] → sniff → authority::ClientStream → HTTP/2
//!                                                      └──→ HTTP/1.1 (metrics, health)
//! ```
//!
//! Each layer wraps the stream of the one below it; [`Incoming`] yields the top of the
//! stack for every gRPC connection, and the gRPC server reads it. The sniffer
//! (`net::sniff`) serves the connections that are not HTTP/2 as HTTP/1.1 with the handler
//! it is given. TLS terminates beneath the sniffer and the authority adapter, which must
//! see plaintext.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;

use super::authority::ClientStream;
use super::http1::Handler;
use super::sniff::{self, Sniffed};

/// The accepted gRPC connections of one listener, each wrapped in the layers above TCP.
pub(crate) struct Incoming {
    grpc: sniff::Grpc<TcpStream>,
}

impl Incoming {
    /// The gRPC connections of `listener`; its HTTP/1.1 connections are served by `http1`.
    pub(crate) fn new(listener: TcpListener, http1: Handler) -> Self {
        let tcp = TcpIncoming::from(listener).with_nodelay(Some(true));
        Incoming {
            grpc: sniff::split(tcp, http1),
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<ClientStream<Sniffed<TcpStream>>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.grpc)
            .poll_next(cx)
            .map(|accepted| accepted.map(|socket| socket.map(ClientStream::new)))
    }
}
