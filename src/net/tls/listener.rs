//! Accepting TLS connections: one task accepts, one task per connection runs its
//! handshake (bounded in number and time), and only the connections whose handshake
//! succeeded reach the HTTP/2 server; refusals are logged, rate-limited.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use rustls::CertificateError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tonic::transport::server::{Connected, TcpIncoming};

use super::verify::common_name;
use super::ServerTls;

/// How long a client has to complete its handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight per listener at most; beyond it, accepting waits for one to end.
const HANDSHAKES_IN_FLIGHT_MAX: usize = 1_024;
/// Connections handshaken and not yet taken by the HTTP/2 server.
const READY_CONNECTIONS_MAX: usize = 64;
/// A failed `accept` (out of file descriptors) is retried after this pause, not at once.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Refusals logged per window at most; the rest are counted and reported with the next.
const REFUSALS_LOGGED_PER_WINDOW: u32 = 10;
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Who is on/// Who is on the other end of an accepted connection; tonic adds it to every request's
/// extensions.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionInfo {
    /// The Common Name of the client's verified certificate (TLS listeners that asked for
    /// one only).
    pub common_name: Option<Arc<str>>,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, plaintext or TLS, with what is known of its client.
pub(crate) struct Connection {
    transport: Transport,
    pub(super) info: ConnectionInfo,
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_read(context, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_write(context, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_write_vectored(context, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(socket) => socket.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_flush(context),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(socket) => Pin::new(socket).poll_shutdown(context),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

/// The accepted connections of one listener: plaintext as accepted, or TLS once the
/// handshake succeeded.
pub(crate) enum Incoming {
    Plain(TcpIncoming),
    Tls {
        /// Handshaken connections, from the handshake tasks. Bounded: if the HTTP/2 server
        /// stops taking them, handshakes wait rather than pile up.
        ready: mpsc::Receiver<Connection>,
        acceptor: tokio::task::JoinHandle<()>,
    },
}

impl Incoming {
    /// Accepts on `listener`, with TLS when `tls` is given.
    pub(crate) fn new(listener: TcpListener, tls: Option<Arc<ServerTls>>) -> Self {
        match tls {
            None => Incoming::Plain(TcpIncoming::from(listener).with_nodelay(Some(true))),
            Some(tls) => {
                let (sender, ready) = mpsc::channel(READY_CONNECTIONS_MAX);
                let acceptor = tokio::spawn(accept_loop(listener, tls, sender));
                Incoming::Tls { ready, acceptor }
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // The listener stops with the server that reads it: the accept task owns the
        // socket, so ending it closes the port.
        if let Incoming::Tls { acceptor, .. } = self {
            acceptor.abort();
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Incoming::Plain(tcp) => Pin::new(tcp).poll_next(context).map(|accepted| {
                accepted.map(|socket| {
                    socket.map(|socket| Connection {
                        info: ConnectionInfo::default(),
                        transport: Transport::Plain(socket),
                    })
                })
            }),
            Incoming::Tls { ready, .. } => ready.poll_recv(context).map(|next| next.map(Ok)),
        }
    }
}

/// Accepts TCP connections and hands each to a handshake task of its own, so that one
/// slow client never delays the next.
async fn accept_loop(listener: TcpListener, tls: Arc<ServerTls>, ready: mpsc::Sender<Connection>) {
    let local = listener.local_addr().ok();
    // Bounds the handshakes in flight: a flood of clients that never finish their
    // handshake costs at most this many tasks, each ended by the timeout.
    let in_flight = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (socket, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, ?local, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let tls = tls.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(&tls, socket).await {
                Ok(connection) => {
                    let _ = ready.send(connection).await;
                }
                Err(reason) => tls.refusals.refused(remote, local, &reason),
            }
        });
    }
}

/// Runs the server handshake on `socket` with the current configuration; `Err` is the
/// reason, in words, for the log.
async fn handshake(tls: &ServerTls, socket: TcpStream) -> Result<Connection, String> {
    let _ = socket.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.get());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(describe(&error)),
        Err(_) => return Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
    };
    let common_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(common_name)
        .map(Arc::from);
    Ok(Connection {
        transport: Transport::Tls(Box::new(stream)),
        info: ConnectionInfo { common_name },
    })
}

/// A handshake error in words an operator can act on.
fn describe(error: &io::Error) -> String {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            "the client does not speak TLS (a plaintext client on a TLS port?)".to_string()
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            "the client presented no certificate and one is required".to_string()
        }
        Some(rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown),
        )) => format!(
            "the client refused this server's certificate (alert {alert:?}): it does not \
             trust its CA, or the certificate does not name the address the client dialled"
        ),
        // Our own reasons (a Common Name not allowed) read better through their Display.
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(reason))) => {
            format!("invalid peer certificate: {reason}")
        }
        Some(tls_error) => tls_error.to_string(),
        None => error.to_string(),
    }
}

/// Logs refused handshakes, at most `REFUSALS_LOGGED_PER_WINDOW` per window: a client
/// retrying in a loop must not flood the log. The rest are counted and the count is
/// reported with the next line logged.
#[derive(Default)]
pub(super) struct RefusalLog {
    /// Window start, lines logged in it, refusals not logged since the last line. A mutex:
    /// taken once per refused handshake, for a few arithmetic operations.
    state: Mutex<Option<(Instant, u32, u64)>>,
}

impl RefusalLog {
    pub(super) fn refused(&self, remote: SocketAddr, local: Option<SocketAddr>, reason: &str) {
        let mut state = self.state.lock().expect("refusal log lock poisoned");
        let now = Instant::now();
        let (start, logged, suppressed) = state.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= REFUSAL_LOG_WINDOW {
            *start = now;
            *logged = 0;
        }
        if *logged >= REFUSALS_LOGGED_PER_WINDOW {
            *suppressed += 1;
            return;
        }
        *logged += 1;
        let not_logged = std::mem::take(suppressed);
        drop(state);
        let local = local.map(|address| address.to_string()).unwrap_or_default();
        if not_logged > 0 {
            tracing::warn!(
                "refused a TLS connection from {remote} on {local}: {reason} ({not_logged} more refused and not logged before it)"
            );
        } else {
            tracing::warn!("refused a TLS connection from {remote} on {local}: {reason}");
        }
    }
}
