//! Connection adapters that sit beneath HTTP/2 on the client listeners: TCP → (TLS) →
//! `authority` → HTTP/2. They know nothing of etcd or of the server.

pub(crate) mod authority;
