//! Compiles `proto/` at build time without a system `protoc`: protox (a pure-Rust protobuf
//! compiler) produces the descriptor set, and madsim-tonic-build turns it into messages and
//! gRPC code that works both in the production build and under `--cfg madsim`; pbjson-build
//! adds the JSON forms of etcd's messages (the gateway's, production builds only).

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "proto/etcd/kv.proto",
    "proto/etcd/auth.proto",
    "proto/etcd/rpc.proto",
    "proto/etcd/v3lock.proto",
    "proto/etcd/v3election.proto",
    "proto/oxcd/internal.proto",
    "proto/grpc/health/v1/health.proto",
];
const INCLUDE_DIRS: &[&str] = &["proto/etcd", "proto/oxcd", "proto/grpc"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptor_set = protox::compile(PROTO_FILES, INCLUDE_DIRS)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptor.bin");
    std::fs::write(&descriptor_path, descriptor_set.encode_to_vec())?;

    tonic_build::configure()
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        // Values and keys are shared between the log, the store and responses without copies.
        .bytes(["."])
        .compile_protos(PROTO_FILES, INCLUDE_DIRS)?;

    // The JSON forms of etcd's messages for the gRPC-JSON gateway, as etcd's grpc-gateway
    // writes them: the proto field names, int64 as strings, bytes as base64, defaults left
    // out.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])?;
    Ok(())
}
