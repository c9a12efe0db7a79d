//! The etcd v3 API and oxcd's internal messages, generated at build time from `proto/`
//! (see `build.rs`). The packages keep etcd's names so the gRPC paths
//! (`/etcdserverpb.KV/Range`, …) are the ones every etcd client dials.

#![allow(clippy::all, missing_docs)]

/// The descriptors of every message above (what `build.rs` compiled), for tools that print
/// messages by their schema (`oxctl -w json`).
#[cfg(not(madsim))]
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod authpb {
    tonic::include_proto!("authpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

pub mod oxcdpb {
    tonic::include_proto!("oxcdpb");
}

/// The standard gRPC health checking service (`grpc.health.v1.Health`).
pub mod healthpb {
    tonic::include_proto!("grpc.health.v1");
}
