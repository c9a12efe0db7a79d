//! Proposal throughput through a 3-node in-memory cluster: the consensus core alone, with
//! every Ready handled as the contract says (persist to the in-memory storage, send, apply).

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oxcd::raft::{Config, MemStorage, Message, RawNode, Role};

struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    network: VecDeque<Message>,
    applied: u64,
}

impl Cluster {
    fn new() -> Self {
        let ids = [1u64, 2, 3];
        let nodes = ids
            .iter()
            .map(|&id| {
                let config = Config {
                    max_inflight_msgs: 256,
                    ..Config::new(id)
                };
                RawNode::new(&config, MemStorage::new_with_voters(&ids), 7).unwrap()
            })
            .collect();
        let mut cluster = Self {
            nodes,
            network: VecDeque::new(),
            applied: 0,
        };
        cluster.pump();
        cluster.nodes[0].campaign().unwrap();
        cluster.pump();
        assert_eq!(cluster.nodes[0].status().role, Role::Leader);
        cluster
    }

    fn handle_ready(&mut self, index: usize) {
        while self.nodes[index].has_ready() {
            let mut ready = self.nodes[index].ready();
            self.network.extend(ready.messages.drain(..));
            let node = &mut self.nodes[index];
            if let Some(hard_state) = ready.hard_state {
                node.storage().set_hard_state(hard_state);
            }
            node.storage().append(&ready.entries).unwrap();
            self.network.extend(ready.persisted_messages.drain(..));
            if index == 0 {
                self.applied += ready.committed_entries.len() as u64;
            }
            node.advance(ready);
        }
    }

    fn pump(&mut self) {
        loop {
            for index in 0..self.nodes.len() {
                self.handle_ready(index);
            }
            if self.network.is_empty() {
                return;
            }
            while let Some(message) = self.network.pop_front() {
                let to = message.to as usize - 1;
                let _ = self.nodes[to].step(message);
            }
        }
    }
}

fn proposals(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_3_nodes");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("propose_commit", batch),
            &batch,
            |b, &batch| {
                let mut cluster = Cluster::new();
                let payload = Bytes::from(vec![7u8; 256]);
                b.iter(|| {
                    for _ in 0..batch {
                        cluster.nodes[0].propose(payload.clone()).unwrap();
                    }
                    cluster.pump();
                });
                assert!(cluster.applied > 0);
            },
        );
    }
    group.finish();
}

criterion_group!(benches, proposals);
criterion_main!(benches);
