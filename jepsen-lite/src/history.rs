//! The history file: what clients asked, when, and what they were told.
//!
//! A history is a JSON-lines file. Each line is either an operation
//! (`{"client", "call", "return", "input", "output"}`) or a watch record
//! (`{"watch": {...}}`). Blank lines and lines starting with `#` are ignored,
//! so test data can carry a description and an expectation in its header.
//! The full schema lives in `README.md`; the types here are its source of
//! truth and every field name below is the JSON field name.
//!
//! Times are nanoseconds on one monotonic clock (the driver's or the
//! simulator's). `return: null` means the outcome is unknown (a timeout, a
//! dropped connection): the operation may or may not have taken effect, and its
//! `output`, if any, is ignored.
//!
//! Outputs are deliberately lenient: every field is optional and only the
//! fields present are checked. A history produced by a client that does not
//! record header revisions is still checkable, and the checker can then split
//! it by key (see `linearizability`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bytes;

/// One client request and its response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Client (process) id. A client that saw an unknown outcome should not
    /// reuse its id, as in Jepsen; the checker does not rely on it.
    pub client: u64,
    /// Invocation time, ns.
    pub call: i64,
    /// Completion time, ns; `None` when the outcome is unknown.
    #[serde(rename = "return")]
    pub return_time: Option<i64>,
    pub input: Input,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
}

impl Operation {
    /// Whether the client learnt how the operation ended.
    pub fn is_known(&self) -> bool {
        self.return_time.is_some()
    }
}

/// A request, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub enum Input {
    /// Range read: one key, `[key, range_end)`, or every key with the prefix
    /// `key` when `prefix` is true. `range_end = "\u0000"` means every key
    /// `>= key`, as in etcd.
    Get {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range_end: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        prefix: bool,
    },
    Put {
        key: String,
        value: String,
        /// Lease id to attach; absent or 0 means none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<i64>,
    },
    Delete {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range_end: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        prefix: bool,
    },
    Txn {
        #[serde(default)]
        compare: Vec<Compare>,
        #[serde(default)]
        success: Vec<TxnOp>,
        #[serde(default)]
        failure: Vec<TxnOp>,
    },
    /// A range read with every option etcd's `RangeRequest` has (see
    /// [`RangeRequest`]); `get` is the plain form.
    Range(RangeRequest),
    /// Compacts the history up to `revision`: reads at earlier revisions fail
    /// with the compacted error. It makes no revision of its own.
    Compact {
        revision: i64,
        #[serde(default, skip_serializing_if = "is_false")]
        physical: bool,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// One keep-alive: answered with an error when the lease is gone. It changes nothing
    /// the model holds (the model keeps no deadlines), but it says whether the lease
    /// existed when it took effect.
    LeaseKeepAlive {
        id: i64,
    },
}

impl Input {
    /// Whether the request can change the store.
    pub fn is_read_only(&self) -> bool {
        match self {
            Input::Get { .. } | Input::Range(_) | Input::LeaseKeepAlive { .. } => true,
            // etcd sends a txn with a nested txn through Raft, as a write.
            Input::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .all(|op| matches!(op, TxnOp::Get { .. } | TxnOp::Range(_))),
            _ => false,
        }
    }

    /// Whether etcd answers this request from one member's store without asking
    /// the leader: a serializable `range`, or a txn that only reads and whose
    /// every operation, in both branches, is a serializable `range` (etcd's
    /// `isTxnSerializable`, true too for a txn with no operations at all).
    pub fn is_serializable(&self) -> bool {
        match self {
            Input::Range(r) => r.serializable,
            Input::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .all(|op| matches!(op, TxnOp::Range(r) if r.serializable)),
            _ => false,
        }
    }
}

/// A request inside a transaction branch, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub enum TxnOp {
    Get {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range_end: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        prefix: bool,
    },
    Put {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<i64>,
    },
    Delete {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range_end: Option<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        prefix: bool,
    },
    Range(RangeRequest),
    /// A nested txn (etcd 3.3 and later: `RequestOp.request_txn`). Its compares
    /// are judged on the store as it was before the outer txn ran, and its writes
    /// share the outer txn's revision (see `README.md`).
    Txn {
        #[serde(default)]
        compare: Vec<Compare>,
        #[serde(default)]
        success: Vec<TxnOp>,
        #[serde(default)]
        failure: Vec<TxnOp>,
    },
}

/// A range read with etcd's options. The answer is computed as etcd's `Range`
/// does: the keys in range (at the newest revision), filtered by the
/// `min_`/`max_` revision bounds, sorted, cut to `limit` (`more` says whether
/// any were cut), values dropped for `keys_only`, nothing but `count` for
/// `count_only`; `count` is the number of keys in range before filters and
/// limit. Keys that tie on a non-key sort target may come in any order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prefix: bool,
    /// At most this many keys; 0 is no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: i64,
    /// Read at this past revision; 0 is the newest. Inside a txn, the store at
    /// that revision, not including the txn's own writes; a serializable txn
    /// (see [`Input::is_serializable`]) with such a read is not modelled yet
    /// (refused).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: i64,
    #[serde(default, skip_serializing_if = "SortOrder::is_none")]
    pub sort_order: SortOrder,
    #[serde(default, skip_serializing_if = "SortTarget::is_key")]
    pub sort_target: SortTarget,
    /// Answered by one member from what it has applied. Inside a txn it matters
    /// only when the whole txn is serializable (see [`Input::is_serializable`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub serializable: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub keys_only: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub count_only: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_mod_revision: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_mod_revision: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_create_revision: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_create_revision: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

impl SortOrder {
    fn is_none(&self) -> bool {
        *self == SortOrder::None
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

impl SortTarget {
    fn is_key(&self) -> bool {
        *self == SortTarget::Key
    }
}

/// One transaction guard: `target(key) result value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub key: String,
    /// With a range end, the compare holds when every key in `[key,
    /// range_end)` satisfies it (`"\u0000"`: every key from `key` on); over no
    /// key at all, a value compare fails and the others compare zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    pub target: CompareTarget,
    pub result: CompareResult,
    /// A string for `value`, an integer for the other targets.
    pub value: CompareOperand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    Value,
    Version,
    ModRevision,
    CreateRevision,
    Lease,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = ">")]
    Greater,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CompareOperand {
    Int(i64),
    Str(String),
}

/// What the client was told. Absent fields are not checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Header revision of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Key-values read (a get, or a get inside a txn branch), in key order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvs: Option<Vec<KeyValue>>,
    /// Which txn branch ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// Keys removed by a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<i64>,
    /// A range's count of keys in range (before filters and limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// A range's `more`: its limit cut some keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
    /// Txn sub-responses, one per op of the branch that ran. Their `revision`
    /// is not checked (etcd copies the txn header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<Vec<Output>>,
    /// A definite failure (e.g. lease not found): the request had no effect.
    /// Any error text matches any failure of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A key-value as read. Absent metadata is not checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
}

/// One watch stream as a client saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    pub client: u64,
    #[serde(default)]
    pub watch_id: i64,
    pub key: String,
    /// Same meaning as for `Input::Get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prefix: bool,
    /// First revision asked for; 0 means "from now".
    #[serde(default)]
    pub start_revision: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<WatchFilter>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prev_kv: bool,
    #[serde(default)]
    pub responses: Vec<WatchResponse>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub canceled: bool,
    /// Set when the server canceled the watch because `start_revision` was
    /// compacted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compact_revision: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchFilter {
    Noput,
    Nodelete,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchResponse {
    /// Header revision.
    pub revision: i64,
    #[serde(default)]
    pub events: Vec<Event>,
    /// More events of the same revision follow in the next response.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fragment: bool,
    /// An empty progress notification: everything up to `revision` was sent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub progress_notify: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub create_revision: i64,
    pub mod_revision: i64,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Put,
    Delete,
}

/// A whole history: operations and watches in file order. Violations name an
/// operation by its index in `operations` (and its file line).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub operations: Vec<Operation>,
    pub watches: Vec<Watch>,
    /// 1-based file line of each operation (0 when built in memory).
    pub operation_lines: Vec<usize>,
    /// 1-based file line of each watch (0 when built in memory).
    pub watch_lines: Vec<usize>,
    /// `#` header lines, without the `#`.
    pub comments: Vec<String>,
    /// The `member` of each operation, when recorded (see [`WatchOrigin`]); missing
    /// entries are `None`.
    pub operation_members: Vec<Option<String>>,
    /// When and where each watch was created, when recorded; missing entries are
    /// the default (nothing recorded).
    pub watch_origins: Vec<WatchOrigin>,
}

/// When and on which server a watch was created. Both are optional fields of the
/// watch record (`call`, `member`), kept beside [`Watch`] so that records written
/// before they existed still read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOrigin {
    /// When the client sent the create request, ns, on the history's clock.
    pub call: Option<i64>,
    /// The server process that served the watch: an opaque name the driver picks,
    /// also written on operations. A restarted member is a new process and needs a
    /// new name (see `README.md`, "Watch").
    pub member: Option<String>,
}

/// Why a history file could not be read.
#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchLine {
    watch: Watch,
}

impl History {
    pub fn push_operation(&mut self, op: Operation) -> usize {
        self.operations.push(op);
        self.operation_lines.push(0);
        self.operations.len() - 1
    }

    pub fn push_watch(&mut self, watch: Watch) -> usize {
        self.watches.push(watch);
        self.watch_lines.push(0);
        self.watches.len() - 1
    }

    /// Records where operation `index` was served (see [`WatchOrigin::member`]).
    pub fn set_operation_member(&mut self, index: usize, member: Option<String>) {
        if self.operation_members.len() <= index {
            self.operation_members.resize(index + 1, None);
        }
        self.operation_members[index] = member;
    }

    /// Records when and where watch `index` was created.
    pub fn set_watch_origin(&mut self, index: usize, origin: WatchOrigin) {
        if self.watch_origins.len() <= index {
            self.watch_origins.resize(index + 1, WatchOrigin::default());
        }
        self.watch_origins[index] = origin;
    }

    /// The member that served operation `index`, when recorded.
    pub fn operation_member(&self, index: usize) -> Option<&str> {
        self.operation_members.get(index)?.as_deref()
    }

    /// When and where watch `index` was created, as far as recorded.
    pub fn watch_origin(&self, index: usize) -> WatchOrigin {
        self.watch_origins.get(index).cloned().unwrap_or_default()
    }

    /// Parses a JSON-lines history and checks the basics every checker relies
    /// on (return not before call).
    pub fn parse(text: &str) -> Result<History, ParseError> {
        let mut history = History::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                history.comments.push(comment.trim().to_string());
                continue;
            }
            let mut value: serde_json::Value =
                serde_json::from_str(trimmed).map_err(|e| ParseError {
                    line,
                    message: e.to_string(),
                })?;
            bytes::decode_tree(&mut value).map_err(|message| ParseError { line, message })?;
            let is_watch = value.as_object().is_some_and(|o| o.contains_key("watch"));
            if is_watch {
                let fields = value.get_mut("watch").and_then(|w| w.as_object_mut());
                let (call, member) = match fields {
                    Some(fields) => (
                        take_field::<i64>(fields, "call", "an integer")
                            .map_err(|message| ParseError { line, message })?,
                        take_field::<String>(fields, "member", "a string")
                            .map_err(|message| ParseError { line, message })?,
                    ),
                    None => (None, None),
                };
                let parsed: WatchLine = serde_json::from_value(value).map_err(|e| ParseError {
                    line,
                    message: format!("watch record: {e}"),
                })?;
                history.watches.push(parsed.watch);
                history.watch_lines.push(line);
                if call.is_some() || member.is_some() {
                    let index = history.watches.len() - 1;
                    history.set_watch_origin(index, WatchOrigin { call, member });
                }
            } else {
                let member = match value.as_object_mut() {
                    Some(fields) => take_field::<String>(fields, "member", "a string")
                        .map_err(|message| ParseError { line, message })?,
                    None => None,
                };
                if member.is_some() {
                    history.set_operation_member(history.operations.len(), member);
                }
                let op: Operation = serde_json::from_value(value).map_err(|e| ParseError {
                    line,
                    message: format!("operation: {e}"),
                })?;
                if let Some(ret) = op.return_time {
                    if ret < op.call {
                        return Err(ParseError {
                            line,
                            message: format!("return {ret} before call {}", op.call),
                        });
                    }
                }
                history.operations.push(op);
                history.operation_lines.push(line);
            }
        }
        Ok(history)
    }

    /// Writes the history back as JSON lines (comments first).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for comment in &self.comments {
            out.push_str("# ");
            out.push_str(comment);
            out.push('\n');
        }
        for (index, op) in self.operations.iter().enumerate() {
            match self.operation_member(index) {
                None => out.push_str(&record_json(op)),
                Some(member) => {
                    let mut tree = record_tree(op);
                    if let Some(fields) = tree.as_object_mut() {
                        fields.insert("member".into(), member.into());
                    }
                    out.push_str(&tree.to_string());
                }
            }
            out.push('\n');
        }
        for (index, watch) in self.watches.iter().enumerate() {
            let mut tree = record_tree(&WatchLine {
                watch: watch.clone(),
            });
            let origin = self.watch_origin(index);
            if let Some(fields) = tree.get_mut("watch").and_then(|w| w.as_object_mut()) {
                if let Some(call) = origin.call {
                    fields.insert("call".into(), call.into());
                }
                if let Some(member) = origin.member {
                    fields.insert("member".into(), member.into());
                }
            }
            out.push_str(&tree.to_string());
            out.push('\n');
        }
        out
    }

    /// Checks that every key, range end and value is a byte string (one
    /// character per byte, see `bytes`): a history built in memory with other
    /// characters would be checked as some other bytes.
    pub fn validate_bytes(&self) -> Result<(), String> {
        // A character up to U+00FF is ASCII or starts with byte c2 or c3 in UTF-8.
        let check = |what: &dyn Fn() -> String, s: &str| -> Result<(), String> {
            if s.bytes().all(|b| b < 0xc4) {
                Ok(())
            } else {
                Err(format!(
                    "{} {s:?} holds a character above U+00FF: build byte strings with bytes::from_bytes",
                    what()
                ))
            }
        };
        let range =
            |what: &dyn Fn() -> String, key: &str, end: &Option<String>| -> Result<(), String> {
                check(what, key)?;
                end.as_deref().map_or(Ok(()), |e| check(what, e))
            };
        let kv = |what: &dyn Fn() -> String, kv: &KeyValue| -> Result<(), String> {
            check(what, &kv.key)?;
            kv.value.as_deref().map_or(Ok(()), |v| check(what, v))
        };
        type Check<'a> = dyn Fn(&dyn Fn() -> String, &str) -> Result<(), String> + 'a;
        fn compares(
            what: &dyn Fn() -> String,
            list: &[Compare],
            check: &Check,
        ) -> Result<(), String> {
            for c in list {
                check(what, &c.key)?;
                if let Some(end) = &c.range_end {
                    check(what, end)?;
                }
                if let CompareOperand::Str(v) = &c.value {
                    check(what, v)?;
                }
            }
            Ok(())
        }
        fn txn_op(what: &dyn Fn() -> String, op: &TxnOp, check: &Check) -> Result<(), String> {
            let range = |key: &str, end: &Option<String>| -> Result<(), String> {
                check(what, key)?;
                end.as_deref().map_or(Ok(()), |e| check(what, e))
            };
            match op {
                TxnOp::Get { key, range_end, .. } | TxnOp::Delete { key, range_end, .. } => {
                    range(key, range_end)
                }
                TxnOp::Range(r) => range(&r.key, &r.range_end),
                TxnOp::Put { key, value, .. } => check(what, key).and_then(|()| check(what, value)),
                TxnOp::Txn {
                    compare,
                    success,
                    failure,
                } => {
                    compares(what, compare, check)?;
                    success
                        .iter()
                        .chain(failure)
                        .try_for_each(|op| txn_op(what, op, check))
                }
            }
        }
        type KvCheck<'a> = dyn Fn(&dyn Fn() -> String, &KeyValue) -> Result<(), String> + 'a;
        fn output(what: &dyn Fn() -> String, out: &Output, kv: &KvCheck) -> Result<(), String> {
            for k in out.kvs.iter().flatten() {
                kv(what, k)?;
            }
            for sub in out.responses.iter().flatten() {
                output(what, sub, kv)?;
            }
            Ok(())
        }
        for (index, op) in self.operations.iter().enumerate() {
            let what = || format!("operation #{index}:");
            let what = &what;
            match &op.input {
                Input::Get { key, range_end, .. } | Input::Delete { key, range_end, .. } => {
                    range(what, key, range_end)?
                }
                Input::Range(r) => range(what, &r.key, &r.range_end)?,
                Input::Put { key, value, .. } => {
                    check(what, key)?;
                    check(what, value)?;
                }
                Input::Txn {
                    compare,
                    success,
                    failure,
                } => {
                    compares(what, compare, &check)?;
                    for t in success.iter().chain(failure) {
                        txn_op(what, t, &check)?;
                    }
                }
                Input::Compact { .. }
                | Input::LeaseGrant { .. }
                | Input::LeaseRevoke { .. }
                | Input::LeaseKeepAlive { .. } => {}
            }
            if let Some(out) = &op.output {
                output(what, out, &kv)?;
            }
        }
        for (index, watch) in self.watches.iter().enumerate() {
            let what = || format!("watch #{index}:");
            let what = &what;
            range(what, &watch.key, &watch.range_end)?;
            for event in watch.responses.iter().flat_map(|r| &r.events) {
                check(what, &event.key)?;
                if let Some(v) = &event.value {
                    check(what, v)?;
                }
                if let Some(prev) = &event.prev_kv {
                    kv(what, prev)?;
                }
            }
        }
        Ok(())
    }

    /// File line of operation `index`, or 0.
    pub fn line_of(&self, index: usize) -> usize {
        self.operation_lines.get(index).copied().unwrap_or(0)
    }
}

/// One record as a JSON line, byte fields written as `bytes` says (text when
/// UTF-8, else `_b64`).
pub fn record_json<T: Serialize>(record: &T) -> String {
    record_tree(record).to_string()
}

/// One record as a JSON tree, byte fields written as [`record_json`] says.
fn record_tree<T: Serialize>(record: &T) -> serde_json::Value {
    let tree = serde_json::to_value(record).expect("history records always serialize");
    let mut encoded = tree.clone();
    match bytes::encode_tree(&mut encoded) {
        Ok(()) => encoded,
        // Not a byte string (see `History::validate_bytes`): write it as held.
        Err(_) => tree,
    }
}

/// Removes the optional field `name` from a record, checking its type: these
/// fields live beside the record's struct (see [`WatchOrigin`]).
fn take_field<T: serde::de::DeserializeOwned>(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    kind: &str,
) -> Result<Option<T>, String> {
    match fields.remove(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|_| format!("`{name}` must be {kind}")),
    }
}

/// The exclusive end of the etcd prefix range starting at `prefix` (a byte
/// string, see `bytes`): the prefix with its last byte below 0xff incremented
/// and what follows dropped, or `"\0"` (every key) when there is none, as
/// etcd's client computes it.
pub fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if u32::from(last) < 0xff {
            chars.push(char::from_u32(u32::from(last) + 1).expect("below U+0100"));
            return chars.into_iter().collect();
        }
    }
    "\0".to_string()
}

/// The half-open key interval of a range request: `(start, end)` where
/// `end == None` means "every key >= start" and `end == Some(start + "\0")`
/// is the single key.
pub fn key_interval(key: &str, range_end: Option<&str>, prefix: bool) -> (String, Option<String>) {
    let end = if prefix {
        prefix_end(key)
    } else {
        match range_end {
            None | Some("") => format!("{key}\0"),
            Some(end) => end.to_string(),
        }
    };
    if end == "\0" {
        (key.to_string(), None)
    } else {
        (key.to_string(), Some(end))
    }
}

/// Whether `key` lies in the interval returned by [`key_interval`].
pub fn interval_contains(interval: &(String, Option<String>), key: &str) -> bool {
    key >= interval.0.as_str() && interval.1.as_deref().is_none_or(|end| key < end)
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operations_watches_and_comments() {
        let text = r#"# a comment
{"client":1,"call":0,"return":10,"input":{"type":"put","key":"a","value":"1"},"output":{"revision":2}}
{"client":2,"call":5,"return":null,"input":{"type":"get","key":"a","prefix":true}}

{"watch":{"client":3,"key":"a","start_revision":1,"responses":[{"revision":2,"events":[{"type":"put","key":"a","value":"1","create_revision":2,"mod_revision":2,"version":1}]}]}}
"#;
        let history = History::parse(text).unwrap();
        assert_eq!(history.operations.len(), 2);
        assert_eq!(history.watches.len(), 1);
        assert_eq!(history.operation_lines, vec![2, 3]);
        assert_eq!(history.watch_lines, vec![5]);
        assert_eq!(history.comments, vec!["a comment"]);
        assert!(!history.operations[1].is_known());
        let again = History::parse(&history.to_jsonl()).unwrap();
        assert_eq!(again.operations, history.operations);
        assert_eq!(again.watches, history.watches);
    }

    #[test]
    fn byte_keys_round_trip() {
        let text = r#"{"client":1,"call":0,"return":10,"input":{"type":"put","key_b64":"/4A=","value":"é"},"output":{"revision":2}}
{"watch":{"client":3,"key":"a","range_end_b64":"/w==","responses":[{"revision":2,"events":[{"type":"put","key_b64":"/4A=","value":"é","mod_revision":2}]}]}}"#;
        let history = History::parse(text).unwrap();
        match &history.operations[0].input {
            Input::Put { key, value, .. } => {
                assert_eq!(bytes::to_bytes(key).unwrap(), vec![0xff, 0x80]);
                assert_eq!(bytes::to_bytes(value).unwrap(), "é".as_bytes());
            }
            other => panic!("unexpected {other:?}"),
        }
        let written = history.to_jsonl();
        assert!(written.contains(r#""key_b64":"/4A=""#), "{written}");
        assert!(written.contains(r#""value":"é""#), "{written}");
        let again = History::parse(&written).unwrap();
        assert_eq!(again.operations, history.operations);
        assert_eq!(again.watches, history.watches);
        assert!(history.validate_bytes().is_ok());
        let mut wide = History::default();
        wide.push_operation(Operation {
            client: 1,
            call: 0,
            return_time: Some(1),
            input: Input::Put {
                key: "日".into(),
                value: "1".into(),
                lease: None,
            },
            output: None,
        });
        assert!(wide.validate_bytes().is_err());
    }

    #[test]
    fn rejects_unknown_fields() {
        // Each line misspells or adds a field the checker does not read: it must
        // not be ignored (a read of a never-written value would then pass).
        let lines = [
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a"},"output":{"revison":2,"kvs":[]}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a"},"output":{"kv":[{"key":"a","value":"zz"}]}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a"},"output":{"kvs":[{"key":"a","valeu":"zz"}]}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a","limit":1},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a","revision":1},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"put","key":"a","value":"1","prev_kv":true},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"txn","compare":[{"key":"a","range_ed":"b","target":"version","result":"=","value":0}]},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"txn","success":[{"type":"get","key":"a","count_only":true}]},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a"},"output":{"counts":1}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"range","key":"a","limt":1},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"range","key":"a","sort_order":"up"},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"txn","success":[{"type":"range","key":"a","kv":1}]},"output":{}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a"},"output":{}, "extra":1}"#,
            r#"{"watch":{"client":3,"key":"a","progress_notify":true}}"#,
            r#"{"watch":{"client":3,"key":"a","responses":[{"revision":2,"events":[{"type":"put","key":"a","mod_revision":2,"kv":{}}]}]}}"#,
        ];
        for line in lines {
            assert!(History::parse(line).is_err(), "{line}");
        }
        let range = r#"{"client":1,"call":0,"return":10,"input":{"type":"range","key":"a","limit":1,"sort_order":"descend","sort_target":"mod","count_only":true},"output":{"count":2,"more":false}}"#;
        let history = History::parse(range).unwrap();
        match &history.operations[0].input {
            Input::Range(r) => {
                assert_eq!(
                    (r.limit, r.sort_order, r.sort_target),
                    (1, SortOrder::Descend, SortTarget::Mod)
                );
                assert!(r.count_only && !r.keys_only);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            History::parse(&history.to_jsonl()).unwrap().operations,
            history.operations
        );
    }

    #[test]
    fn watch_origin_and_member_round_trip() {
        let text = r#"{"client":1,"call":0,"return":10,"input":{"type":"compact","revision":2},"output":{},"member":"m1"}
{"client":1,"call":20,"return":30,"input":{"type":"get","key":"a"},"output":{}}
{"watch":{"client":3,"key":"a","call":40,"member":"m1"}}
{"watch":{"client":3,"key":"a"}}"#;
        let history = History::parse(text).unwrap();
        assert_eq!(history.operation_member(0), Some("m1"));
        assert_eq!(history.operation_member(1), None);
        assert_eq!(
            history.watch_origin(0),
            WatchOrigin {
                call: Some(40),
                member: Some("m1".into())
            }
        );
        assert_eq!(history.watch_origin(1), WatchOrigin::default());
        let again = History::parse(&history.to_jsonl()).unwrap();
        assert_eq!(again.operation_members, history.operation_members);
        assert_eq!(again.watch_origins, history.watch_origins);
        for bad in [
            r#"{"watch":{"client":3,"key":"a","call":"soon"}}"#,
            r#"{"watch":{"client":3,"key":"a","member":2}}"#,
            r#"{"client":1,"call":0,"return":10,"input":{"type":"get","key":"a"},"member":1}"#,
            r#"{"watch":{"client":3,"key":"a","cal":40}}"#,
        ] {
            assert!(History::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_return_before_call() {
        let text = r#"{"client":1,"call":10,"return":5,"input":{"type":"get","key":"a"}}"#;
        let err = History::parse(text).unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn txn_round_trips() {
        let text = r#"{"client":1,"call":0,"return":1,"input":{"type":"txn","compare":[{"key":"a","target":"mod_revision","result":"=","value":3},{"key":"b","target":"value","result":"!=","value":"x"}],"success":[{"type":"put","key":"a","value":"2"}],"failure":[{"type":"get","key":"a"}]},"output":{"revision":4,"succeeded":true,"responses":[{}]}}"#;
        let history = History::parse(text).unwrap();
        match &history.operations[0].input {
            Input::Txn { compare, .. } => {
                assert_eq!(compare[0].value, CompareOperand::Int(3));
                assert_eq!(compare[1].value, CompareOperand::Str("x".into()));
                assert_eq!(compare[1].result, CompareResult::NotEqual);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn intervals() {
        assert_eq!(prefix_end("k1"), "k2");
        // A multi-byte last character: the range ends on bytes, not on a
        // replacement character.
        let e_acute = bytes::from_text("é");
        assert_eq!(
            bytes::to_bytes(&prefix_end(&e_acute)).unwrap(),
            vec![0xc3, 0xaa]
        );
        assert_eq!(
            bytes::to_bytes(&prefix_end(&bytes::from_bytes(&[b'a', 0xff, 0xff]))).unwrap(),
            b"b".to_vec()
        );
        assert_eq!(prefix_end(&bytes::from_bytes(&[0xff])), "\0");
        assert_eq!(prefix_end(""), "\0");
        let single = key_interval("a", None, false);
        assert!(interval_contains(&single, "a"));
        assert!(!interval_contains(&single, "a0"));
        let prefix = key_interval("k1", None, true);
        assert!(interval_contains(&prefix, "k10"));
        assert!(!interval_contains(&prefix, "k2"));
        let all = key_interval("", Some("\0"), false);
        assert!(all.1.is_none());
        assert!(interval_contains(&all, "zzz"));
    }
}
