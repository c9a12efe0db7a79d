//! The checks at the end of a run: the checker's verdict on the history, members that
//! agree, a cluster that serves after the heal, and a run that was not vacuous. Each
//! returns an error naming what failed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use jepsen_lite::history::KeyValue;
use jepsen_lite::{check, CheckOptions, CheckResult, History, Input, Outcome as Verdict};
use oxcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use oxcd::proto::etcdserverpb::{HashKvRequest, StatusRequest};

use crate::record::Recorder;
use crate::workload::{connect, read, within, write};

/// Why the checker did not pass a history: its words, and its result when it judged the
/// history at all (for the HTML report).
#[derive(Debug)]
pub struct Rejection {
    pub message: String,
    pub result: Option<CheckResult>,
}

/// The checker's verdict, through the library: `Ok` only when it is ok; a violation or
/// an unknown (the budget ran out) is an error, with the checker's words.
pub fn verdict(history: &History, timeout: Duration) -> Result<CheckResult, Box<Rejection>> {
    let options = CheckOptions {
        timeout: Some(timeout),
        ..CheckOptions::default()
    };
    match check(history, &options) {
        Ok(result) if result.outcome() == Verdict::Ok => Ok(result),
        Ok(result) => Err(Box::new(Rejection {
            message: format!("jepsen-lite: {result}"),
            result: Some(result),
        })),
        Err(error) => Err(Box::new(Rejection {
            message: format!("jepsen-lite refused the history: {error}"),
            result: None,
        })),
    }
}

/// Makes one read of the history stale, as a broken server would: a read of one key that
/// returned after a later acknowledged put of that key is made to return the put before.
/// Returns the index of the read changed, or `None` when the history has no such read.
pub fn plant_stale_read(history: &mut History) -> Option<usize> {
    // Acknowledged puts per key: (return time, revision, value), in revision order.
    let mut puts: std::collections::BTreeMap<String, Vec<(i64, i64, String)>> = Default::default();
    for op in &history.operations {
        if let (Input::Put { key, value, .. }, Some(ret), Some(output)) =
            (&op.input, op.return_time, &op.output)
        {
            if let (Some(revision), None) = (output.revision, &output.error) {
                puts.entry(key.clone())
                    .or_default()
                    .push((ret, revision, value.clone()));
            }
        }
    }
    for list in puts.values_mut() {
        list.sort_by_key(|&(_, revision, _)| revision);
    }
    for (index, op) in history.operations.iter_mut().enumerate() {
        let Input::Get {
            key,
            range_end: None,
            prefix: false,
        } = &op.input
        else {
            continue;
        };
        let (Some(list), Some(output)) = (puts.get(key), op.output.as_mut()) else {
            continue;
        };
        if output.error.is_some() {
            continue;
        }
        // Two puts of the key, the later one acknowledged before this read was called.
        let Some(pair) = list.windows(2).rev().find(|pair| pair[1].0 < op.call) else {
            continue;
        };
        let (_, old_revision, old_value) = &pair[0];
        output.kvs = Some(vec![KeyValue {
            key: key.clone(),
            value: Some(old_value.clone()),
            version: None,
            create_revision: None,
            mod_revision: Some(*old_revision),
            lease: None,
        }]);
        output.count = Some(1);
        output.more = Some(false);
        return Some(index);
    }
    None
}

/// Waits until every member answers a linearizable read (not recorded: it is a probe).
pub async fn wait_healthy(endpoints: &[SocketAddr], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<usize> = (0..endpoints.len()).collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for &index in &pending {
            let healthy = match connect(endpoints[index]).await {
                Ok(channel) => within(
                    oxcd::proto::etcdserverpb::kv_client::KvClient::new(channel).range(
                        oxcd::proto::etcdserverpb::RangeRequest {
                            key: b"health".to_vec().into(),
                            ..Default::default()
                        },
                    ),
                )
                .await
                .is_ok(),
                Err(_) => false,
            };
            if !healthy {
                still.push(index);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "members {pending:?} did not serve a linearizable read within {limit:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The member (index) the members say leads, if they agree on one that is among them.
pub async fn leader(endpoints: &[SocketAddr]) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leaders = Vec::new();
    for &endpoint in endpoints {
        let status = match connect(endpoint).await {
            Ok(channel) => within(MaintenanceClient::new(channel).status(StatusRequest {}))
                .await
                .ok(),
            Err(_) => None,
        };
        ids.push(status.as_ref().and_then(|s| s.header.map(|h| h.member_id)));
        if let Some(status) = status.filter(|s| s.leader != 0) {
            leaders.push(status.leader);
        }
    }
    leaders.sort_unstable();
    // The leader most members name.
    let mut best: Option<(u64, usize)> = None;
    for chunk in leaders.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, count)| chunk.len() > count) {
            best = Some((chunk[0], chunk.len()));
        }
    }
    let (leader, _) = best?;
    ids.iter().position(|id| *id == Some(leader))
}

/// After the heal: a write through some member, then a linearizable read of it and of
/// every key through each member, all recorded in the history (so the checker holds them
/// to every acknowledged write). Returns the write's revision.
pub async fn write_then_read_everywhere(
    recorder: &Recorder,
    endpoints: &[SocketAddr],
    limit: Duration,
) -> Result<i64, String> {
    let deadline = Instant::now() + limit;
    let mut client = recorder.new_client();
    let value = format!("final-{}", recorder.now());
    let mut revision = None;
    let mut attempt = 0usize;
    while revision.is_none() {
        if Instant::now() > deadline {
            return Err(format!(
                "no write was acknowledged within {limit:?} after the heal"
            ));
        }
        let member = attempt % endpoints.len();
        attempt += 1;
        let Ok(channel) = connect(endpoints[member]).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        match write(recorder, &mut client, member, channel, "final", &value).await {
            Ok(output) => revision = output.revision,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let revision = revision.expect("set above");
    for (member, &endpoint) in endpoints.iter().enumerate() {
        let mut client = recorder.new_client();
        let channel = connect(endpoint)
            .await
            .map_err(|error| format!("m{member} after the heal: {error}"))?;
        let output = read(
            recorder,
            &mut client,
            member,
            channel.clone(),
            "final",
            false,
        )
        .await
        .map_err(|outcome| format!("m{member}: linearizable read after the heal: {outcome:?}"))?;
        let got = output
            .kvs
            .as_ref()
            .and_then(|kvs| kvs.first())
            .and_then(|kv| kv.value.clone());
        if got.as_deref() != Some(value.as_str()) {
            return Err(format!(
                "m{member}: a linearizable read after the heal returned {got:?}, not the write {value:?} acknowledged at revision {revision}"
            ));
        }
        read(recorder, &mut client, member, channel, "k", true)
            .await
            .map_err(|outcome| {
                format!("m{member}: reading every key after the heal: {outcome:?}")
            })?;
    }
    Ok(revision)
}

/// Every member's `HashKV` at `revision`: all must be equal.
pub async fn hash_kv_agree(endpoints: &[SocketAddr], revision: i64) -> Result<Vec<u32>, String> {
    let mut hashes = Vec::new();
    for (member, &endpoint) in endpoints.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(15);
        let hash = loop {
            let answer = match connect(endpoint).await {
                Ok(channel) => {
                    within(MaintenanceClient::new(channel).hash_kv(HashKvRequest { revision }))
                        .await
                        .map_err(|outcome| format!("{outcome:?}"))
                }
                Err(error) => Err(error),
            };
            match answer {
                Ok(response) => break (response.hash, response.compact_revision),
                Err(error) if Instant::now() > deadline => {
                    return Err(format!("m{member}: HashKV at revision {revision}: {error}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        hashes.push(hash);
    }
    if hashes.windows(2).all(|pair| pair[0] == pair[1]) {
        Ok(hashes.iter().map(|&(hash, _)| hash).collect())
    } else {
        Err(format!(
            "members disagree at revision {revision}: (hash, compact revision) per member {hashes:?}"
        ))
    }
}

/// What a run must have done to count.
pub struct Vacuity {
    pub acknowledged: u64,
    pub acknowledged_min: u64,
    pub faults_injected: usize,
    pub faults_planned: usize,
    pub watch_events: u64,
}

pub fn not_vacuous(v: &Vacuity) -> Result<(), String> {
    if v.acknowledged < v.acknowledged_min {
        return Err(format!(
            "vacuous run: {} acknowledged operations, fewer than {}",
            v.acknowledged, v.acknowledged_min
        ));
    }
    if v.faults_injected < v.faults_planned {
        return Err(format!(
            "vacuous run: {} of {} planned faults injected",
            v.faults_injected, v.faults_planned
        ));
    }
    if v.watch_events == 0 {
        return Err("vacuous run: the watches saw no event".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jepsen_lite::{Operation, Output};

    fn put(call: i64, ret: i64, key: &str, value: &str, revision: i64) -> Operation {
        Operation {
            client: call as u64,
            call,
            return_time: Some(ret),
            input: Input::Put {
                key: key.into(),
                value: value.into(),
                lease: None,
            },
            output: Some(Output {
                revision: Some(revision),
                ..Output::default()
            }),
        }
    }

    fn get(
        call: i64,
        ret: i64,
        key: &str,
        value: &str,
        mod_revision: i64,
        header: i64,
    ) -> Operation {
        Operation {
            client: 100 + call as u64,
            call,
            return_time: Some(ret),
            input: Input::Get {
                key: key.into(),
                range_end: None,
                prefix: false,
            },
            output: Some(Output {
                revision: Some(header),
                kvs: Some(vec![KeyValue {
                    key: key.into(),
                    value: Some(value.into()),
                    version: None,
                    create_revision: None,
                    mod_revision: Some(mod_revision),
                    lease: None,
                }]),
                count: Some(1),
                more: Some(false),
                ..Output::default()
            }),
        }
    }

    fn history(ops: Vec<Operation>) -> History {
        let mut history = History::default();
        for op in ops {
            history.push_operation(op);
        }
        history
    }

    fn timeout() -> Duration {
        Duration::from_secs(10)
    }

    #[test]
    fn a_fresh_read_passes() {
        let good = history(vec![
            put(0, 10, "k0", "a", 2),
            put(20, 30, "k0", "b", 3),
            get(40, 50, "k0", "b", 3, 3),
        ]);
        assert!(verdict(&good, timeout()).is_ok());
    }

    #[test]
    fn a_stale_read_is_a_violation() {
        let stale = history(vec![
            put(0, 10, "k0", "a", 2),
            put(20, 30, "k0", "b", 3),
            get(40, 50, "k0", "a", 2, 3),
        ]);
        let rejection = verdict(&stale, timeout()).expect_err("a stale read passed");
        let (message, result) = (rejection.message, rejection.result);
        assert!(message.contains("VIOLATION"), "{message}");
        assert_eq!(result.unwrap().outcome(), Verdict::Violation);
    }

    #[test]
    fn the_planted_stale_read_turns_a_good_history_bad() {
        let mut planted = history(vec![
            put(0, 10, "k0", "a", 2),
            put(20, 30, "k0", "b", 3),
            // Concurrent with the second put: not a candidate.
            get(25, 35, "k0", "a", 2, 2),
            get(40, 50, "k0", "b", 3, 3),
        ]);
        assert!(verdict(&planted, timeout()).is_ok());
        assert_eq!(plant_stale_read(&mut planted), Some(3));
        assert!(verdict(&planted, timeout()).is_err());
    }

    #[test]
    fn nothing_to_plant_without_two_puts() {
        let mut one = history(vec![put(0, 10, "k0", "a", 2), get(40, 50, "k0", "a", 2, 2)]);
        assert_eq!(plant_stale_read(&mut one), None);
    }

    #[test]
    fn vacuity() {
        let mut v = Vacuity {
            acknowledged: 500,
            acknowledged_min: 100,
            faults_injected: 3,
            faults_planned: 3,
            watch_events: 10,
        };
        assert!(not_vacuous(&v).is_ok());
        v.faults_injected = 2;
        assert!(not_vacuous(&v).unwrap_err().contains("planned faults"));
        v.faults_injected = 3;
        v.acknowledged = 99;
        assert!(not_vacuous(&v).unwrap_err().contains("acknowledged"));
        v.acknowledged = 500;
        v.watch_events = 0;
        assert!(not_vacuous(&v).is_err());
    }
}
