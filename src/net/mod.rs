//! What sits beneath HTTP/2 on the client listeners: the connection stack
//! (`client_listener`) and its adapters (`authority`, which mends the `:authority` that
//! etcdctl's `--cluster` commands send; `tls`, transport security for client and peer
//! listeners and for the connections to peers; its client side is public, for `oxbench`).
//! Nothing here knows of etcd or of the server.

pub(crate) mod authority;
pub(crate) mod client_listener;
pub mod tls;
