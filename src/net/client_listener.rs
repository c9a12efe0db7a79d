//! The stack a client connection passes through before HTTP/2 sees it, in one place:
//!
//! ```text
//! TCP (TCP_NODELAY) → [TLS, when the URL is https] → sniff → authority::ClientStream → HTTP/2
//!                                                      └──→ HTTP/1.1 (metrics, health)
//! ```
//!
//! Each layer wraps the stream of the one below it; [`Incoming`] yields the top of the
//! stack for every gRPC connection, and the gRPC server reads it. TLS terminates beneath
//! the sniffer and the authority adapter, which must see plaintext; `tls::Incoming` yields
//! only connections whose handshake succeeded. The sniffer (`net::sniff`) serves the
//! connections that are not HTTP/2 as HTTP/1.1 with the handler it is given.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use futures_core::Stream;
use tokio::net::TcpListener;

use super::authority::ClientStream;
use super::http1::Handler;
use super::sniff::{self, Sniffed};
use super::tls::{self, Connection, ServerTls};

/// The accepted gRPC connections of one listener, each wrapped in the layers above TCP.
pub(crate) struct Incoming {
    grpc: sniff::Grpc<Connection>,
}

impl Incoming {
    /// Accepts on `listener`, with TLS when `tls` is given (an `https://` URL); the
    /// connections that are not gRPC are served by `http1`.
    pub(crate) fn new(listener: TcpListener, tls: Option<Arc<ServerTls>>, http1: Handler) -> Self {
        Incoming {
            grpc: sniff::split(tls::Incoming::new(listener, tls), http1),
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<ClientStream<Sniffed<Connection>>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.grpc)
            .poll_next(cx)
            .map(|accepted| accepted.map(|socket| socket.map(ClientStream::new)))
    }
}
