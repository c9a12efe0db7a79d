//! The proposer: request ids, the waiters of proposals in flight, and the channel to the
//! Raft task (etcd's `reqIDGen`, `wait.Wait` and `raftNode.Propose`).
//!
//! A proposal is an `InternalRequest` envelope with an id unique across restarts. The
//! waiter is registered under that id before the envelope goes to the Raft task; the
//! applier completes it with the applied result, on the member that proposed the entry
//! only. A proposal that times out, or that the core refuses, forgets its waiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::proto::oxcdpb::{internal_request::Request, AuthHeader, InternalRequest};
use crate::proto::oxcdpb::{ConfChangeContext, Member};
use crate::raft::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use crate::server::types::error::ServerError;
use crate::server::types::metrics::Metrics;
use crate::server::types::request::{
    Applied, ApplyResult, FromApplied, NodeInput, PROPOSALS_PENDING_MAX,
};

/// Proposals waiting for their entry to be applied, by request id.
#[derive(Default)]
pub(crate) struct Waiters {
    /// A `std` mutex: held only to insert or remove one sender, never across an await.
    pending: Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>,
}

impl Waiters {
    fn register(&self, id: u64) -> oneshot::Receiver<ApplyResult> {
        let (done, wait) = oneshot::channel();
        let previous = self
            .pending
            .lock()
            .expect("waiters lock poisoned")
            .insert(id, done);
        assert!(previous.is_none(), "request id {id:#x} registered twice");
        wait
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .expect("waiters lock poisoned")
            .remove(&id);
    }

    /// Completes the waiter of `id`, if this member proposed it and the client still waits.
    pub(crate) fn complete(&self, id: u64, result: ApplyResult) {
        if id == 0 {
            return;
        }
        let waiter = self
            .pending
            .lock()
            .expect("waiters lock poisoned")
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.lock().expect("waiters lock poisoned").len()
    }
}

pub(crate) struct Proposer {
    /// To the Raft task. Bounded: a full queue makes handlers wait, which is the back-pressure
    /// that keeps a flood of clients from growing memory without limit.
    node: mpsc::Sender<NodeInput>,
    /// The high 16 bits of every request id are the member id's low bits; the rest counts up
    /// from a start derived from the clock, so ids stay unique across restarts.
    next_request_id: AtomicU64,
    pub(crate) waiters: Waiters,
    /// Encoded proposals larger than this are refused (`--max-request-bytes`).
    request_bytes_max: u64,
    /// How long a proposal may take from submission to applied.
    timeout: Duration,
    /// Counts the proposals that failed (refused, lost, timed out).
    metrics: Arc<Metrics>,
}

impl Proposer {
    pub(crate) fn new(
        node: mpsc::Sender<NodeInput>,
        member_id: u64,
        request_id_seed: u64,
        request_bytes_max: u64,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Proposer {
        let request_id_start =
            ((member_id & 0xffff) << 48) | ((request_id_seed & 0xff_ffff_ffff) << 8);
        Proposer {
            node,
            next_request_id: AtomicU64::new(request_id_start),
            waiters: Waiters::default(),
            request_bytes_max,
            timeout,
            metrics,
        }
    }

    /// Proposes a write and waits until it is applied; answers the response of the kind the
    /// caller expects and the revision right after the apply.
    pub(crate) async fn propose_as<T: FromApplied>(
        &self,
        request: Request,
    ) -> Result<(T, i64), ServerError> {
        let (applied, revision) = self.propose(request).await?;
        match T::from_applied(applied) {
            Some(response) => Ok((response, revision)),
            None => Err(wrong_kind(std::any::type_name::<T>())),
        }
    }

    /// Proposes a write on behalf of the user `header` names and waits until it is applied;
    /// the applier checks that user's permissions.
    pub(crate) async fn propose_for<T: FromApplied>(
        &self,
        request: Request,
        header: Option<AuthHeader>,
    ) -> Result<(T, i64), ServerError> {
        let (applied, revision) = self.propose_with(request, header).await?;
        match T::from_applied(applied) {
            Some(response) => Ok((response, revision)),
            None => Err(wrong_kind(std::any::type_name::<T>())),
        }
    }

    /// Proposes a write and waits until it is applied.
    pub(crate) async fn propose(&self, request: Request) -> Result<(Applied, i64), ServerError> {
        self.propose_with(request, None).await
    }

    /// Proposes a write only while this member leads in `term`, and waits until it is
    /// applied: a member that is no longer that term's leader refuses it with
    /// `LeaderChanged` instead of forwarding it (see `NodeInput::Propose`).
    pub(crate) async fn propose_leading_in(
        &self,
        request: Request,
        term: u64,
    ) -> Result<(Applied, i64), ServerError> {
        self.propose_pinned(request, None, Some(term), self.timeout)
            .await
    }

    /// Proposes a write and waits until it is applied, or `timeout` (shorter than the
    /// request timeout) has passed.
    pub(crate) async fn propose_within(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<(Applied, i64), ServerError> {
        self.propose_pinned(request, None, None, timeout.min(self.timeout))
            .await
    }

    async fn propose_with(
        &self,
        request: Request,
        header: Option<AuthHeader>,
    ) -> Result<(Applied, i64), ServerError> {
        self.propose_pinned(request, header, None, self.timeout)
            .await
    }

    async fn propose_pinned(
        &self,
        request: Request,
        header: Option<AuthHeader>,
        leading_in: Option<u64>,
        timeout: Duration,
    ) -> Result<(Applied, i64), ServerError> {
        if self.waiters.len() >= PROPOSALS_PENDING_MAX {
            return Err(ServerError::TooManyRequests);
        }
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let envelope = InternalRequest {
            id,
            request: Some(request),
            header,
        };
        let data = envelope.encode_to_vec();
        if data.len() as u64 > self.request_bytes_max {
            return Err(ServerError::RequestTooLarge);
        }
        let wait = self.waiters.register(id);
        let (accepted, acceptance) = oneshot::channel();
        let input = NodeInput::Propose {
            data: data.into(),
            done: accepted,
            leading_in,
        };
        self.await_applied(id, input, acceptance, wait, timeout)
            .await
    }

    /// Proposes a membership change about `record` and waits until it is applied.
    pub(crate) async fn propose_membership(
        &self,
        change: ConfChangeType,
        record: Member,
    ) -> Result<i64, ServerError> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let context = ConfChangeContext {
            request_id: id,
            member: Some(record.clone()),
        };
        let change = ConfChangeV2 {
            transition: ConfChangeTransition::Auto as i32,
            changes: vec![ConfChangeSingle {
                change_type: change as i32,
                node_id: record.id,
            }],
            context: context.encode_to_vec().into(),
        };
        let wait = self.waiters.register(id);
        let (accepted, acceptance) = oneshot::channel();
        let input = NodeInput::ProposeConfChange {
            change,
            done: accepted,
        };
        let (applied, revision) = self
            .await_applied(id, input, acceptance, wait, self.timeout)
            .await?;
        match <()>::from_applied(applied) {
            Some(()) => Ok(revision),
            None => Err(wrong_kind("a membership change")),
        }
    }

    /// Hands `input` to the Raft task and waits for the entry of request `id` to apply.
    async fn await_applied(
        &self,
        id: u64,
        input: NodeInput,
        acceptance: oneshot::Receiver<Result<(), ServerError>>,
        wait: oneshot::Receiver<ApplyResult>,
        timeout: Duration,
    ) -> Result<(Applied, i64), ServerError> {
        let sent = self.send(input);
        let outcome = tokio::time::timeout(timeout, async {
            // The proposal itself failing (no leader, a stopped member) is what etcd
            // counts as a failed proposal; an applied request answering an error is not.
            let proposed = async {
                sent.await?;
                acceptance.await.map_err(|_| ServerError::Stopped)?
            };
            if let Err(error) = proposed.await {
                self.metrics.proposals_failed.inc();
                return Err(error);
            }
            wait.await.map_err(|_| ServerError::Stopped)?
        })
        .await;
        match outcome {
            Ok(result) => {
                if result.is_err() {
                    self.waiters.forget(id);
                }
                result
            }
            Err(_) => {
                self.metrics.proposals_failed.inc();
                self.waiters.forget(id);
                Err(ServerError::Timeout)
            }
        }
    }

    /// On the leader: how far learner `id` has replicated the log, and the log's last index.
    pub(crate) async fn learner_progress(&self, id: u64) -> Result<(u64, u64), ServerError> {
        let (reply, answer) = oneshot::channel();
        self.send(NodeInput::Progress { id, reply }).await?;
        answer
            .await
            .map_err(|_| ServerError::Stopped)?
            .ok_or(ServerError::NotLeader)
    }

    /// Sends to the Raft task, waiting for room.
    pub(crate) async fn send(&self, input: NodeInput) -> Result<(), ServerError> {
        self.node
            .send(input)
            .await
            .map_err(|_| ServerError::Stopped)
    }

    /// Sends to the Raft task without waiting for room (for tasks that must not block on it;
    /// a full queue means the member is overloaded, and the caller retries or times out).
    pub(crate) fn try_send(&self, input: NodeInput) -> Result<(), ServerError> {
        self.node.try_send(input).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ServerError::TooManyRequests,
            mpsc::error::TrySendError::Closed(_) => ServerError::Stopped,
        })
    }
}

/// The applier answered a proposal with a response of another kind than its request's: a
/// bug, reported to the client as etcd reports unexpected errors.
fn wrong_kind(expected: &str) -> ServerError {
    tracing::error!(expected, "applier answered with the wrong response kind");
    ServerError::Internal("etcdserver: unexpected response kind".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{PutRequest, PutResponse, TxnResponse};

    fn proposer(timeout: Duration) -> (Proposer, mpsc::Receiver<NodeInput>) {
        let (node, inputs) = mpsc::channel(8);
        let metrics = Arc::new(Metrics::new(false));
        (
            Proposer::new(node, 0x1234, 7, 1024, timeout, metrics),
            inputs,
        )
    }

    fn put(value_bytes: usize) -> Request {
        Request::Put(PutRequest {
            key: b"k".to_vec().into(),
            value: vec![0; value_bytes].into(),
            ..Default::default()
        })
    }

    /// Plays the Raft task and the applier for one proposal: accepts it, then completes its
    /// waiter with `result`. Returns the proposal's request id.
    async fn apply_next(
        proposer: &Proposer,
        inputs: &mut mpsc::Receiver<NodeInput>,
        result: impl FnOnce(u64) -> ApplyResult,
    ) -> u64 {
        let Some(NodeInput::Propose { data, done, .. }) = inputs.recv().await else {
            panic!("expected a proposal");
        };
        let envelope = InternalRequest::decode(data).expect("envelope decodes");
        done.send(Ok(())).expect("proposer waits for acceptance");
        proposer.waiters.complete(envelope.id, result(envelope.id));
        envelope.id
    }

    #[tokio::test]
    async fn a_proposal_gets_the_applied_response_of_its_kind() {
        let (proposer, mut inputs) = proposer(Duration::from_secs(5));
        let applier = async {
            apply_next(&proposer, &mut inputs, |_| {
                Ok((Applied::Put(PutResponse::default()), 42))
            })
            .await
        };
        let (answer, id) = tokio::join!(proposer.propose_as::<PutResponse>(put(1)), applier);
        let (_, revision) = answer.expect("applied");
        assert_eq!(revision, 42);
        assert_eq!(
            id >> 48,
            0x1234,
            "the member id's low bits lead the request id"
        );
        assert_eq!(proposer.waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_response_of_another_kind_is_an_internal_error() {
        let (proposer, mut inputs) = proposer(Duration::from_secs(5));
        let applier = apply_next(&proposer, &mut inputs, |_| {
            Ok((Applied::Put(PutResponse::default()), 1))
        });
        let (answer, _) = tokio::join!(proposer.propose_as::<TxnResponse>(put(1)), applier);
        assert!(matches!(answer, Err(ServerError::Internal(_))));
    }

    #[tokio::test]
    async fn an_applied_error_reaches_the_client_and_forgets_the_waiter() {
        let (proposer, mut inputs) = proposer(Duration::from_secs(5));
        let applier = apply_next(&proposer, &mut inputs, |_| Err(ServerError::LeaseNotFound));
        let (answer, _) = tokio::join!(proposer.propose(put(1)), applier);
        assert_eq!(answer.unwrap_err(), ServerError::LeaseNotFound);
        assert_eq!(proposer.waiters.len(), 0);
        assert_eq!(
            proposer.metrics.proposals_failed.get(),
            0,
            "the proposal went through; its request failed"
        );
    }

    #[tokio::test]
    async fn a_refused_proposal_forgets_its_waiter() {
        let (proposer, mut inputs) = proposer(Duration::from_secs(5));
        let core = async {
            let Some(NodeInput::Propose { done, .. }) = inputs.recv().await else {
                panic!("expected a proposal");
            };
            done.send(Err(ServerError::NoLeader))
                .expect("proposer waits");
        };
        let (answer, ()) = tokio::join!(proposer.propose(put(1)), core);
        assert_eq!(answer.unwrap_err(), ServerError::NoLeader);
        assert_eq!(proposer.metrics.proposals_failed.get(), 1);
        assert_eq!(proposer.waiters.len(), 0);
    }

    /// Plays the Raft task refusing the next proposal with `error`; returns the term the
    /// proposal was pinned to.
    async fn refuse_next(
        inputs: &mut mpsc::Receiver<NodeInput>,
        error: ServerError,
    ) -> Option<u64> {
        let Some(NodeInput::Propose {
            leading_in, done, ..
        }) = inputs.recv().await
        else {
            panic!("expected a proposal");
        };
        done.send(Err(error)).expect("proposer waits");
        leading_in
    }

    #[tokio::test]
    async fn a_proposal_pinned_to_a_term_says_so_and_its_refusal_fails_it() {
        let (proposer, mut inputs) = proposer(Duration::from_secs(5));
        let core = refuse_next(&mut inputs, ServerError::LeaderChanged);
        let (answer, leading_in) = tokio::join!(proposer.propose_leading_in(put(1), 7), core);
        assert_eq!(leading_in, Some(7));
        assert_eq!(answer.unwrap_err(), ServerError::LeaderChanged);
        assert_eq!(proposer.waiters.len(), 0);

        let core = refuse_next(&mut inputs, ServerError::NoLeader);
        let (answer, leading_in) = tokio::join!(proposer.propose(put(1)), core);
        assert_eq!(leading_in, None, "an ordinary proposal may be forwarded");
        assert_eq!(answer.unwrap_err(), ServerError::NoLeader);
    }

    #[tokio::test]
    async fn a_proposal_never_applied_times_out_and_forgets_its_waiter() {
        let (proposer, mut inputs) = proposer(Duration::from_millis(100));
        let core = async {
            let Some(NodeInput::Propose { done, .. }) = inputs.recv().await else {
                panic!("expected a proposal");
            };
            done.send(Ok(())).expect("proposer waits");
        };
        let (answer, ()) = tokio::join!(proposer.propose(put(1)), core);
        assert_eq!(answer.unwrap_err(), ServerError::Timeout);
        assert_eq!(proposer.waiters.len(), 0);
        assert_eq!(proposer.metrics.proposals_failed.get(), 1);
        // The entry applies after all, once nobody waits: nothing to complete, no panic.
        proposer.waiters.complete(1, Ok((Applied::Membership, 1)));
    }

    #[tokio::test]
    async fn an_oversized_request_never_reaches_the_raft_task() {
        let (proposer, mut inputs) = proposer(Duration::from_secs(5));
        let answer = proposer.propose(put(2048)).await;
        assert_eq!(answer.unwrap_err(), ServerError::RequestTooLarge);
        assert!(inputs.try_recv().is_err());
        assert_eq!(proposer.waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_stopped_raft_task_fails_proposals() {
        let (proposer, inputs) = proposer(Duration::from_secs(5));
        drop(inputs);
        assert_eq!(
            proposer.propose(put(1)).await.unwrap_err(),
            ServerError::Stopped
        );
        assert_eq!(
            proposer
                .try_send(NodeInput::Unreachable { to: 2 })
                .unwrap_err(),
            ServerError::Stopped
        );
    }

    #[tokio::test]
    async fn a_membership_change_carries_its_request_id_and_record() {
        let (proposer, mut inputs) = proposer(Duration::from_secs(5));
        let record = Member {
            id: 9,
            ..Default::default()
        };
        let applier = async {
            let Some(NodeInput::ProposeConfChange { change, done }) = inputs.recv().await else {
                panic!("expected a membership change");
            };
            let context = ConfChangeContext::decode(change.context).expect("context decodes");
            assert_eq!(context.member.map(|m| m.id), Some(9));
            assert_eq!(change.changes[0].node_id, 9);
            done.send(Ok(())).expect("proposer waits");
            proposer
                .waiters
                .complete(context.request_id, Ok((Applied::Membership, 5)));
        };
        let (answer, ()) = tokio::join!(
            proposer.propose_membership(ConfChangeType::AddLearnerNode, record),
            applier
        );
        assert_eq!(answer, Ok(5));
    }
}
