//! Batched linearizable reads (ReadIndex).
//!
//! Every read that arrives while no round is running joins the next round; one round is
//! one ReadIndex request to the Raft core, which confirms leadership with a quorum and
//! answers with the commit index at that moment. The round then waits until the applier has
//! applied that index, and releases all its reads at once. Under load, thousands of reads
//! share a round, which is why a linearizable read costs almost no more than a local one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::error::EtcdError;
use super::member::Member;
use super::node::NodeInput;

type ReadResult = Result<(), EtcdError>;

/// How long a ReadIndex request waits for its answer before it is sent again (etcd: 500 ms).
const READ_INDEX_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Default)]
pub struct ReadBatcher {
    /// Reads waiting for the next round. A `std` mutex: held only to push or swap the vector.
    waiting: Mutex<Vec<oneshot::Sender<ReadResult>>>,
    /// Wakes the round loop when the first read of a round arrives.
    wake: Notify,
    /// Rounds sent to the core and not answered yet, by request context.
    in_flight: Mutex<HashMap<Bytes, oneshot::Sender<Result<u64, EtcdError>>>>,
    next_context: AtomicU64,
}

impl ReadBatcher {
    /// Waits until a read issued now may be served from the local store.
    pub async fn barrier(&self) -> ReadResult {
        let (done, wait) = oneshot::channel();
        self.waiting
            .lock()
            .expect("read queue lock poisoned")
            .push(done);
        self.wake.notify_one();
        wait.await.unwrap_or(Err(EtcdError::Stopped))
    }

    /// The Raft task calls this for every read state of a Ready.
    pub fn confirm(&self, context: &[u8], index: u64) {
        let waiter = self
            .in_flight
            .lock()
            .expect("read rounds lock poisoned")
            .remove(context);
        if let Some(waiter) = waiter {
            let _ = waiter.send(Ok(index));
        }
    }

    /// The core refused the round (no leader known).
    pub fn fail(&self, context: &[u8], error: EtcdError) {
        let waiter = self
            .in_flight
            .lock()
            .expect("read rounds lock poisoned")
            .remove(context);
        if let Some(waiter) = waiter {
            let _ = waiter.send(Err(error));
        }
    }

    fn take_waiting(&self) -> Vec<oneshot::Sender<ReadResult>> {
        std::mem::take(&mut *self.waiting.lock().expect("read queue lock poisoned"))
    }

    /// Runs rounds for as long as the member lives.
    pub async fn run(self: Arc<Self>, member: Arc<Member>) {
        loop {
            tokio::select! {
                biased;
                _ = self.wake.notified() => {}
                _ = member.stopped() => break,
            }
            let readers = self.take_waiting();
            if readers.is_empty() {
                continue;
            }
            let result = self.round(&member).await;
            for reader in readers {
                let _ = reader.send(result.clone());
            }
        }
        for reader in self.take_waiting() {
            let _ = reader.send(Err(EtcdError::Stopped));
        }
    }

    async fn round(&self, member: &Member) -> ReadResult {
        let timeout = member.request_timeout();
        let context = Bytes::copy_from_slice(
            &self
                .next_context
                .fetch_add(1, Ordering::Relaxed)
                .to_be_bytes(),
        );
        let (done, mut answer) = oneshot::channel();
        self.in_flight
            .lock()
            .expect("read rounds lock poisoned")
            .insert(context.clone(), done);
        // The request is sent again every retry interval until answered: a request the
        // core dropped (it lost leadership, or its messages were lost) would otherwise
        // hold every read behind it until the timeout. Late answers to earlier copies
        // carry the same context and are ignored once one arrived.
        let deadline = tokio::time::Instant::now() + timeout;
        let index = loop {
            member.send_to_node(NodeInput::ReadIndex {
                context: context.clone(),
            })?;
            let now = tokio::time::Instant::now();
            let wait = READ_INDEX_RETRY.min(deadline.saturating_duration_since(now));
            match tokio::time::timeout(wait, &mut answer).await {
                Ok(Ok(result)) => break result?,
                Ok(Err(_)) => return Err(EtcdError::Stopped),
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(_) => {
                    self.in_flight
                        .lock()
                        .expect("read rounds lock poisoned")
                        .remove(&context);
                    return Err(EtcdError::Timeout);
                }
            }
        };
        match tokio::time::timeout(timeout, member.applied_reached(index)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(EtcdError::TimeoutWaitAppliedIndex),
        }
    }
}
