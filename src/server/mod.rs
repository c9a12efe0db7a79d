//! One oxcd member: bootstrap, the Raft loop, the applier, reads, and the etcd v3 gRPC
//! services.
//!
//! # Layers
//!
//! The server is built in five layers, each importing only from the layers below it (and
//! from the crate's engines: `raft`, `wal`, `mvcc`, `lease`, `io`). `docs/architecture.md`
//! draws them and walks requests through them.
//!
//! 1. [`types`]: configuration, etcd's errors, ids, the requests and results passed
//!    between tasks, the transport seam and the simulator's observer hooks.
//! 2. [`state`]: the owners of a member's state — the store, membership, alarms, the
//!    proposer, the reads waiting for ReadIndex, the lifecycle — composed by
//!    `state::server::Server` (etcd's `EtcdServer`).
//! 3. [`tasks`]: the loops — the Raft loop, the applier, read-index rounds, lease expiry,
//!    the peer transport.
//! 4. [`services`]: one per etcd gRPC service, the peer service, forwarding to the leader.
//! 5. [`wiring`]: bootstrap, spawning the tasks, listeners, shutdown.
//!
//! # Data path of a write
//!
//! 1. A service (`services::kv`, …) validates the request at the edge
//!    (`services::validate`); a bad request gets etcd's exact error and never reaches the
//!    log.
//! 2. The proposer (`state::proposer`) wraps it in an `InternalRequest` envelope with a
//!    unique id, registers a waiter under that id and hands the encoded envelope to the Raft
//!    task.
//! 3. The Raft task (`tasks::raft_node`) drives the pure consensus core: for every `Ready` it
//!    writes the new entries and hard state to the WAL with one fdatasync (group commit:
//!    every proposal that arrived since the last Ready shares it), then passes the committed
//!    entries to the applier, then advances the core.
//! 4. The applier (`tasks::apply`) applies committed entries in log order to the store,
//!    the lessor, membership and alarms, storing the applied index in the same backend batch,
//!    and completes the waiter of each entry proposed here with its response.
//! 5. The backend commits every `--backend-batch-interval` or `--backend-batch-limit`
//!    entries. The WAL, not the backend commit, makes an acknowledged write durable: after a
//!    crash the member replays the WAL from the backend's applied index.
//!
//! # Reads
//!
//! A linearizable read waits for a ReadIndex round (`state::reads`, `tasks::read_index`:
//! all reads waiting at that moment share one round), then for the applier to reach that
//! index, then reads the store locally. A serializable read reads locally at once.

mod services;
mod state;
mod tasks;
pub(crate) mod types;
mod wiring;

/// The v2 API's request parsing and answers, for the fuzz targets' entry points.
#[cfg(not(madsim))]
pub(crate) use services::v2http;
/// The request checks, for the fuzz targets' entry points (`crate::fuzz`).
#[cfg(not(madsim))]
pub(crate) use services::validate;
/// A snapshot file's status and restore, for the fuzz targets' entry points.
#[cfg(not(madsim))]
pub(crate) use state::etcd_image::{
    restore as fuzz_snapshot_restore, status as fuzz_snapshot_status,
};
pub use types::config::Config;
pub use types::ids::member_id;
pub use types::json::go_string;
#[cfg(madsim)]
pub use types::observe;
pub use types::request::REMOVED;
pub use types::stream::ReceiverStream;
/// The simulator's message faults plug in at the transport seam.
#[cfg(madsim)]
pub use types::transport;
pub use wiring::backup::{
    backup_data_dir, inspect_data_dir, restore_snapshot, snapshot_status, BackupSummary,
    Inspection, RestoreSummary, SnapshotStatus,
};
/// One member in process, driven by client requests, for the fuzz targets' entry points.
#[cfg(not(madsim))]
pub(crate) use wiring::in_process::{ClientRequest, ClientResponse, InProcessMember};
pub use wiring::start::{run, run_on, StartError};

#[cfg(test)]
mod layering {
    //! The layer rule, checked on the source: a module may use its own layer and the layers
    //! below it, and the modules of the server import one another without a circle.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    const LAYERS: [&str; 5] = ["types", "state", "tasks", "services", "wiring"];

    fn rank(layer: &str) -> usize {
        LAYERS
            .iter()
            .position(|known| *known == layer)
            .unwrap_or_else(|| panic!("unknown layer {layer}"))
    }

    /// `layer::module` names a module of the server; a file's imports as such names.
    fn imports(source: &str, own_layer: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let word = |text: &str| -> String {
            text.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        for (at, _) in source.match_indices("crate::server::") {
            let rest = &source[at + "crate::server::".len()..];
            let layer = word(rest);
            if !LAYERS.contains(&layer.as_str()) {
                continue;
            }
            let module = word(rest[layer.len()..].trim_start_matches("::"));
            found.insert(format!("{layer}::{module}"));
        }
        for (at, _) in source.match_indices("super::") {
            let module = word(&source[at + "super::".len()..]);
            if !module.is_empty() && module != "super" {
                found.insert(format!("{own_layer}::{module}"));
            }
        }
        found
    }

    /// Every module of the server (`layer::module`) with the modules it imports.
    fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
        let mut graph = BTreeMap::new();
        for layer in LAYERS {
            let dir = root.join(layer);
            let entries = std::fs::read_dir(&dir).expect("layer directory");
            for entry in entries {
                let path = entry.expect("directory entry").path();
                let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                if stem == "mod" || path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let source = std::fs::read_to_string(&path).expect("source file");
                let module = format!("{layer}::{stem}");
                let mut used = imports(&source, layer);
                used.remove(&module);
                graph.insert(module, used);
            }
        }
        graph
    }

    #[test]
    fn modules_import_only_their_own_layer_and_the_layers_below() {
        let mut violations = Vec::new();
        for (module, used) in import_graph() {
            let layer = module.split("::").next().unwrap_or_default();
            for target in used {
                let target_layer = target.split("::").next().unwrap_or_default();
                if rank(target_layer) > rank(layer) {
                    violations.push(format!("{module} imports {target}"));
                }
            }
        }
        assert!(violations.is_empty(), "upward imports: {violations:#?}");
    }

    #[test]
    fn server_modules_import_one_another_without_a_circle() {
        let graph = import_graph();
        // Depth-first search; a module met again while still on the path closes a circle.
        fn visit(
            module: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(start) = path.iter().position(|m| m == module) {
                let mut circle = path[start..].to_vec();
                circle.push(module.to_string());
                return Some(circle);
            }
            if done.contains(module) {
                return None;
            }
            path.push(module.to_string());
            for next in graph.get(module).into_iter().flatten() {
                if let Some(circle) = visit(next, graph, path, done) {
                    return Some(circle);
                }
            }
            path.pop();
            done.insert(module.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            let circle = visit(module, &graph, &mut Vec::new(), &mut done);
            assert!(
                circle.is_none(),
                "import circle: {}",
                circle.unwrap_or_default().join(" → ")
            );
        }
    }

    #[test]
    fn the_checker_sees_imports_of_both_spellings() {
        let source = "use crate::server::state::store::Store;\nuse super::proposer::X;\n";
        let found = imports(source, "state");
        assert!(found.contains("state::store") && found.contains("state::proposer"));
    }

    #[test]
    fn the_network_adapters_know_nothing_of_the_server() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/net");
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("directory") {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let source = std::fs::read_to_string(&path).expect("source file");
                    assert!(
                        !source.contains("crate::server"),
                        "{} imports the server",
                        path.display()
                    );
                }
            }
        }
    }
}
