//! Valid concurrent histories from a simulated linearizable store.
//!
//! Each client issues one request at a time. A request is called, takes
//! effect at one instant between its call and its return (its linearization
//! point) against a plain `BTreeMap` store, and returns later, so clients
//! overlap freely. About one request in 200 times out: its outcome is
//! unknown, it took effect or not by a coin flip, and the client is retired
//! (a new client id continues, as Jepsen retires a process). Values are
//! unique, which is what makes a history checkable and lets tests mutate it
//! into a specific bug. Two watches record the store's events: one over every
//! key with `prev_kv`, one over the prefix `k1` without deletes, opened
//! half-way through.
//!
//! The store here is written independently of `model`, so a generated
//! history passing the checker is also a cross-check of the model.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::history::{
    Compare, CompareOperand, CompareResult, CompareTarget, Event, EventType, History, Input,
    KeyValue, Operation, Output, TxnOp, Watch, WatchFilter, WatchResponse,
};

/// A small deterministic generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

#[derive(Clone, Debug)]
struct Stored {
    value: String,
    version: i64,
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
}

impl Stored {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(self.value.clone()),
            version: Some(self.version),
            create_revision: Some(self.create_revision),
            mod_revision: Some(self.mod_revision),
            lease: (self.lease != 0).then_some(self.lease),
        }
    }
}

/// The simulated store: newest revision only, like the model.
#[derive(Default)]
struct Store {
    revision: i64,
    kvs: BTreeMap<String, Stored>,
    leases: BTreeSet<i64>,
    /// Every revision's events, in order.
    log: Vec<(i64, Vec<Event>)>,
}

impl Store {
    fn new() -> Store {
        Store {
            revision: 1,
            ..Store::default()
        }
    }

    fn range(&self, key: &str, prefix: bool) -> Vec<KeyValue> {
        if prefix {
            self.kvs
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(k, s)| s.to_kv(k))
                .collect()
        } else {
            self.kvs
                .get(key)
                .map(|s| s.to_kv(key))
                .into_iter()
                .collect()
        }
    }

    fn compare(&self, compare: &Compare) -> bool {
        let stored = self.kvs.get(&compare.key);
        let ordering = match (compare.target, &compare.value, stored) {
            (CompareTarget::Value, _, None) => return false,
            (CompareTarget::Value, CompareOperand::Str(v), Some(s)) => {
                s.value.as_str().cmp(v.as_str())
            }
            (target, CompareOperand::Int(n), s) => {
                let actual = s.map_or(0, |s| match target {
                    CompareTarget::Version => s.version,
                    CompareTarget::ModRevision => s.mod_revision,
                    CompareTarget::CreateRevision => s.create_revision,
                    CompareTarget::Lease => s.lease,
                    CompareTarget::Value => 0,
                });
                actual.cmp(n)
            }
            _ => return false,
        };
        match compare.result {
            CompareResult::Equal => ordering.is_eq(),
            CompareResult::NotEqual => ordering.is_ne(),
            CompareResult::Less => ordering.is_lt(),
            CompareResult::Greater => ordering.is_gt(),
        }
    }

    /// Applies a list of txn ops on one revision. The generator never builds
    /// txns with duplicate keys.
    fn run_ops(&mut self, ops: &[TxnOp]) -> Result<Vec<Output>, String> {
        for op in ops {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
            {
                if *lease != 0 && !self.leases.contains(lease) {
                    return Err("etcdserver: requested lease not found".into());
                }
            }
        }
        let revision = self.revision + 1;
        let mut events = Vec::new();
        let mut outputs = Vec::new();
        for op in ops {
            match op {
                TxnOp::Range(_) | TxnOp::Txn { .. } => {
                    unreachable!("the generator builds no range requests and no nested txns")
                }
                TxnOp::Get { key, prefix, .. } => {
                    outputs.push(Output {
                        kvs: Some(self.range(key, *prefix)),
                        ..Output::default()
                    });
                }
                TxnOp::Put { key, value, lease } => {
                    let prev = self.kvs.get(key).cloned();
                    let stored = Stored {
                        value: value.clone(),
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        lease: lease.unwrap_or(0),
                    };
                    events.push(Event {
                        kind: EventType::Put,
                        key: key.clone(),
                        value: Some(stored.value.clone()),
                        create_revision: stored.create_revision,
                        mod_revision: revision,
                        version: stored.version,
                        lease: (stored.lease != 0).then_some(stored.lease),
                        prev_kv: prev.map(|p| p.to_kv(key)),
                    });
                    self.kvs.insert(key.clone(), stored);
                    outputs.push(Output::default());
                }
                TxnOp::Delete { key, .. } => {
                    let removed = self.kvs.remove(key);
                    let deleted = i64::from(removed.is_some());
                    if let Some(prev) = removed {
                        events.push(delete_event(key, revision, prev.to_kv(key)));
                    }
                    outputs.push(Output {
                        deleted: Some(deleted),
                        ..Output::default()
                    });
                }
            }
        }
        if !events.is_empty() {
            self.revision = revision;
            self.log.push((revision, events));
        }
        Ok(outputs)
    }

    fn apply(&mut self, input: &Input) -> Output {
        let result = match input {
            Input::Range(_) | Input::Compact { .. } => {
                unreachable!("the generator builds no range or compact requests")
            }
            Input::Get { key, prefix, .. } => Ok(Output {
                kvs: Some(self.range(key, *prefix)),
                ..Output::default()
            }),
            Input::Put { key, value, lease } => self
                .run_ops(&[TxnOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease: *lease,
                }])
                .map(|_| Output::default()),
            Input::Delete { key, .. } => self
                .run_ops(&[TxnOp::Delete {
                    key: key.clone(),
                    range_end: None,
                    prefix: false,
                }])
                .map(|mut outs| outs.pop().unwrap_or_default()),
            Input::Txn {
                compare,
                success,
                failure,
            } => {
                let succeeded = compare.iter().all(|c| self.compare(c));
                let branch = if succeeded { success } else { failure };
                self.run_ops(branch).map(|responses| Output {
                    succeeded: Some(succeeded),
                    responses: Some(responses),
                    ..Output::default()
                })
            }
            Input::LeaseGrant { id, .. } => {
                if self.leases.insert(*id) {
                    Ok(Output::default())
                } else {
                    Err("etcdserver: lease already exists".into())
                }
            }
            Input::LeaseKeepAlive { id } => {
                if self.leases.contains(id) {
                    Ok(Output::default())
                } else {
                    Err("etcdserver: requested lease not found".into())
                }
            }
            Input::LeaseRevoke { id } => {
                if !self.leases.remove(id) {
                    Err("etcdserver: requested lease not found".into())
                } else {
                    let attached: Vec<String> = self
                        .kvs
                        .iter()
                        .filter(|(_, s)| s.lease == *id)
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !attached.is_empty() {
                        let revision = self.revision + 1;
                        let events = attached
                            .iter()
                            .map(|k| {
                                let prev = self.kvs.remove(k).expect("listed above");
                                delete_event(k, revision, prev.to_kv(k))
                            })
                            .collect();
                        self.revision = revision;
                        self.log.push((revision, events));
                    }
                    Ok(Output::default())
                }
            }
        };
        match result {
            Ok(mut output) => {
                output.revision = Some(self.revision);
                output
            }
            Err(error) => Output {
                error: Some(error),
                ..Output::default()
            },
        }
    }
}

fn delete_event(key: &str, revision: i64, prev: KeyValue) -> Event {
    Event {
        kind: EventType::Delete,
        key: key.to_string(),
        value: None,
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: None,
        prev_kv: Some(prev),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Call,
    Apply,
    Return,
}

struct Slot {
    client: u64,
    input: Option<Input>,
    call: i64,
    output: Option<Output>,
    unknown: bool,
    /// Last mod revision this client saw per key, for CAS guards.
    seen: BTreeMap<String, i64>,
}

/// One chance in this many that a request times out.
const UNKNOWN_ONE_IN: u64 = 200;

/// Generates a valid history of `ops` operations from `clients` concurrent
/// clients over `keys` keys (`k0`, `k1`, ...). Deterministic in `seed`.
pub fn generate_history(seed: u64, clients: usize, keys: usize, ops: usize) -> History {
    let mut rng = Rng::new(seed);
    let mut store = Store::new();
    let keys = keys.max(1);
    let mut slots: Vec<Slot> = (0..clients.max(1))
        .map(|c| Slot {
            client: c as u64,
            input: None,
            call: 0,
            output: None,
            unknown: false,
            seen: BTreeMap::new(),
        })
        .collect();
    let mut next_client = slots.len() as u64;
    let mut queue: BinaryHeap<Reverse<(i64, u64, Phase, usize)>> = BinaryHeap::new();
    let mut sequence = 0u64;
    for slot in 0..slots.len() {
        queue.push(Reverse((
            rng.below(100) as i64,
            sequence,
            Phase::Call,
            slot,
        )));
        sequence += 1;
    }
    let mut history = History::default();
    history.comments.push(format!(
        "generated: seed={seed} clients={clients} keys={keys} ops={ops}"
    ));
    let mut issued = 0usize;
    let mut value_counter = 0u64;
    let mut leases: Vec<i64> = Vec::new();
    let mut half_revision = None;

    while let Some(Reverse((time, _, phase, index))) = queue.pop() {
        let (next_time, next_phase) = match phase {
            Phase::Call => {
                if issued >= ops {
                    continue;
                }
                issued += 1;
                let slot = &mut slots[index];
                slot.input = Some(random_input(
                    &mut rng,
                    keys,
                    &mut value_counter,
                    &mut leases,
                    &slot.seen,
                ));
                slot.call = time;
                (time + 1 + rng.below(2000) as i64, Phase::Apply)
            }
            Phase::Apply => {
                let slot = &mut slots[index];
                slot.unknown = rng.one_in(UNKNOWN_ONE_IN);
                let apply = !slot.unknown || rng.one_in(2);
                let input = slot.input.as_ref().expect("called before applied");
                slot.output = apply.then(|| store.apply(input));
                if let Some(output) = &slot.output {
                    for kv in output.kvs.iter().flatten().chain(
                        output
                            .responses
                            .iter()
                            .flatten()
                            .flat_map(|r| r.kvs.iter().flatten()),
                    ) {
                        slot.seen
                            .insert(kv.key.clone(), kv.mod_revision.unwrap_or(0));
                    }
                }
                if issued >= ops / 2 && half_revision.is_none() {
                    half_revision = Some(store.revision);
                }
                (time + 1 + rng.below(2000) as i64, Phase::Return)
            }
            Phase::Return => {
                let slot = &mut slots[index];
                let input = slot.input.take().expect("called before returned");
                let (return_time, output) = if slot.unknown {
                    (None, None)
                } else {
                    (Some(time), slot.output.take())
                };
                history.push_operation(Operation {
                    client: slot.client,
                    call: slot.call,
                    return_time,
                    input,
                    output,
                });
                if slot.unknown {
                    slot.client = next_client;
                    slot.seen.clear();
                    next_client += 1;
                }
                (time + rng.below(200) as i64, Phase::Call)
            }
        };
        queue.push(Reverse((next_time, sequence, next_phase, index)));
        sequence += 1;
    }

    let mut all = Watch {
        client: next_client,
        watch_id: 1,
        key: String::new(),
        range_end: Some("\0".into()),
        prefix: false,
        start_revision: 1,
        filters: vec![],
        prev_kv: true,
        responses: vec![],
        canceled: false,
        compact_revision: 0,
    };
    let mut batch: Vec<Event> = Vec::new();
    for (revision, events) in &store.log {
        batch.extend(events.iter().cloned());
        if rng.one_in(2) {
            all.responses.push(WatchResponse {
                revision: *revision,
                events: std::mem::take(&mut batch),
                fragment: false,
                progress_notify: false,
            });
        }
    }
    if !batch.is_empty() {
        all.responses.push(WatchResponse {
            revision: store.revision,
            events: batch,
            fragment: false,
            progress_notify: false,
        });
    }
    all.responses.push(WatchResponse {
        revision: store.revision,
        events: vec![],
        fragment: false,
        progress_notify: true,
    });
    history.push_watch(all);

    let start = half_revision.unwrap_or(1);
    let mut prefix = Watch {
        client: next_client + 1,
        watch_id: 2,
        key: "k1".into(),
        range_end: None,
        prefix: true,
        start_revision: start,
        filters: vec![WatchFilter::Nodelete],
        prev_kv: false,
        responses: vec![],
        canceled: false,
        compact_revision: 0,
    };
    for (revision, events) in store.log.iter().filter(|(r, _)| *r >= start) {
        let wanted: Vec<Event> = events
            .iter()
            .filter(|e| e.kind == EventType::Put && e.key.starts_with("k1"))
            .map(|e| Event {
                prev_kv: None,
                ..e.clone()
            })
            .collect();
        if !wanted.is_empty() {
            prefix.responses.push(WatchResponse {
                revision: *revision,
                events: wanted,
                fragment: false,
                progress_notify: false,
            });
        }
    }
    history.push_watch(prefix);
    history
}

fn random_input(
    rng: &mut Rng,
    keys: usize,
    value_counter: &mut u64,
    leases: &mut Vec<i64>,
    seen: &BTreeMap<String, i64>,
) -> Input {
    let key = |rng: &mut Rng| format!("k{}", rng.below(keys as u64));
    let mut value = || {
        *value_counter += 1;
        format!("v{value_counter}")
    };
    match rng.below(100) {
        0..=24 => Input::Get {
            key: key(rng),
            range_end: None,
            prefix: false,
        },
        25..=29 => Input::Get {
            key: format!("k{}", rng.below(10)),
            range_end: None,
            prefix: true,
        },
        30..=59 => Input::Put {
            key: key(rng),
            value: value(),
            lease: None,
        },
        60..=67 => Input::Delete {
            key: key(rng),
            range_end: None,
            prefix: false,
        },
        68..=82 => {
            let k = key(rng);
            let expected = seen.get(&k).copied().unwrap_or(0);
            Input::Txn {
                compare: vec![Compare {
                    key: k.clone(),
                    range_end: None,
                    target: CompareTarget::ModRevision,
                    result: CompareResult::Equal,
                    value: CompareOperand::Int(expected),
                }],
                success: vec![TxnOp::Put {
                    key: k.clone(),
                    value: value(),
                    lease: None,
                }],
                failure: vec![TxnOp::Get {
                    key: k,
                    range_end: None,
                    prefix: false,
                }],
            }
        }
        83..=87 => {
            let first = rng.below(keys as u64);
            let second = (first + 1 + rng.below(keys.max(2) as u64 - 1)) % keys as u64;
            let (a, b) = (format!("k{first}"), format!("k{second}"));
            if a == b {
                return Input::Get {
                    key: a,
                    range_end: None,
                    prefix: false,
                };
            }
            Input::Txn {
                compare: vec![Compare {
                    key: a.clone(),
                    range_end: None,
                    target: CompareTarget::Version,
                    result: CompareResult::Greater,
                    value: CompareOperand::Int(0),
                }],
                success: vec![
                    TxnOp::Put {
                        key: b.clone(),
                        value: value(),
                        lease: None,
                    },
                    TxnOp::Get {
                        key: a.clone(),
                        range_end: None,
                        prefix: false,
                    },
                ],
                failure: vec![
                    TxnOp::Put {
                        key: a,
                        value: value(),
                        lease: None,
                    },
                    TxnOp::Delete {
                        key: b,
                        range_end: None,
                        prefix: false,
                    },
                ],
            }
        }
        88..=90 => {
            let id = 1000 + leases.len() as i64;
            leases.push(id);
            Input::LeaseGrant { id, ttl: 60 }
        }
        91..=95 if !leases.is_empty() => {
            let lease = leases[rng.below(leases.len() as u64) as usize];
            Input::Put {
                key: key(rng),
                value: value(),
                lease: Some(lease),
            }
        }
        96..=97 if !leases.is_empty() => Input::LeaseKeepAlive {
            id: leases[rng.below(leases.len() as u64) as usize],
        },
        98..=99 if !leases.is_empty() => Input::LeaseRevoke {
            id: leases[rng.below(leases.len() as u64) as usize],
        },
        _ => Input::Put {
            key: key(rng),
            value: value(),
            lease: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_in_seed() {
        let a = generate_history(7, 3, 5, 200);
        let b = generate_history(7, 3, 5, 200);
        let c = generate_history(8, 3, 5, 200);
        assert_eq!(a.to_jsonl(), b.to_jsonl());
        assert_ne!(a.to_jsonl(), c.to_jsonl());
        assert_eq!(a.operations.len(), 200);
    }

    #[test]
    fn clients_overlap() {
        let history = generate_history(1, 4, 10, 400);
        let overlapping = history.operations.windows(2).any(|w| {
            let (x, y) = (&w[0], &w[1]);
            x.client != y.client && y.call < x.return_time.unwrap_or(i64::MAX)
        });
        assert!(overlapping);
    }
}
