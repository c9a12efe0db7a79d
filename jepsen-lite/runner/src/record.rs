//! What a run records: the history for jepsen-lite, and every attempt for availability.
//!
//! All times are nanoseconds since the run's origin on one monotonic clock (the runner's
//! `Instant`), so that call and return times of different clients compare.
//!
//! The recording rules are the simulator's (`sim/src/workload.rs`), which are Jepsen's:
//! - an answer is recorded with its return time and output;
//! - a definite failure (the server refused the request: it had no effect) is recorded
//!   with an `error` output, except for a keep-alive (a failed one says nothing of its
//!   lease);
//! - anything else after the request may have left (a timeout, a transport error, a
//!   leader change) is an unknown outcome: a write is recorded with `return: null` and the
//!   client continues under a new id; a read is dropped, since it constrains nothing.
//!
//! Independently of the history, every attempt (the connection failures before a request
//! was sent included) goes to the attempt log, which `availability` reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use jepsen_lite::history::{Watch, WatchOrigin};
use jepsen_lite::{History, Input, Operation, Output};
use serde::Serialize;
use tonic::{Code, Status};

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ok(Output),
    /// The server refused it; it had no effect.
    Failed(String),
    /// It may or may not have taken effect.
    Unknown(String),
    /// It was never sent (no connection).
    NotSent(String),
}

/// What an attempt was, for availability: a write, a linearizable read or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Write,
    LinearizableRead,
    Other,
}

impl Class {
    pub fn of(input: &Input) -> Class {
        match input {
            Input::Get { .. } => Class::LinearizableRead,
            // A read at a past revision is not a read of the present.
            Input::Range(range) if range.revision == 0 && !range.serializable => {
                Class::LinearizableRead
            }
            Input::Range(_) | Input::LeaseKeepAlive { .. } => Class::Other,
            input if input.is_read_only() => Class::Other,
            _ => Class::Write,
        }
    }
}

/// One attempt, as availability sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attempt {
    pub member: usize,
    pub class: Class,
    pub call: i64,
    pub return_time: i64,
    /// Acknowledged (an answer, not an error).
    pub ok: bool,
}

/// Counts over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub not_sent: u64,
    pub watch_events: u64,
    /// Leases left to expire, each recorded as a revoke with an unknown outcome.
    pub expiries: u64,
}

#[derive(Default)]
struct Inner {
    history: History,
    attempts: Vec<Attempt>,
    counts: Counts,
}

pub struct Recorder {
    origin: Instant,
    next_client: AtomicU64,
    /// One lock for the history, the attempts and the counts: they are updated together
    /// after each request, which is short next to a network round trip.
    inner: Mutex<Inner>,
}

/// Status codes that say the request had no effect; anything else leaves the outcome
/// unknown.
pub fn outcome_of_status(status: &Status) -> Outcome {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::OutOfRange => {
            Outcome::Failed(message)
        }
        _ => Outcome::Unknown(message),
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            origin: Instant::now(),
            next_client: AtomicU64::new(1),
            inner: Mutex::default(),
        }
    }

    /// Nanoseconds since the run's origin.
    pub fn now(&self) -> i64 {
        self.origin.elapsed().as_nanos() as i64
    }

    pub fn new_client(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// Records one attempt by `client` through `member` (see the module doc); after an
    /// unknown outcome of a write, `client` is replaced by a fresh id.
    pub fn record(
        &self,
        client: &mut u64,
        member: usize,
        input: Input,
        call: i64,
        return_time: i64,
        outcome: Outcome,
    ) {
        self.record_on(client, member, None, input, call, return_time, outcome)
    }

    /// [`Recorder::record`], naming in the history the server process that answered
    /// (`member` field of the operation; see jepsen-lite's `WatchOrigin`).
    #[allow(clippy::too_many_arguments)]
    pub fn record_on(
        &self,
        client: &mut u64,
        member: usize,
        process: Option<String>,
        input: Input,
        call: i64,
        return_time: i64,
        outcome: Outcome,
    ) {
        let class = Class::of(&input);
        let read_only = input.is_read_only();
        let mut inner = self.inner.lock().unwrap();
        let index = inner.history.operations.len();
        inner.attempts.push(Attempt {
            member,
            class,
            call,
            return_time,
            ok: matches!(outcome, Outcome::Ok(_)),
        });
        match outcome {
            Outcome::Ok(output) => {
                inner.counts.ok += 1;
                inner.history.push_operation(Operation {
                    client: *client,
                    call,
                    return_time: Some(return_time),
                    input,
                    output: Some(output),
                });
            }
            Outcome::Failed(message) => {
                inner.counts.failed += 1;
                if !matches!(input, Input::LeaseKeepAlive { .. }) {
                    inner.history.push_operation(Operation {
                        client: *client,
                        call,
                        return_time: Some(return_time),
                        input,
                        output: Some(Output {
                            error: Some(message),
                            ..Output::default()
                        }),
                    });
                }
            }
            Outcome::Unknown(_) => {
                inner.counts.unknown += 1;
                if !read_only {
                    inner.history.push_operation(Operation {
                        client: *client,
                        call,
                        return_time: None,
                        input,
                        output: None,
                    });
                    if process.is_some() {
                        inner.history.set_operation_member(index, process);
                    }
                    drop(inner);
                    *client = self.new_client();
                    return;
                }
            }
            Outcome::NotSent(_) => inner.counts.not_sent += 1,
        }
        if inner.history.operations.len() > index && process.is_some() {
            inner.history.set_operation_member(index, process);
        }
    }

    pub fn push_watch(&self, watch: Watch, origin: WatchOrigin) {
        let mut inner = self.inner.lock().unwrap();
        inner.counts.watch_events += watch
            .responses
            .iter()
            .map(|response| response.events.len() as u64)
            .sum::<u64>();
        let index = inner.history.push_watch(watch);
        inner.history.set_watch_origin(index, origin);
    }

    /// A lease left to expire: a revoke with an unknown outcome, called at `earliest`,
    /// the earliest time the expiry may take effect (jepsen-lite's README, "Model"). It
    /// is no attempt of a client (availability does not count it).
    pub fn record_expiry(&self, id: i64, earliest: i64) {
        let client = self.new_client();
        let mut inner = self.inner.lock().unwrap();
        inner.counts.expiries += 1;
        inner.history.push_operation(Operation {
            client,
            call: earliest,
            return_time: None,
            input: Input::LeaseRevoke { id },
            output: None,
        });
    }

    pub fn history(&self) -> History {
        self.inner.lock().unwrap().history.clone()
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    pub fn counts(&self) -> Counts {
        self.inner.lock().unwrap().counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Input {
        Input::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    fn get(key: &str) -> Input {
        Input::Get {
            key: key.into(),
            range_end: None,
            prefix: false,
        }
    }

    #[test]
    fn unknown_write_is_recorded_with_a_null_return_and_a_new_client() {
        let recorder = Recorder::new();
        let mut client = recorder.new_client();
        let first = client;
        recorder.record(
            &mut client,
            0,
            put("k0", "v1"),
            10,
            20,
            Outcome::Unknown("timeout".into()),
        );
        assert_ne!(
            client, first,
            "a client keeps its id after an unknown outcome"
        );
        let history = recorder.history();
        assert_eq!(history.operations.len(), 1);
        let op = &history.operations[0];
        assert_eq!(op.client, first);
        assert_eq!(op.return_time, None);
        assert_eq!(op.output, None);
        let line = history.to_jsonl();
        assert!(line.contains("\"return\":null"), "{line}");
        assert_eq!(recorder.counts().unknown, 1);
    }

    #[test]
    fn unknown_read_is_dropped_but_counted_as_an_attempt() {
        let recorder = Recorder::new();
        let mut client = recorder.new_client();
        let before = client;
        recorder.record(
            &mut client,
            1,
            get("k0"),
            10,
            20,
            Outcome::Unknown("x".into()),
        );
        assert_eq!(client, before);
        assert!(recorder.history().operations.is_empty());
        let attempts = recorder.attempts();
        assert_eq!(attempts.len(), 1);
        assert!(!attempts[0].ok);
        assert_eq!(attempts[0].class, Class::LinearizableRead);
    }

    #[test]
    fn definite_failure_is_an_error_output_and_answers_are_kept() {
        let recorder = Recorder::new();
        let mut client = recorder.new_client();
        recorder.record(
            &mut client,
            0,
            put("k0", "v1"),
            1,
            2,
            Outcome::Ok(Output {
                revision: Some(2),
                ..Output::default()
            }),
        );
        recorder.record(
            &mut client,
            0,
            put("k1", "v2"),
            3,
            4,
            Outcome::Failed("InvalidArgument: bad".into()),
        );
        recorder.record(
            &mut client,
            0,
            put("k1", "v3"),
            5,
            5,
            Outcome::NotSent("refused".into()),
        );
        let history = recorder.history();
        assert_eq!(history.operations.len(), 2);
        assert_eq!(history.operations[0].return_time, Some(2));
        assert_eq!(
            history.operations[0].output.as_ref().unwrap().revision,
            Some(2)
        );
        assert!(history.operations[1]
            .output
            .as_ref()
            .unwrap()
            .error
            .is_some());
        let counts = recorder.counts();
        assert_eq!((counts.ok, counts.failed, counts.not_sent), (1, 1, 1));
        assert_eq!(recorder.attempts().len(), 3);
    }

    #[test]
    fn status_codes() {
        assert!(matches!(
            outcome_of_status(&Status::invalid_argument("x")),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            outcome_of_status(&Status::unavailable("leader changed")),
            Outcome::Unknown(_)
        ));
        assert!(matches!(
            outcome_of_status(&Status::deadline_exceeded("x")),
            Outcome::Unknown(_)
        ));
    }

    #[test]
    fn classes() {
        assert_eq!(Class::of(&put("a", "b")), Class::Write);
        assert_eq!(Class::of(&get("a")), Class::LinearizableRead);
        let past = Input::Range(jepsen_lite::history::RangeRequest {
            key: "a".into(),
            revision: 3,
            ..Default::default()
        });
        assert_eq!(Class::of(&past), Class::Other);
    }
}
