//! `lock` and `elect`, built on keys the way clientv3's concurrency package builds them,
//! so that oxctl and etcdctl (and any etcd client's mutex or election) wait for each
//! other: a session is a lease kept alive; a contender puts `NAME/<lease in hex>` with
//! that lease, and holds the lock (or leads) once every key under `NAME/` created before
//! its own is gone. Giving up deletes the key; a lost session loses it with the lease.

use std::time::Duration;

use clap::Args;
use oxcd::proto::etcdserverpb as pb;
use oxcd::proto::etcdserverpb::{compare, range_request, request_op, response_op};
use oxcd::proto::mvccpb::KeyValue;

use crate::client::Client;
use crate::kv::prefix_end;
use crate::{block_on, Failure, Global};

/// A lease kept alive in the background for as long as the session lives; the task ends
/// when the lease is gone.
async fn session(client: &Client, ttl: i64) -> Result<(i64, tokio::task::JoinHandle<()>), Failure> {
    let lease = client
        .lease()
        .lease_grant(client.request(pb::LeaseGrantRequest { ttl, id: 0 }))
        .await
        .map_err(Failure::status)?
        .into_inner()
        .id;
    let keeper = client.clone();
    let task = tokio::spawn(async move {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let Ok(stream) = keeper
            .lease()
            .lease_keep_alive(keeper.stream_request(oxcd::server::ReceiverStream(receiver)))
            .await
        else {
            return;
        };
        let mut stream = stream.into_inner();
        loop {
            if sender
                .send(pb::LeaseKeepAliveRequest { id: lease })
                .await
                .is_err()
            {
                return;
            }
            match stream.message().await {
                Ok(Some(response)) if response.ttl > 0 => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_secs((ttl as u64 / 3).max(1))).await;
        }
    });
    Ok((lease, task))
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            lease,
            ..Default::default()
        })),
    }
}

fn range_op(request: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(request)),
    }
}

/// The keys under `prefix`, oldest first (`first`) or newest first, one of them.
fn by_create(prefix: &[u8], first: bool, max_create_revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec().into(),
        range_end: prefix_end(prefix).into(),
        limit: 1,
        sort_target: range_request::SortTarget::Create as i32,
        sort_order: if first {
            range_request::SortOrder::Ascend
        } else {
            range_request::SortOrder::Descend
        } as i32,
        max_create_revision,
        ..Default::default()
    }
}

/// A contender's key: made (or found, after a retry) and its create revision.
struct Contender {
    key: Vec<u8>,
    create_revision: i64,
}

/// Puts `prefix<lease in hex>` = `value` unless it exists, then waits until every older
/// key under `prefix` is gone.
async fn contend(
    client: &Client,
    prefix: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<Contender, Failure> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.clone().into(),
            range_end: Default::default(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
        }],
        success: vec![put_op(&key, value, lease)],
        failure: vec![range_op(pb::RangeRequest {
            key: key.clone().into(),
            ..Default::default()
        })],
    };
    let response = client
        .kv()
        .txn(client.request(txn))
        .await
        .map_err(Failure::status)?
        .into_inner();
    let create_revision = if response.succeeded {
        response.header.as_ref().map_or(0, |h| h.revision)
    } else {
        match response.responses.first().and_then(|r| r.response.as_ref()) {
            Some(response_op::Response::ResponseRange(range)) => {
                range.kvs.first().map_or(0, |kv| kv.create_revision)
            }
            _ => 0,
        }
    };
    // Wait for each older contender, newest first, to go.
    loop {
        let older = client
            .kv()
            .range(client.request(by_create(prefix, false, create_revision - 1)))
            .await
            .map_err(Failure::status)?
            .into_inner();
        let Some(last) = older.kvs.first() else {
            return Ok(Contender {
                key,
                create_revision,
            });
        };
        let revision = older.header.as_ref().map_or(0, |h| h.revision);
        wait_deleted(client, &last.key, revision + 1).await?;
    }
}

/// Returns once `key` is deleted at or after `from`.
async fn wait_deleted(client: &Client, key: &[u8], from: i64) -> Result<(), Failure> {
    let (_sender, mut stream) = client
        .open_watch(pb::WatchCreateRequest {
            key: key.to_vec().into(),
            start_revision: from,
            ..Default::default()
        })
        .await?;
    while let Some(response) = stream.message().await.map_err(Failure::status)? {
        if response.canceled {
            return Ok(());
        }
        if response
            .events
            .iter()
            .any(|e| e.r#type == oxcd::proto::mvccpb::event::EventType::Delete as i32)
        {
            return Ok(());
        }
    }
    Err(Failure::error("the watch closed"))
}

async fn delete(client: &Client, key: &[u8]) -> Result<(), Failure> {
    client
        .kv()
        .delete_range(client.request(pb::DeleteRangeRequest {
            key: key.to_vec().into(),
            ..Default::default()
        }))
        .await
        .map_err(Failure::status)?;
    Ok(())
}

async fn revoke(client: &Client, lease: i64) {
    let _ = client
        .lease()
        .lease_revoke(client.request(pb::LeaseRevokeRequest { id: lease }))
        .await;
}

#[derive(Args)]
pub struct LockArgs {
    /// The lock's name, then an optional command to run while holding it.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
    /// Timeout for the session, in seconds.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
}

pub fn lock(global: &Global, args: &LockArgs) -> Result<(), Failure> {
    let printer = global.printer();
    let mut prefix = args.args[0].clone().into_bytes();
    prefix.push(b'/');
    let command = args.args[1..].to_vec();
    block_on(async {
        let client = Client::connect(global).await?;
        let (lease, mut keeper) = session(&client, args.ttl).await?;
        let held = tokio::select! {
            held = contend(&client, &prefix, lease, b"") => held?,
            _ = interrupted() => {
                revoke(&client, lease).await;
                return Ok(());
            }
        };
        if let Some((program, rest)) = command.split_first() {
            let mut child = std::process::Command::new(program);
            child
                .args(rest)
                .env("ETCD_LOCK_KEY", String::from_utf8_lossy(&held.key).as_ref())
                .env("ETCD_LOCK_REV", held.create_revision.to_string());
            let status = tokio::task::spawn_blocking(move || child.status())
                .await
                .map_err(|error| Failure::error(error.to_string()))?;
            delete(&client, &held.key).await?;
            keeper.abort();
            revoke(&client, lease).await;
            return match status {
                Ok(status) if status.success() => Ok(()),
                Ok(status) => Err(Failure::error(format!(
                    "exit status {}",
                    status.code().unwrap_or(1)
                ))),
                Err(error) => Err(Failure::error(format!("exec: {program:?}: {error}"))),
            };
        }
        let current = client
            .kv()
            .range(client.request(pb::RangeRequest {
                key: held.key.clone().into(),
                ..Default::default()
            }))
            .await
            .map_err(Failure::status)?
            .into_inner();
        if current.kvs.is_empty() {
            return Err(Failure::error("lock lost on init"));
        }
        printer.get(&current)?;
        tokio::select! {
            _ = interrupted() => {
                keeper.abort();
                delete(&client, &held.key).await?;
                revoke(&client, lease).await;
                Ok(())
            }
            _ = &mut keeper => Err(Failure::error("session expired")),
        }
    })
}

#[derive(Args)]
pub struct ElectArgs {
    /// The election's name, and the proposal to campaign with.
    #[arg(required = true, num_args = 1..=2)]
    args: Vec<String>,
    /// Observe the election's leaders instead of campaigning.
    #[arg(short = 'l', long)]
    listen: bool,
}

/// Prints each new leader of the election under `prefix` until interrupted.
async fn observe(
    client: &Client,
    prefix: &[u8],
    printer: &crate::print::Printer,
) -> Result<(), Failure> {
    let mut shown: Option<KeyValue> = None;
    loop {
        let leader = client
            .kv()
            .range(client.request(by_create(prefix, true, 0)))
            .await
            .map_err(Failure::status)?
            .into_inner();
        let revision = leader.header.as_ref().map_or(0, |h| h.revision);
        if let Some(kv) = leader.kvs.first() {
            let same = shown
                .as_ref()
                .is_some_and(|s| s.key == kv.key && s.mod_revision == kv.mod_revision);
            if !same {
                printer.get(&leader)?;
                shown = Some(kv.clone());
            }
        }
        // Until anything under the prefix changes.
        let (_sender, mut stream) = client
            .open_watch(pb::WatchCreateRequest {
                key: prefix.to_vec().into(),
                range_end: prefix_end(prefix).into(),
                start_revision: revision + 1,
                ..Default::default()
            })
            .await?;
        loop {
            match stream.message().await.map_err(Failure::status)? {
                Some(response) if response.events.is_empty() && !response.canceled => continue,
                Some(_) => break,
                None => return Err(Failure::error("the watch closed")),
            }
        }
    }
}

pub fn elect(global: &Global, args: &ElectArgs) -> Result<(), Failure> {
    let mut prefix = args.args[0].clone().into_bytes();
    prefix.push(b'/');
    let proposal = args.args.get(1).cloned();
    match (&proposal, args.listen) {
        (None, false) => return Err(Failure::bad_args("no proposal argument but -l not set")),
        (Some(_), true) => return Err(Failure::bad_args("proposal given but -l is set")),
        _ => {}
    }
    let printer = global.printer();
    block_on(async {
        let client = Client::connect(global).await?;
        let Some(proposal) = proposal else {
            return tokio::select! {
                result = observe(&client, &prefix, &printer) => result,
                _ = interrupted() => Ok(()),
            };
        };
        let (lease, mut keeper) = session(&client, 60).await?;
        let leader = tokio::select! {
            held = contend(&client, &prefix, lease, proposal.as_bytes()) => held?,
            _ = interrupted() => {
                revoke(&client, lease).await;
                return Ok(());
            }
        };
        let current = client
            .kv()
            .range(client.request(pb::RangeRequest {
                key: leader.key.clone().into(),
                ..Default::default()
            }))
            .await
            .map_err(Failure::status)?
            .into_inner();
        printer.get(&current)?;
        tokio::select! {
            _ = interrupted() => {
                keeper.abort();
                // Resign: the key goes, and the next contender leads.
                delete(&client, &leader.key).await?;
                revoke(&client, lease).await;
                Ok(())
            }
            _ = &mut keeper => Err(Failure::error("session expired")),
        }
    })
}
