//! Linearizable reads waiting for a ReadIndex round, and the rounds in flight.
//!
//! Every read that arrives while no round is running joins the next round; one round is
//! one ReadIndex request to the Raft core, which confirms leadership with a quorum and
//! answers with the commit index at that moment. The round then waits until the applier has
//! applied that index, and releases all its reads at once. Under load, thousands of reads
//! share a round, which is why a linearizable read costs almost no more than a local one.
//! The rounds themselves are run by the read-index task (`tasks::read_index`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use crate::server::types::error::ServerError;

pub(crate) type ReadResult = Result<(), ServerError>;

/// The answer to one round: the index reads may be served at.
pub(crate) type RoundAnswer = oneshot::Receiver<Result<u64, ServerError>>;

#[derive(Default)]
pub(crate) struct ReadBatcher {
    /// Reads waiting for the next round. A `std` mutex: held only to push or swap the vector.
    waiting: Mutex<Vec<oneshot::Sender<ReadResult>>>,
    /// Wakes the round loop when the first read of a round arrives.
    wake: Notify,
    /// Rounds sent to the core and not answered yet, by request context.
    in_flight: Mutex<HashMap<Bytes, oneshot::Sender<Result<u64, ServerError>>>>,
    next_context: AtomicU64,
}

impl ReadBatcher {
    /// Waits until a read issued now may be served from the local store.
    pub(crate) async fn barrier(&self) -> ReadResult {
        let (done, wait) = oneshot::channel();
        self.waiting
            .lock()
            .expect("read queue lock poisoned")
            .push(done);
        self.wake.notify_one();
        wait.await.unwrap_or(Err(ServerError::Stopped))
    }

    /// The Raft task calls this for every read state of a Ready.
    pub(crate) fn confirm(&self, context: &[u8], index: u64) {
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
    pub(crate) fn fail(&self, context: &[u8], error: ServerError) {
        let waiter = self
            .in_flight
            .lock()
            .expect("read rounds lock poisoned")
            .remove(context);
        if let Some(waiter) = waiter {
            let _ = waiter.send(Err(error));
        }
    }

    /// Returns once a read arrived since the last call (or just before it).
    pub(crate) async fn readers_arrived(&self) {
        self.wake.notified().await
    }

    /// The reads waiting now: they join the round about to start.
    pub(crate) fn take_waiting(&self) -> Vec<oneshot::Sender<ReadResult>> {
        std::mem::take(&mut *self.waiting.lock().expect("read queue lock poisoned"))
    }

    /// Opens a round: its request context, and where its answer arrives.
    pub(crate) fn open_round(&self) -> (Bytes, RoundAnswer) {
        let context = Bytes::copy_from_slice(
            &self
                .next_context
                .fetch_add(1, Ordering::Relaxed)
                .to_be_bytes(),
        );
        let (done, answer) = oneshot::channel();
        self.in_flight
            .lock()
            .expect("read rounds lock poisoned")
            .insert(context.clone(), done);
        (context, answer)
    }

    /// Gives up on a round that was never answered.
    pub(crate) fn abandon_round(&self, context: &Bytes) {
        self.in_flight
            .lock()
            .expect("read rounds lock poisoned")
            .remove(context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_answered_once_by_its_context() {
        let reads = ReadBatcher::default();
        let (first, mut first_answer) = reads.open_round();
        let (second, mut second_answer) = reads.open_round();
        assert_ne!(first, second);
        reads.confirm(&second, 7);
        reads.confirm(&second, 9);
        assert_eq!(second_answer.try_recv().unwrap(), Ok(7));
        assert!(first_answer.try_recv().is_err());
        reads.fail(&first, ServerError::NoLeader);
        assert_eq!(first_answer.try_recv().unwrap(), Err(ServerError::NoLeader));
    }

    #[test]
    fn an_abandoned_round_ignores_late_answers() {
        let reads = ReadBatcher::default();
        let (context, mut answer) = reads.open_round();
        reads.abandon_round(&context);
        reads.confirm(&context, 3);
        assert!(answer.try_recv().is_err());
    }
}
