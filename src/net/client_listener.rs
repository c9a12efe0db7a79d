//! The stack a client connection passes through before HTTP/2 sees it, in one place:
//!
//! ```text
//! TCP (TCP_NODELAY) → [TLS, when the URL is https] → authority::ClientStream → HTTP/2
//! ```
//!
//! Each layer wraps the stream of the one below it; [`Incoming`] yields the top of the
//! stack for every accepted connection, and the gRPC server reads it. TLS terminates
//! beneath the authority adapter, which must see plaintext HTTP/2 frames; `tls::Incoming`
//! yields only connections whose handshake succeeded.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use futures_core::Stream;
use tokio::net::TcpListener;

use super::authority::ClientStream;
use super::tls::{self, Connection, ServerTls};

/// The accepted client connections of one listener, each wrapped in the layers above TCP.
pub(crate) struct Incoming {
    tcp: tls::Incoming,
}

impl Incoming {
    /// Accepts on `listener`, with TLS when `tls` is given (an `https://` URL).
    pub(crate) fn new(listener: TcpListener, tls: Option<Arc<ServerTls>>) -> Self {
        Incoming {
            tcp: tls::Incoming::new(listener, tls),
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<ClientStream<Connection>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.tcp)
            .poll_next(cx)
            .map(|accepted| accepted.map(|socket| socket.map(ClientStream::new)))
    }
}
