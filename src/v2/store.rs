//! The v2 tree and its operations, with etcd 3.4's semantics (`v2store`): the same
//! actions, the same numbering (the store's index grows by one per change; a node's
//! created and modified indexes are store indexes), the same errors with the same causes.
//!
//! Time enters only as arguments: an expiration is an absolute time (Unix nanoseconds)
//! chosen by the member that proposed the request, expiry happens when the leader
//! proposes a sync with its time, and `now` only renders the remaining TTL of an answer.
//! So every member that applies the same requests holds the same tree.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::error::{self as code, V2Error};
use super::{clean_path, split_path, HISTORY_EVENTS, MIN_EXPIRE_UNIX_NANOS};
use crate::proto::oxcdpb::{v2_request::Method, V2Node, V2Request};

/// How one node is persisted (the backend's `v2` table, keyed by path).
pub type NodeRecord = V2Node;

const NANOS_PER_SECOND: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq)]
struct Node {
    created: u64,
    modified: u64,
    /// Unix nanoseconds; 0 for a node that never expires.
    expire_at: i64,
    body: Body,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Value(String),
    Dir(BTreeMap<String, Node>),
}

impl Node {
    fn dir(index: u64, expire_at: i64) -> Node {
        Node {
            created: index,
            modified: index,
            expire_at,
            body: Body::Dir(BTreeMap::new()),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    fn value(&self) -> &str {
        match &self.body {
            Body::Value(value) => value,
            Body::Dir(_) => "",
        }
    }

    fn record(&self) -> NodeRecord {
        NodeRecord {
            dir: self.is_dir(),
            value: self.value().to_owned(),
            created_index: self.created,
            modified_index: self.modified,
            expire_at: self.expire_at,
        }
    }

    /// etcd's `expirationAndTTL`: the expiration and the whole seconds left, rounded up.
    fn expiration_and_ttl(&self, now: i64) -> (Option<i64>, i64) {
        if self.expire_at == 0 {
            return (None, 0);
        }
        let left = self.expire_at.saturating_sub(now);
        let mut ttl = left / NANOS_PER_SECOND;
        if left % NANOS_PER_SECOND > 0 {
            ttl += 1;
        }
        (Some(self.expire_at), ttl)
    }

    /// etcd's `Repr`: the node as answers show it; a directory's children only when
    /// `recursive` (hidden ones never).
    fn view(&self, path: &str, recursive: bool, sorted: bool, now: i64) -> NodeView {
        let (expiration, ttl) = self.expiration_and_ttl(now);
        let mut view = NodeView {
            key: external_key(path),
            value: None,
            dir: self.is_dir(),
            expiration,
            ttl,
            nodes: None,
            modified: self.modified,
            created: self.created,
        };
        match &self.body {
            Body::Value(value) => view.value = Some(value.clone()),
            Body::Dir(children) if recursive => {
                view.nodes = Some(children_views(children, path, true, sorted, now));
            }
            Body::Dir(_) => {}
        }
        view
    }
}

/// The key as answers show it: the root has none.
fn external_key(path: &str) -> String {
    if path == "/" {
        String::new()
    } else {
        path.to_owned()
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn children_views(
    children: &BTreeMap<String, Node>,
    dir: &str,
    recursive: bool,
    sorted: bool,
    now: i64,
) -> Vec<NodeView> {
    // Children are kept in name order, which is the order `sorted` asks for.
    let _ = sorted;
    children
        .iter()
        .filter(|(name, _)| !name.starts_with('_'))
        .map(|(name, child)| child.view(&child_path(dir, name), recursive, sorted, now))
        .collect()
}

/// A node as an answer shows it (etcd's `NodeExtern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Empty for the root.
    pub key: String,
    pub value: Option<String>,
    pub dir: bool,
    /// Unix nanoseconds.
    pub expiration: Option<i64>,
    pub ttl: i64,
    pub nodes: Option<Vec<NodeView>>,
    pub modified: u64,
    pub created: u64,
}

/// What happened, by etcd's action names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Get,
    Create,
    Set,
    Update,
    Delete,
    CompareAndSwap,
    CompareAndDelete,
    Expire,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Create => "create",
            Action::Set => "set",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::CompareAndSwap => "compareAndSwap",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }
}

/// The answer to a request, and what watches see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: Action,
    pub node: NodeView,
    pub prev_node: Option<NodeView>,
    /// The store's index after the request (the `X-Etcd-Index` header).
    pub etcd_index: u64,
    /// A TTL refresh: recorded in the history, but no watch is woken by it.
    pub refresh: bool,
}

impl Event {
    fn new(action: Action, path: &str, modified: u64, created: u64) -> Event {
        Event {
            action,
            node: NodeView {
                key: external_key(path),
                value: None,
                dir: false,
                expiration: None,
                ttl: 0,
                nodes: None,
                modified,
                created,
            },
            prev_node: None,
            etcd_index: 0,
            refresh: false,
        }
    }

    /// The index the event happened at.
    pub fn index(&self) -> u64 {
        self.node.modified
    }

    /// Whether the answer is 201 Created: a create, or a set of a key that did not exist.
    pub fn is_created(&self) -> bool {
        self.action == Action::Create || (self.action == Action::Set && self.prev_node.is_none())
    }

    /// Whether a watch of `key` (with `recursive`) sees this event: a change of the key,
    /// of a key below it that is not hidden from it (recursive), or the removal of a
    /// directory above it.
    pub fn concerns(&self, key: &str, recursive: bool) -> bool {
        if self.refresh {
            return false;
        }
        let event_key = if self.node.key.is_empty() {
            "/"
        } else {
            &self.node.key
        };
        if event_key == key {
            return true;
        }
        let below = |parent: &str, child: &str| {
            parent == "/" && child.len() > 1
                || child.len() > parent.len()
                    && child.starts_with(parent)
                    && child.as_bytes()[parent.len()] == b'/'
        };
        if recursive && below(key, event_key) {
            let rest = &event_key[if key == "/" { 0 } else { key.len() }..];
            if !rest.contains("/_") {
                return true;
            }
        }
        let removed_dir = matches!(
            self.action,
            Action::Delete | Action::Expire | Action::CompareAndDelete
        ) && self.prev_node.as_ref().is_some_and(|prev| prev.dir);
        removed_dir && below(event_key, key)
    }
}

/// Operations counted by the store's statistics (etcd's `/v2/stats/store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
    Delete,
    Update,
    Create,
    CompareAndSwap,
    CompareAndDelete,
}

/// Successes and failures of each operation, and the nodes expired; kept in memory (a
/// restart starts them again, as in etcd).
#[derive(Debug, Default)]
pub struct Stats {
    /// (success, failure) per [`Op`], in its order.
    counts: [(AtomicU64, AtomicU64); 7],
    expired: AtomicU64,
}

impl Stats {
    fn count(&self, op: Op, ok: bool) {
        let (success, failure) = &self.counts[op as usize];
        let counter = if ok { success } else { failure };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (success, failure) of `op`.
    pub fn of(&self, op: Op) -> (u64, u64) {
        let (success, failure) = &self.counts[op as usize];
        (
            success.load(Ordering::Relaxed),
            failure.load(Ordering::Relaxed),
        )
    }

    /// Nodes removed by expiry.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}

/// The v2 tree, its index, the nodes that expire, and the recent events.
#[derive(Debug)]
pub struct V2Store {
    root: Node,
    index: u64,
    /// (expiration, path) of every node that expires.
    expiring: BTreeSet<(i64, String)>,
    /// The newest events, oldest first.
    history: VecDeque<Arc<Event>>,
    /// The nodes changed since the last [`V2Store::take_changes`]: a record to store, or
    /// `None` to delete.
    changes: BTreeMap<String, Option<NodeRecord>>,
    stats: Stats,
}

impl Default for V2Store {
    fn default() -> Self {
        V2Store {
            root: Node::dir(0, 0),
            index: 0,
            expiring: BTreeSet::new(),
            history: VecDeque::new(),
            changes: BTreeMap::new(),
            stats: Stats::default(),
        }
    }
}

impl V2Store {
    /// The tree stored as `records` (path → node), at `index`. Records may come in any
    /// order; a record whose parent is missing or not a directory is an error.
    pub fn from_records(
        records: impl IntoIterator<Item = (String, NodeRecord)>,
        index: u64,
    ) -> Result<V2Store, String> {
        let mut store = V2Store {
            index,
            ..V2Store::default()
        };
        let mut sorted: Vec<(String, NodeRecord)> = records.into_iter().collect();
        // Parents before children: by depth, then by path.
        sorted.sort_by(|a, b| {
            let depth = |path: &str| path.matches('/').count();
            depth(&a.0).cmp(&depth(&b.0)).then_with(|| a.0.cmp(&b.0))
        });
        for (path, record) in sorted {
            if path != clean_path(&path) || path == "/" {
                return Err(format!("v2 node with a malformed path {path:?}"));
            }
            let (dir, name) = split_path(&path);
            let parent = store
                .node_mut(dir)
                .ok_or_else(|| format!("v2 node {path} without its directory"))?;
            let Body::Dir(children) = &mut parent.body else {
                return Err(format!("v2 node {path} below a value"));
            };
            let body = if record.dir {
                Body::Dir(BTreeMap::new())
            } else {
                Body::Value(record.value)
            };
            children.insert(
                name.to_owned(),
                Node {
                    created: record.created_index,
                    modified: record.modified_index,
                    expire_at: record.expire_at,
                    body,
                },
            );
            if record.expire_at != 0 {
                store.expiring.insert((record.expire_at, path));
            }
        }
        Ok(store)
    }

    /// The counts of operations since the member started.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The store's index: the number of changes made so far.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The earliest expiration of any node.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiring.first().map(|(at, _)| *at)
    }

    /// The changes since the last call, for the backend.
    pub fn take_changes(&mut self) -> BTreeMap<String, Option<NodeRecord>> {
        std::mem::take(&mut self.changes)
    }

    /// How many nodes the tree holds (the root not counted).
    pub fn node_count(&self) -> usize {
        fn count(node: &Node) -> usize {
            match &node.body {
                Body::Value(_) => 1,
                Body::Dir(children) => 1 + children.values().map(count).sum::<usize>(),
            }
        }
        count(&self.root) - 1
    }

    /// How many nodes expire.
    pub fn expiring_count(&self) -> usize {
        self.expiring.len()
    }

    fn node(&self, path: &str) -> Option<&Node> {
        let mut node = &self.root;
        for part in path.split('/').filter(|part| !part.is_empty()) {
            match &node.body {
                Body::Dir(children) => node = children.get(part)?,
                Body::Value(_) => return None,
            }
        }
        Some(node)
    }

    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut node = &mut self.root;
        for part in path.split('/').filter(|part| !part.is_empty()) {
            match &mut node.body {
                Body::Dir(children) => node = children.get_mut(part)?,
                Body::Value(_) => return None,
            }
        }
        Some(node)
    }

    /// etcd's `internalGet`: the node at a clean path, or "not a directory" naming the
    /// first value on the way, or "key not found" naming the first missing component.
    fn lookup(&self, path: &str) -> Result<&Node, V2Error> {
        let mut node = &self.root;
        let mut walked = String::new();
        for part in path.split('/').filter(|part| !part.is_empty()) {
            let Body::Dir(children) = &node.body else {
                let at = if walked.is_empty() { "/" } else { &walked };
                return Err(V2Error::new(code::NOT_DIR, at, self.index));
            };
            walked.push('/');
            walked.push_str(part);
            node = children
                .get(part)
                .ok_or_else(|| V2Error::new(code::KEY_NOT_FOUND, walked.clone(), self.index))?;
        }
        Ok(node)
    }

    fn read_only(&self, path: &str) -> Result<(), V2Error> {
        if path == "/" {
            return Err(V2Error::new(code::ROOT_READ_ONLY, "/", self.index));
        }
        Ok(())
    }

    fn record_change(&mut self, path: &str) {
        let record = self.node(path).map(Node::record);
        self.changes.insert(path.to_owned(), record);
    }

    fn set_expiry(&mut self, path: &str, old: i64, new: i64) {
        if old != 0 {
            self.expiring.remove(&(old, path.to_owned()));
        }
        if new != 0 {
            self.expiring.insert((new, path.to_owned()));
        }
    }

    fn remember(&mut self, event: Event) -> Arc<Event> {
        let event = Arc::new(event);
        if self.history.len() == HISTORY_EVENTS {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        event
    }

    /// A read of `path`.
    pub fn get(
        &self,
        path: &str,
        recursive: bool,
        sorted: bool,
        now: i64,
    ) -> Result<Event, V2Error> {
        let read = self.read(path, recursive, sorted, now);
        self.stats.count(Op::Get, read.is_ok());
        read
    }

    fn read(&self, path: &str, recursive: bool, sorted: bool, now: i64) -> Result<Event, V2Error> {
        let path = clean_path(path);
        let node = self.lookup(&path)?;
        let mut event = Event::new(Action::Get, &path, node.modified, node.created);
        event.etcd_index = self.index;
        let (expiration, ttl) = node.expiration_and_ttl(now);
        event.node.expiration = expiration;
        event.node.ttl = ttl;
        match &node.body {
            Body::Value(value) => event.node.value = Some(value.clone()),
            Body::Dir(children) => {
                event.node.dir = true;
                event.node.nodes = Some(children_views(children, &path, recursive, sorted, now));
            }
        }
        Ok(event)
    }

    /// etcd's `internalCreate`: a new value or directory at `path` (below it, named by the
    /// next index, when `unique`), replacing a value there when `replace`.
    fn create_node(
        &mut self,
        path: &str,
        dir: bool,
        value: String,
        unique: bool,
        replace: bool,
        expire_at: i64,
        action: Action,
        now: i64,
    ) -> Result<Event, V2Error> {
        let current = self.index;
        let next = current + 1;
        let mut path = clean_path(path);
        if unique {
            path = clean_path(&format!("{path}/{next:020}"));
        }
        self.read_only(&path)?;
        let expire_at = if expire_at < MIN_EXPIRE_UNIX_NANOS {
            0
        } else {
            expire_at
        };
        let (dir_path, name) = split_path(&path);
        let (dir_path, name) = (dir_path.to_owned(), name.to_owned());
        self.make_dirs(&dir_path, next)?;
        let mut event = Event::new(action, &path, next, next);
        let existing = match &self.node(&dir_path).expect("made above").body {
            Body::Dir(children) => children.get(&name).cloned(),
            Body::Value(_) => unreachable!("make_dirs answers directories"),
        };
        if let Some(existing) = existing {
            if !replace {
                return Err(V2Error::new(code::NODE_EXIST, path, current));
            }
            if existing.is_dir() {
                return Err(V2Error::new(code::NOT_FILE, path, current));
            }
            event.prev_node = Some(existing.view(&path, false, false, now));
            self.set_expiry(&path, existing.expire_at, 0);
        }
        let node = if dir {
            event.node.dir = true;
            Node::dir(next, expire_at)
        } else {
            event.node.value = Some(value.clone());
            Node {
                created: next,
                modified: next,
                expire_at,
                body: Body::Value(value),
            }
        };
        let (expiration, ttl) = node.expiration_and_ttl(now);
        event.node.expiration = expiration;
        event.node.ttl = ttl;
        self.set_expiry(&path, 0, expire_at);
        match &mut self.node_mut(&dir_path).expect("made above").body {
            Body::Dir(children) => children.insert(name, node),
            Body::Value(_) => unreachable!("make_dirs answers directories"),
        };
        self.record_change(&path);
        self.index = next;
        event.etcd_index = next;
        Ok(event)
    }

    /// etcd's `checkDir` along a path: the missing directories are made (numbered
    /// `index`); a value on the way is "not a directory".
    fn make_dirs(&mut self, dir_path: &str, index: u64) -> Result<(), V2Error> {
        let current = self.index;
        let mut walked = String::new();
        let mut made = Vec::new();
        {
            let mut node = &mut self.root;
            for part in dir_path.split('/').filter(|part| !part.is_empty()) {
                walked.push('/');
                walked.push_str(part);
                let Body::Dir(children) = &mut node.body else {
                    unreachable!("only directories are walked into");
                };
                let child = children.entry(part.to_owned()).or_insert_with(|| {
                    made.push(walked.clone());
                    Node::dir(index, 0)
                });
                if !child.is_dir() {
                    return Err(V2Error::new(code::NOT_DIR, walked, current));
                }
                node = child;
            }
        }
        for path in made {
            self.record_change(&path);
        }
        Ok(())
    }

    /// Sets `path` to a value or an empty directory, replacing a value there.
    pub fn set(
        &mut self,
        path: &str,
        dir: bool,
        value: String,
        expire_at: i64,
        refresh: bool,
        now: i64,
    ) -> Result<Arc<Event>, V2Error> {
        let path = clean_path(path);
        let existing = match self.lookup(&path) {
            Ok(node) => Some(node.view(&path, false, false, now)),
            Err(error) if error.code == code::KEY_NOT_FOUND && !refresh => None,
            Err(error) => return Err(error),
        };
        let value = match (&existing, refresh) {
            (Some(existing), true) => existing.value.clone().unwrap_or_default(),
            _ => value,
        };
        let mut event =
            self.create_node(&path, dir, value, false, true, expire_at, Action::Set, now)?;
        event.prev_node = existing;
        event.refresh = refresh;
        Ok(self.remember(event))
    }

    /// Creates `path` (or, with `unique`, a new key below it named by the next index).
    pub fn create(
        &mut self,
        path: &str,
        dir: bool,
        value: String,
        unique: bool,
        expire_at: i64,
        now: i64,
    ) -> Result<Arc<Event>, V2Error> {
        let event = self.create_node(
            path,
            dir,
            value,
            unique,
            false,
            expire_at,
            Action::Create,
            now,
        )?;
        Ok(self.remember(event))
    }

    /// Changes the value (or, of a directory, only the TTL) of an existing node.
    pub fn update(
        &mut self,
        path: &str,
        value: String,
        expire_at: i64,
        refresh: bool,
        now: i64,
    ) -> Result<Arc<Event>, V2Error> {
        let path = clean_path(path);
        self.read_only(&path)?;
        let current = self.index;
        let next = current + 1;
        let node = self.lookup(&path)?;
        if node.is_dir() && !value.is_empty() {
            return Err(V2Error::new(code::NOT_FILE, path, current));
        }
        let mut event = Event::new(Action::Update, &path, next, node.created);
        event.prev_node = Some(node.view(&path, false, false, now));
        let old_expiry = node.expire_at;
        let value = if refresh {
            node.value().to_owned()
        } else {
            value
        };
        let expire_at = if expire_at < MIN_EXPIRE_UNIX_NANOS {
            0
        } else {
            expire_at
        };
        let node = self.node_mut(&path).expect("looked up above");
        node.modified = next;
        node.expire_at = expire_at;
        match &mut node.body {
            Body::Value(old) => {
                *old = value.clone();
                event.node.value = Some(value);
            }
            Body::Dir(_) => event.node.dir = true,
        }
        let (expiration, ttl) = node.expiration_and_ttl(now);
        event.node.expiration = expiration;
        event.node.ttl = ttl;
        self.set_expiry(&path, old_expiry, expire_at);
        self.record_change(&path);
        self.index = next;
        event.etcd_index = next;
        event.refresh = refresh;
        Ok(self.remember(event))
    }

    fn compare(&self, path: &str, prev_value: &str, prev_index: u64) -> Result<&Node, V2Error> {
        let node = self.lookup(path)?;
        if node.is_dir() {
            return Err(V2Error::new(code::NOT_FILE, path, self.index));
        }
        let index_ok = prev_index == 0 || node.modified == prev_index;
        let value_ok = prev_value.is_empty() || node.value() == prev_value;
        let cause = match (value_ok, index_ok) {
            (true, true) => return Ok(node),
            (false, true) => format!("[{prev_value} != {}]", node.value()),
            (true, false) => format!("[{prev_index} != {}]", node.modified),
            (false, false) => format!(
                "[{prev_value} != {}] [{prev_index} != {}]",
                node.value(),
                node.modified
            ),
        };
        Err(V2Error::new(code::TEST_FAILED, cause, self.index))
    }

    /// Sets the value of `path` if its value and index are those given (empty and 0 match
    /// any).
    #[allow(clippy::too_many_arguments)]
    pub fn compare_and_swap(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        value: String,
        expire_at: i64,
        refresh: bool,
        now: i64,
    ) -> Result<Arc<Event>, V2Error> {
        let path = clean_path(path);
        self.read_only(&path)?;
        let node = self.compare(&path, prev_value, prev_index)?;
        let next = self.index + 1;
        let mut event = Event::new(Action::CompareAndSwap, &path, next, node.created);
        event.prev_node = Some(node.view(&path, false, false, now));
        let old_expiry = node.expire_at;
        let value = if refresh {
            node.value().to_owned()
        } else {
            value
        };
        let expire_at = if expire_at < MIN_EXPIRE_UNIX_NANOS {
            0
        } else {
            expire_at
        };
        let node = self.node_mut(&path).expect("compared above");
        node.modified = next;
        node.expire_at = expire_at;
        node.body = Body::Value(value.clone());
        let (expiration, ttl) = node.expiration_and_ttl(now);
        event.node.value = Some(value);
        event.node.expiration = expiration;
        event.node.ttl = ttl;
        self.set_expiry(&path, old_expiry, expire_at);
        self.record_change(&path);
        self.index = next;
        event.etcd_index = next;
        event.refresh = refresh;
        Ok(self.remember(event))
    }

    /// Takes the node at `path` out of the tree with everything below it.
    fn remove(&mut self, path: &str) {
        let (dir, name) = split_path(path);
        let removed = match self.node_mut(dir).map(|parent| &mut parent.body) {
            Some(Body::Dir(children)) => children.remove(name),
            _ => None,
        };
        let Some(removed) = removed else { return };
        let mut stack = vec![(path.to_owned(), removed)];
        while let Some((path, node)) = stack.pop() {
            self.set_expiry(&path, node.expire_at, 0);
            if let Body::Dir(children) = node.body {
                for (name, child) in children {
                    stack.push((child_path(&path, &name), child));
                }
            }
            self.changes.insert(path, None);
        }
    }

    /// Deletes a value, an empty directory (`dir`), or a directory with its contents
    /// (`recursive`).
    pub fn delete(
        &mut self,
        path: &str,
        dir: bool,
        recursive: bool,
        now: i64,
    ) -> Result<Arc<Event>, V2Error> {
        let path = clean_path(path);
        self.read_only(&path)?;
        let dir = dir || recursive;
        let node = self.lookup(&path)?;
        if let Body::Dir(children) = &node.body {
            if !dir {
                return Err(V2Error::new(code::NOT_FILE, path, self.index));
            }
            if !children.is_empty() && !recursive {
                return Err(V2Error::new(code::DIR_NOT_EMPTY, path, self.index));
            }
        }
        let next = self.index + 1;
        let mut event = Event::new(Action::Delete, &path, next, node.created);
        event.prev_node = Some(node.view(&path, false, false, now));
        event.node.dir = node.is_dir();
        self.remove(&path);
        self.index = next;
        event.etcd_index = next;
        Ok(self.remember(event))
    }

    /// Deletes the value at `path` if its value and index are those given.
    pub fn compare_and_delete(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        now: i64,
    ) -> Result<Arc<Event>, V2Error> {
        let path = clean_path(path);
        let node = self.compare(&path, prev_value, prev_index)?;
        let next = self.index + 1;
        let mut event = Event::new(Action::CompareAndDelete, &path, next, node.created);
        event.prev_node = Some(node.view(&path, false, false, now));
        self.remove(&path);
        self.index = next;
        event.etcd_index = next;
        Ok(self.remember(event))
    }

    /// Removes every node that expires at or before `cutoff`, one event each.
    pub fn expire(&mut self, cutoff: i64, now: i64) -> Vec<Arc<Event>> {
        let mut events = Vec::new();
        while let Some((at, path)) = self.expiring.first().cloned() {
            if at > cutoff {
                break;
            }
            let Some(node) = self.node(&path) else {
                self.expiring.remove(&(at, path));
                continue;
            };
            let next = self.index + 1;
            let mut event = Event::new(Action::Expire, &path, next, node.created);
            event.prev_node = Some(node.view(&path, false, false, now));
            event.node.dir = node.is_dir();
            self.remove(&path);
            self.index = next;
            event.etcd_index = next;
            events.push(self.remember(event));
        }
        self.stats
            .expired
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        events
    }

    /// Applies a request from the log, as etcd's `applyV2Request` does: POST creates a
    /// unique key; PUT sets, creates (prevExist=false), updates (prevExist=true) or
    /// compares and swaps (prevValue/prevIndex); DELETE deletes or compares and deletes;
    /// QGET reads; SYNC expires. A sync answers its last expiry, if any.
    pub fn apply(&mut self, request: &V2Request, now: i64) -> Result<Arc<Event>, V2Error> {
        let path = request.path.as_str();
        let value = request.val.clone();
        let expire_at = request.expiration;
        let compares = !request.prev_value.is_empty() || request.prev_index != 0;
        let (op, outcome) = match Method::try_from(request.method).unwrap_or(Method::Unknown) {
            Method::Post => (
                Op::Create,
                self.create(path, request.dir, value, true, expire_at, now),
            ),
            Method::Put => match request.prev_exist {
                Some(true) if !compares => (
                    Op::Update,
                    self.update(path, value, expire_at, request.refresh, now),
                ),
                Some(false) => (
                    Op::Create,
                    self.create(path, request.dir, value, false, expire_at, now),
                ),
                _ if compares => (
                    Op::CompareAndSwap,
                    self.compare_and_swap(
                        path,
                        &request.prev_value,
                        request.prev_index,
                        value,
                        expire_at,
                        request.refresh,
                        now,
                    ),
                ),
                _ => (
                    Op::Set,
                    self.set(path, request.dir, value, expire_at, request.refresh, now),
                ),
            },
            Method::Delete if compares => (
                Op::CompareAndDelete,
                self.compare_and_delete(path, &request.prev_value, request.prev_index, now),
            ),
            Method::Delete => (
                Op::Delete,
                self.delete(path, request.dir, request.recursive, now),
            ),
            Method::Qget => {
                return self
                    .get(path, request.recursive, request.sorted, now)
                    .map(Arc::new)
            }
            Method::Sync => {
                let expired = self.expire(request.time, now);
                return Ok(expired.last().cloned().unwrap_or_else(|| {
                    let mut event = Event::new(Action::Expire, "/", self.index, 0);
                    event.etcd_index = self.index;
                    Arc::new(event)
                }));
            }
            Method::Unknown => {
                return Err(V2Error::new(
                    code::INVALID_FIELD,
                    format!("unknown method {}", request.method),
                    self.index,
                ))
            }
        };
        self.stats.count(op, outcome.is_ok());
        outcome
    }

    /// The events of the history after `index`, oldest first.
    pub fn events_after(&self, index: u64) -> Vec<Arc<Event>> {
        let newer = self
            .history
            .iter()
            .rev()
            .take_while(|event| event.index() > index)
            .count();
        self.history
            .iter()
            .skip(self.history.len() - newer)
            .cloned()
            .collect()
    }

    /// The first event at or after `since` that a watch of `key` sees; `None` when none
    /// has happened yet; "outdated and cleared" when `since` is older than the history.
    pub fn scan(
        &self,
        key: &str,
        recursive: bool,
        since: u64,
    ) -> Result<Option<Arc<Event>>, V2Error> {
        let start = self
            .history
            .front()
            .map_or(self.index + 1, |event| event.index());
        if since < start && since <= self.index {
            return Err(V2Error::new(
                code::EVENT_INDEX_CLEARED,
                format!("the requested history has been cleared [{start}/{since}]"),
                self.index,
            ));
        }
        Ok(self
            .history
            .iter()
            .find(|event| event.index() >= since && event.concerns(key, recursive))
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000 * NANOS_PER_SECOND;

    fn set(store: &mut V2Store, path: &str, value: &str) -> Arc<Event> {
        store.set(path, false, value.into(), 0, false, NOW).unwrap()
    }

    #[test]
    fn indexes_count_changes_and_answers_carry_them() {
        let mut store = V2Store::default();
        let first = set(&mut store, "/foo", "bar");
        assert_eq!(
            (first.action, first.node.created, first.etcd_index),
            (Action::Set, 1, 1)
        );
        assert!(first.is_created());
        let second = set(&mut store, "foo", "baz");
        assert_eq!(second.node.modified, 2);
        assert_eq!(second.node.created, 2, "a set replaces the node");
        assert_eq!(
            second.prev_node.as_ref().unwrap().value.as_deref(),
            Some("bar")
        );
        assert!(!second.is_created());
        let read = store.get("/foo", false, false, NOW).unwrap();
        assert_eq!(read.node.value.as_deref(), Some("baz"));
        assert_eq!(read.etcd_index, 2);
    }

    #[test]
    fn errors_name_etcds_causes() {
        let mut store = V2Store::default();
        set(&mut store, "/foo", "baz");
        let error = store
            .create("/foo", false, "x".into(), false, 0, NOW)
            .unwrap_err();
        assert_eq!(
            (error.code, error.cause.as_str(), error.index),
            (105, "/foo", 1)
        );
        let error = store
            .compare_and_swap("/foo", "nope", 0, "x".into(), 0, false, NOW)
            .unwrap_err();
        assert_eq!((error.code, error.cause.as_str()), (101, "[nope != baz]"));
        let error = store
            .compare_and_swap("/foo", "nope", 7, "x".into(), 0, false, NOW)
            .unwrap_err();
        assert_eq!(error.cause, "[nope != baz] [7 != 1]");
        let error = store
            .set("/foo/x", false, "1".into(), 0, false, NOW)
            .unwrap_err();
        assert_eq!((error.code, error.cause.as_str()), (104, "/foo"));
        let error = store.get("/nokey/deeper", false, false, NOW).unwrap_err();
        assert_eq!((error.code, error.cause.as_str()), (100, "/nokey"));
        let error = store.delete("/", true, true, NOW).unwrap_err();
        assert_eq!((error.code, error.cause.as_str()), (107, "/"));
        assert_eq!(store.index(), 1, "failures change nothing");
    }

    #[test]
    fn directories_hold_children_and_delete_as_etcd_deletes_them() {
        let mut store = V2Store::default();
        set(&mut store, "/dir/a", "1");
        set(&mut store, "/dir/_hidden", "h");
        let listing = store.get("/dir", false, false, NOW).unwrap();
        let keys: Vec<_> = listing
            .node
            .nodes
            .unwrap()
            .into_iter()
            .map(|n| n.key)
            .collect();
        assert_eq!(keys, ["/dir/a"], "hidden nodes are not listed");
        assert_eq!(
            store.delete("/dir", false, false, NOW).unwrap_err().code,
            102
        );
        assert_eq!(
            store.delete("/dir", true, false, NOW).unwrap_err().code,
            108
        );
        let deleted = store.delete("/dir", false, true, NOW).unwrap();
        assert_eq!(
            (deleted.action, deleted.node.dir, deleted.node.created),
            (Action::Delete, true, 1)
        );
        assert_eq!(store.node_count(), 0);
        let changes = store.take_changes();
        assert!(changes.values().all(Option::is_none), "{changes:?}");
        assert_eq!(changes.len(), 3);
    }

    #[test]
    fn in_order_keys_are_named_by_the_index() {
        let mut store = V2Store::default();
        set(&mut store, "/x", "1");
        let created = store
            .create("/q", false, "j1".into(), true, 0, NOW)
            .unwrap();
        assert_eq!(created.node.key, "/q/00000000000000000002");
        assert_eq!(created.action, Action::Create);
    }

    #[test]
    fn nodes_expire_at_a_sync_and_watches_see_it() {
        let mut store = V2Store::default();
        let at = NOW + 5 * NANOS_PER_SECOND;
        let created = store.set("/t", false, "1".into(), at, false, NOW).unwrap();
        assert_eq!(created.node.ttl, 5);
        assert_eq!(store.get("/t", false, false, NOW + 1).unwrap().node.ttl, 5);
        assert_eq!(store.next_expiry(), Some(at));
        assert!(store.expire(at - 1, NOW).is_empty());
        let expired = store.expire(at, NOW);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].action, Action::Expire);
        assert_eq!(store.next_expiry(), None);
        assert_eq!(store.get("/t", false, false, NOW).unwrap_err().code, 100);
        let seen = store.scan("/t", false, 2).unwrap().unwrap();
        assert_eq!(seen.action, Action::Expire);
    }

    #[test]
    fn watches_see_their_key_below_it_and_the_removal_of_a_directory_above_it() {
        let mut store = V2Store::default();
        set(&mut store, "/w/k", "1");
        set(&mut store, "/w/_h", "1");
        assert_eq!(store.scan("/w", false, 1).unwrap(), None);
        assert_eq!(store.scan("/w", true, 1).unwrap().unwrap().node.key, "/w/k");
        assert_eq!(
            store.scan("/w", true, 2).unwrap(),
            None,
            "hidden below the watch"
        );
        assert_eq!(
            store.scan("/w/_h", false, 2).unwrap().unwrap().node.key,
            "/w/_h"
        );
        store.delete("/w", true, true, NOW).unwrap();
        assert_eq!(
            store.scan("/w/k", false, 3).unwrap().unwrap().action,
            Action::Delete
        );
        assert_eq!(store.scan("/", true, 4).unwrap(), None);
    }

    #[test]
    fn the_history_keeps_the_newest_thousand_events() {
        let mut store = V2Store::default();
        for n in 0..(HISTORY_EVENTS + 5) {
            set(&mut store, "/k", &n.to_string());
        }
        let error = store.scan("/k", false, 3).unwrap_err();
        assert_eq!(error.code, 401);
        assert_eq!(error.cause, "the requested history has been cleared [6/3]");
        assert_eq!(store.scan("/k", false, 6).unwrap().unwrap().index(), 6);
    }

    #[test]
    fn records_rebuild_the_same_tree() {
        let mut store = V2Store::default();
        set(&mut store, "/a/b/c", "1");
        store
            .set(
                "/a/t",
                false,
                "2".into(),
                NOW + NANOS_PER_SECOND,
                false,
                NOW,
            )
            .unwrap();
        store
            .create("/d", true, String::new(), false, 0, NOW)
            .unwrap();
        store.delete("/a/b", true, true, NOW).unwrap();
        let mut table = BTreeMap::new();
        for (path, record) in store.take_changes() {
            match record {
                Some(record) => table.insert(path, record),
                None => table.remove(&path),
            };
        }
        let rebuilt = V2Store::from_records(table, store.index()).unwrap();
        assert_eq!(rebuilt.root, store.root);
        assert_eq!(rebuilt.expiring, store.expiring);
        assert!(V2Store::from_records([("/x/y".to_owned(), NodeRecord::default())], 1).is_err());
    }

    #[test]
    fn requests_dispatch_as_etcd_dispatches_them() {
        let mut store = V2Store::default();
        let put = |path: &str, value: &str| V2Request {
            method: Method::Put as i32,
            path: path.into(),
            val: value.into(),
            ..V2Request::default()
        };
        store.apply(&put("/k", "1"), NOW).unwrap();
        let mut update = put("/k", "2");
        update.prev_exist = Some(true);
        assert_eq!(store.apply(&update, NOW).unwrap().action, Action::Update);
        let mut missing = put("/none", "2");
        missing.prev_exist = Some(true);
        assert_eq!(store.apply(&missing, NOW).unwrap_err().code, 100);
        let mut swap = put("/k", "3");
        swap.prev_index = 2;
        assert_eq!(
            store.apply(&swap, NOW).unwrap().action,
            Action::CompareAndSwap
        );
        let delete = V2Request {
            method: Method::Delete as i32,
            path: "/k".into(),
            prev_value: "3".into(),
            ..V2Request::default()
        };
        assert_eq!(
            store.apply(&delete, NOW).unwrap().action,
            Action::CompareAndDelete
        );
        assert_eq!(store.stats().of(Op::Set), (1, 0));
        assert_eq!(store.stats().of(Op::Update), (1, 1));
        assert_eq!(store.stats().of(Op::CompareAndSwap), (1, 0));
        assert_eq!(store.stats().of(Op::CompareAndDelete), (1, 0));
    }
}
