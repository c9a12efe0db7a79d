//! A one-member oxcd inside the simulator: clients write through gRPC while the member is
//! crashed (power loss on its simulated disk) and restarted; afterwards every write that was
//! acknowledged must be readable with its value. Each seed chooses the number of writers,
//! when the crashes happen and how the disk tears its last unsynced sector.

#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use madsim::rand::{thread_rng, Rng};
use oxcd::proto::etcdserverpb::{PutRequest, RangeRequest};
use oxcd_sim::harness::{kv_client, run_seed, SimMember};

#[test]
fn acknowledged_writes_survive_crashes() {
    oxcd_sim::for_each_seed(
        oxcd_sim::seeds_from_env(),
        oxcd_sim::sweep_threads(),
        |seed| run_seed("single_member", seed, scenario),
    );
}

/// A run is a function of its seed: a sample of seeds, each run twice, must end the same
/// way (same acknowledged writes, same stored data).
#[test]
fn a_seed_replays_identically() {
    for seed in oxcd_sim::seeds_from_env().take(oxcd_sim::determinism_sample()) {
        let first = run_seed("single_member", seed, scenario);
        let second = run_seed("single_member", seed, scenario);
        assert_eq!(first, second, "seed {seed} is not deterministic");
    }
}

/// Returns a summary of the run's outcome: every acknowledged write and what was stored.
async fn scenario(seed: u64) -> String {
    let member = SimMember::start_single(1, seed);
    let address = member.client_address();
    let writers = thread_rng().gen_range(1..=4);
    let crashes = thread_rng().gen_range(1..=3);
    // key → value of every acknowledged put; a std mutex, never held across an await.
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();

    let client_node = madsim::runtime::Handle::current()
        .create_node()
        .name("client")
        .ip([10, 0, 0, 100].into())
        .build();
    let writes = acknowledged.clone();
    let load = client_node.spawn(async move {
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let writes = writes.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = kv_client(address).await;
                for i in 0..u32::MAX {
                    let key = format!("w{writer}/k{i:05}");
                    let value = format!("v{seed}-{writer}-{i}");
                    let request = PutRequest {
                        key: Bytes::from(key.clone()),
                        value: Bytes::from(value.clone()),
                        ..Default::default()
                    };
                    let put = tokio::time::timeout(Duration::from_secs(3), client.put(request));
                    match put.await {
                        Ok(Ok(_)) => {
                            writes.lock().unwrap().insert(key, value);
                        }
                        failed => {
                            tracing::debug!(?failed, "put failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            client = kv_client(address).await;
                        }
                    }
                }
            }));
        }
        tasks
    });

    for _ in 0..crashes {
        let delay = thread_rng().gen_range(300..3_000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        member.crash();
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(10..500))).await;
        member.restart();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for task in load.await.expect("load started") {
        task.abort();
    }

    let expected = acknowledged.lock().unwrap().clone();
    assert!(
        expected.len() > 20,
        "seed {seed}: only {} writes were acknowledged",
        expected.len()
    );
    let check = client_node.spawn(async move {
        let mut client = kv_client(address).await;
        let range = RangeRequest {
            key: Bytes::from_static(b"w"),
            range_end: Bytes::from_static(b"x"),
            ..Default::default()
        };
        loop {
            match client.range(range.clone()).await {
                Ok(response) => return response.into_inner().kvs,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    let stored: BTreeMap<String, String> = check
        .await
        .expect("check ran")
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    for (key, value) in &expected {
        assert_eq!(
            stored.get(key),
            Some(value),
            "seed {seed}: acknowledged write {key}={value} is missing after crashes"
        );
    }
    println!(
        "seed {seed}: {} acknowledged writes survived {crashes} crashes ({writers} writers)",
        expected.len()
    );
    format!("{expected:?} / {stored:?}")
}
