//! What sits beneath HTTP/2 on the client listeners: the connection stack
//! (`client_listener`) and its adapters (`authority`, which mends the `:authority` that
//! etcdctl's `--cluster` commands send; `tls`, transport security for client and peer
//! listeners and for the connections to peers, its client side public for `oxbench`;
//! `sniff`, which tells gRPC from HTTP/1.1 on one port), and HTTP/1.1 serving with hyper
//! (`http1`). Nothing here knows of etcd or of the server.

pub(crate) mod authority;
pub(crate) mod client_listener;
pub mod dial;
pub(crate) mod http1;
pub(crate) mod sniff;
pub mod tls;
