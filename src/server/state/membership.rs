//! The cluster's membership as this member knows it (etcd's `RaftCluster`): every member's
//! record, the members removed for good, the Raft configuration after each recent change,
//! the changes the Raft task refused, and when each peer was last heard from.
//!
//! Membership owns its persistence: every change to the member list is written to the
//! backend by the method that makes it (`save` after a change applied from the log), and
//! the transport is told which peers to carry messages to, so the three never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::proto::oxcdpb::Member;
use crate::raft::{ConfChangeType, ConfState};
use crate::server::state::store::Store;
use crate::server::types::error::ServerError;
use crate::server::types::transport::Transport;

/// Membership changes remembered by log index (see `Membership::conf_state_at`).
const CONF_HISTORY_MAX: usize = 64;

pub(crate) struct Membership {
    /// This member's id.
    own_id: u64,
    /// Where the member list is persisted.
    store: Store,
    /// Carries Raft messages to the peers the list names.
    transport: Arc<dyn Transport>,
    /// A peer silent for longer than this has lost contact.
    contact_timeout: Duration,
    /// Every member's name and URLs: the initial cluster, updated by what members publish.
    /// Lock order: `members` before `removed`; neither is held across an await.
    members: Mutex<BTreeMap<u64, Member>>,
    /// Members removed from the cluster (their ids may never return).
    removed: Mutex<BTreeSet<u64>>,
    /// The configuration after each recent configuration change, by log index; the newest is
    /// the one in force. A snapshot sent to a peer carries the configuration as of the
    /// backend image it ships.
    conf_history: Mutex<BTreeMap<u64, ConfState>>,
    /// Committed membership changes the Raft task refused, by log index, with why; the
    /// applier answers their proposers with it.
    conf_refusals: Mutex<HashMap<u64, ServerError>>,
    /// When each peer's current run of contact began, and when it was last heard from.
    peer_contact: Mutex<HashMap<u64, (Instant, Instant)>>,
}

impl Membership {
    pub(crate) fn new(
        own_id: u64,
        store: Store,
        transport: Arc<dyn Transport>,
        contact_timeout: Duration,
        applied_index: u64,
        conf_state: ConfState,
    ) -> Membership {
        Membership {
            own_id,
            store,
            transport,
            contact_timeout,
            members: Mutex::default(),
            removed: Mutex::default(),
            conf_history: Mutex::new([(applied_index, conf_state)].into()),
            conf_refusals: Mutex::default(),
            peer_contact: Mutex::default(),
        }
    }

    /// Every known member, in id order.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.members
            .lock()
            .expect("members lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// The record of member `id`, if it is a member.
    pub(crate) fn member(&self, id: u64) -> Option<Member> {
        self.members
            .lock()
            .expect("members lock poisoned")
            .get(&id)
            .cloned()
    }

    /// Records a member (from the initial cluster, the backend, or an applied publication).
    pub(crate) fn set_member(&self, record: Member) {
        let mut members = self.members.lock().expect("members lock poisoned");
        match members.get_mut(&record.id) {
            // A publication may lack what the bootstrap knew, and the reverse.
            Some(known) => {
                if !record.name.is_empty() {
                    known.name = record.name;
                }
                if !record.peer_urls.is_empty() {
                    known.peer_urls = record.peer_urls;
                }
                if !record.client_urls.is_empty() {
                    known.client_urls = record.client_urls;
                }
                // Learner status changes only through a membership change
                // (`apply_change`), never through what a member publishes.
            }
            None => {
                members.insert(record.id, record);
            }
        }
    }

    /// A member's publication of its name and client URLs, applied from the log and saved.
    /// A member removed meanwhile does not come back by publishing.
    pub(crate) fn publish(&self, record: Member) {
        if !self.is_removed(record.id) {
            self.set_member(record);
            self.save();
        }
    }

    /// Applies a committed membership change about `record` to the member list and the
    /// transport. Returns whether this member was removed.
    pub(crate) fn apply_change(&self, change: ConfChangeType, record: &Member) -> bool {
        let mut members = self.members.lock().expect("members lock poisoned");
        match change {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let learner = change == ConfChangeType::AddLearnerNode;
                let entry = members.entry(record.id).or_insert_with(|| record.clone());
                entry.is_learner = learner;
                if entry.peer_urls.is_empty() {
                    entry.peer_urls = record.peer_urls.clone();
                }
                let url = entry.peer_urls.first().cloned();
                drop(members);
                if let (Some(url), true) = (url, record.id != self.own_id) {
                    self.transport.add_peer(record.id, url);
                }
                false
            }
            ConfChangeType::RemoveNode => {
                members.remove(&record.id);
                drop(members);
                self.removed
                    .lock()
                    .expect("removed lock poisoned")
                    .insert(record.id);
                self.transport.remove_peer(record.id);
                record.id == self.own_id
            }
        }
    }

    /// New peer URLs for a member (MemberUpdate), applied from the log and saved. Returns
    /// whether `id` is a member.
    pub(crate) fn update_peer_urls(&self, id: u64, peer_urls: Vec<String>) -> bool {
        let mut members = self.members.lock().expect("members lock poisoned");
        let Some(known) = members.get_mut(&id) else {
            return false;
        };
        known.peer_urls = peer_urls.clone();
        drop(members);
        if id != self.own_id {
            if let Some(url) = peer_urls.first() {
                self.transport.remove_peer(id);
                self.transport.add_peer(id, url.clone());
            }
        }
        self.save();
        true
    }

    /// A peer that sent messages from `url` while this member's list does not name it: a
    /// member added while this one was away (partitioned, or behind the leader's log) may
    /// lead by the time this one is back, and this member learns of the addition only from
    /// the entries or the snapshot that peer sends, which it sends only once it hears
    /// answers. So the answers go to the URL the peer gave, until the list catches up.
    /// Removed members, this member itself and listed members are left as they are.
    pub(crate) fn answer_unlisted(&self, id: u64, url: &str) {
        if id == self.own_id || self.is_removed(id) {
            return;
        }
        if self
            .members
            .lock()
            .expect("members lock poisoned")
            .contains_key(&id)
        {
            return;
        }
        tracing::info!(peer = %format!("{id:x}"), url, "answering a member not yet in this member's list");
        self.transport.add_peer(id, url.to_string());
    }

    /// Members removed from the cluster (their ids may never return).
    pub(crate) fn removed(&self) -> Vec<u64> {
        self.removed
            .lock()
            .expect("removed lock poisoned")
            .iter()
            .copied()
            .collect()
    }

    pub(crate) fn is_removed(&self, id: u64) -> bool {
        self.removed
            .lock()
            .expect("removed lock poisoned")
            .contains(&id)
    }

    /// Replaces the member list with the one of a leader's snapshot (`records`, `removed`):
    /// members it does not list are gone, and the transport follows. The changes that made
    /// the difference were folded into the snapshot, so they never apply here one by one.
    pub(crate) fn replace(&self, records: Vec<Member>, removed: Vec<u64>) {
        // A removed peer may have been answered before it was listed (`answer_unlisted`).
        for &id in removed.iter().filter(|&&id| id != self.own_id) {
            self.transport.remove_peer(id);
        }
        self.set_removed(removed);
        let listed: BTreeSet<u64> = records.iter().map(|r| r.id).collect();
        let dropped: Vec<u64> = {
            let mut members = self.members.lock().expect("members lock poisoned");
            let dropped: Vec<u64> = members
                .keys()
                .copied()
                .filter(|id| !listed.contains(id))
                .collect();
            for id in &dropped {
                members.remove(id);
            }
            dropped
        };
        for id in dropped.into_iter().filter(|&id| id != self.own_id) {
            self.transport.remove_peer(id);
        }
        for record in records {
            let (id, learner, url) = (
                record.id,
                record.is_learner,
                record.peer_urls.first().cloned(),
            );
            self.set_member(record);
            if let Some(known) = self
                .members
                .lock()
                .expect("members lock poisoned")
                .get_mut(&id)
            {
                known.is_learner = learner;
            }
            if let (Some(url), true) = (url, id != self.own_id) {
                self.transport.add_peer(id, url);
            }
        }
    }

    pub(crate) fn set_removed(&self, removed: impl IntoIterator<Item = u64>) {
        self.removed
            .lock()
            .expect("removed lock poisoned")
            .extend(removed);
    }

    /// Writes the member list and the removed members to the backend (committed with the
    /// applier's batch, together with the applied index of the change).
    pub(crate) fn save(&self) {
        self.store.save_members(&self.members(), &self.removed());
    }

    /// Starts carrying Raft messages to every listed member but this one.
    pub(crate) fn connect_peers(&self) {
        for record in self.members() {
            if let (Some(url), true) = (record.peer_urls.first(), record.id != self.own_id) {
                self.transport.add_peer(record.id, url.clone());
            }
        }
    }

    /// The configuration in force now: the newest one recorded.
    pub(crate) fn conf_state(&self) -> ConfState {
        let history = self
            .conf_history
            .lock()
            .expect("conf history lock poisoned");
        history.values().next_back().cloned().unwrap_or_default()
    }

    /// Records the configuration in force from log index `index` on.
    pub(crate) fn record_conf_state(&self, index: u64, conf_state: ConfState) {
        let mut history = self
            .conf_history
            .lock()
            .expect("conf history lock poisoned");
        history.insert(index, conf_state);
        // Only recent changes matter: a snapshot ships an image at or after the newest
        // applied index, never far behind the newest change.
        while history.len() > CONF_HISTORY_MAX {
            history.pop_first();
        }
    }

    /// The configuration in force at log index `index`.
    pub(crate) fn conf_state_at(&self, index: u64) -> Option<ConfState> {
        let history = self
            .conf_history
            .lock()
            .expect("conf history lock poisoned");
        history
            .range(..=index)
            .next_back()
            .map(|(_, cs)| cs.clone())
    }

    /// Records that the membership change at `index` was refused (by the Raft task, before
    /// the applier reaches it).
    pub(crate) fn refuse_conf_change(&self, index: u64, error: ServerError) {
        self.conf_refusals
            .lock()
            .expect("refusals lock poisoned")
            .insert(index, error);
    }

    /// Why the membership change at `index` was refused, if it was (asked once).
    pub(crate) fn conf_change_refusal(&self, index: u64) -> Option<ServerError> {
        self.conf_refusals
            .lock()
            .expect("refusals lock poisoned")
            .remove(&index)
    }

    /// Records that Raft messages arrived from peer `id`.
    pub(crate) fn heard_from(&self, id: u64) {
        let now = Instant::now();
        let mut contact = self
            .peer_contact
            .lock()
            .expect("peer contact lock poisoned");
        let entry = contact.entry(id).or_insert((now, now));
        if now.duration_since(entry.1) > self.contact_timeout {
            // Silent for longer than an election timeout: contact was lost in between.
            entry.0 = now;
        }
        entry.1 = now;
    }

    /// Since when peer `id` has been heard from without a break of an election timeout;
    /// `None` if it is not heard from now. The leader hears from every member.
    pub(crate) fn in_contact_since(&self, id: u64) -> Option<Instant> {
        let contact = self
            .peer_contact
            .lock()
            .expect("peer contact lock poisoned");
        let (since, last) = *contact.get(&id)?;
        (last.elapsed() <= self.contact_timeout).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Disk, StdDisk, SystemClock};
    use crate::raft::Message;
    use crate::server::types::config::Config;

    /// A transport that records which peers it was told to carry messages to.
    #[derive(Default)]
    struct Peers(Mutex<BTreeMap<u64, String>>);

    impl Transport for Peers {
        fn send(&self, _message: Message) {}
        fn add_peer(&self, id: u64, url: String) {
            self.0.lock().unwrap().entry(id).or_insert(url);
        }
        fn remove_peer(&self, id: u64) {
            self.0.lock().unwrap().remove(&id);
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        peers: Arc<Peers>,
        membership: Membership,
    }

    fn record(id: u64, url: &str) -> Member {
        Member {
            id,
            name: format!("m{id}"),
            peer_urls: vec![url.to_string()],
            client_urls: Vec::new(),
            is_learner: false,
        }
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_str().expect("utf-8 path");
        let config = Config::try_parse_from(["oxcd", "--data-dir", data_dir]).expect("flags");
        let disk: Arc<dyn Disk> = Arc::new(StdDisk);
        disk.create_dir_all(&config.snap_dir()).expect("snap dir");
        let store = Store::open(
            disk,
            Arc::new(SystemClock),
            &config,
            1,
            Arc::new(crate::server::types::metrics::Metrics::new(false)),
        )
        .expect("store");
        let peers = Arc::new(Peers::default());
        let membership = Membership::new(
            1,
            store.clone(),
            peers.clone(),
            Duration::from_secs(1),
            0,
            ConfState::default(),
        );
        Fixture {
            _dir: dir,
            store,
            peers,
            membership,
        }
    }

    use clap::Parser as _;

    #[test]
    fn an_added_member_is_listed_connected_and_saved() {
        let fixture = fixture();
        let membership = &fixture.membership;
        membership.set_member(record(1, "http://127.0.0.1:1"));
        assert!(!membership.apply_change(
            ConfChangeType::AddLearnerNode,
            &record(2, "http://127.0.0.1:2")
        ));
        membership.save();
        assert!(membership.member(2).expect("listed").is_learner);
        // The transport carries messages to the peer, never to this member itself.
        let peers = fixture.peers.0.lock().unwrap().clone();
        assert_eq!(peers.keys().copied().collect::<Vec<_>>(), vec![2]);
        let saved = fixture.store.member_records();
        assert_eq!(
            saved.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 2]
        );

        // Promotion is a second addition, as a voter.
        membership.apply_change(ConfChangeType::AddNode, &record(2, "http://127.0.0.1:2"));
        assert!(!membership.member(2).expect("listed").is_learner);
    }

    #[test]
    fn a_removed_member_never_comes_back_by_publishing() {
        let fixture = fixture();
        let membership = &fixture.membership;
        membership.set_member(record(1, "http://127.0.0.1:1"));
        membership.apply_change(ConfChangeType::AddNode, &record(2, "http://127.0.0.1:2"));
        assert!(!membership.apply_change(ConfChangeType::RemoveNode, &record(2, "")));
        membership.save();
        membership.publish(record(2, "http://127.0.0.1:2"));
        assert!(membership.member(2).is_none());
        assert!(membership.is_removed(2));
        assert!(fixture.peers.0.lock().unwrap().is_empty());
        let saved = fixture.store.member_records();
        assert_eq!(saved.removed, vec![2]);
        assert!(saved.members.iter().all(|m| m.id != 2));
    }

    #[test]
    fn removing_this_member_says_so() {
        let fixture = fixture();
        fixture
            .membership
            .set_member(record(1, "http://127.0.0.1:1"));
        assert!(fixture
            .membership
            .apply_change(ConfChangeType::RemoveNode, &record(1, "")));
    }

    #[test]
    fn a_publication_keeps_what_it_does_not_carry() {
        let fixture = fixture();
        let membership = &fixture.membership;
        membership.set_member(record(3, "http://127.0.0.1:3"));
        let mut published = record(3, "");
        published.peer_urls.clear();
        published.client_urls = vec!["http://127.0.0.1:2379".into()];
        membership.publish(published);
        let known = membership.member(3).expect("listed");
        assert_eq!(known.peer_urls, vec!["http://127.0.0.1:3".to_string()]);
        assert_eq!(known.client_urls, vec!["http://127.0.0.1:2379".to_string()]);
    }

    #[test]
    fn a_peer_not_yet_listed_is_answered_until_the_list_names_or_removes_it() {
        let fixture = fixture();
        let membership = &fixture.membership;
        membership.set_member(record(1, "http://127.0.0.1:1"));
        membership.apply_change(ConfChangeType::AddNode, &record(2, "http://127.0.0.1:2"));
        // Member 3 joined while this one was away and now sends it messages.
        membership.answer_unlisted(3, "http://127.0.0.1:3");
        let peers = fixture.peers.0.lock().unwrap().clone();
        assert_eq!(
            peers.get(&3).map(String::as_str),
            Some("http://127.0.0.1:3")
        );
        // It is answered, not listed: the list changes only by what the log says.
        assert!(membership.member(3).is_none());
        // Neither this member, a listed member's URL, nor a removed member is touched.
        membership.answer_unlisted(1, "http://127.0.0.1:9");
        membership.answer_unlisted(2, "http://127.0.0.1:9");
        membership.apply_change(ConfChangeType::RemoveNode, &record(4, ""));
        membership.answer_unlisted(4, "http://127.0.0.1:4");
        let peers = fixture.peers.0.lock().unwrap().clone();
        assert_eq!(peers.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(peers[&2], "http://127.0.0.1:2");
        // A snapshot that says it was removed drops it from the transport too.
        membership.replace(vec![record(1, "http://127.0.0.1:1")], vec![3]);
        assert!(fixture.peers.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_snapshot_replaces_the_member_list_and_the_peers() {
        let fixture = fixture();
        let membership = &fixture.membership;
        membership.set_member(record(1, "http://127.0.0.1:1"));
        membership.apply_change(ConfChangeType::AddNode, &record(2, "http://127.0.0.1:2"));
        let mut learner = record(4, "http://127.0.0.1:4");
        learner.is_learner = true;
        membership.replace(vec![record(1, "http://127.0.0.1:1"), learner], vec![2]);
        assert_eq!(
            membership
                .members()
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert!(membership.member(4).expect("listed").is_learner);
        assert!(membership.is_removed(2));
        let peers = fixture.peers.0.lock().unwrap().clone();
        assert_eq!(peers.keys().copied().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn new_peer_urls_move_the_peer() {
        let fixture = fixture();
        let membership = &fixture.membership;
        membership.apply_change(ConfChangeType::AddNode, &record(2, "http://127.0.0.1:2"));
        assert!(membership.update_peer_urls(2, vec!["http://127.0.0.1:22".into()]));
        assert!(!membership.update_peer_urls(9, vec!["http://127.0.0.1:9".into()]));
        let peers = fixture.peers.0.lock().unwrap().clone();
        assert_eq!(
            peers.get(&2).map(String::as_str),
            Some("http://127.0.0.1:22")
        );
        let saved = fixture.store.member_records();
        assert_eq!(
            saved.members[0].peer_urls,
            vec!["http://127.0.0.1:22".to_string()]
        );
    }

    #[test]
    fn the_configuration_at_an_index_is_the_newest_at_or_before_it() {
        let fixture = fixture();
        let membership = &fixture.membership;
        let voters = |ids: &[u64]| ConfState {
            voters: ids.to_vec(),
            ..Default::default()
        };
        membership.record_conf_state(10, voters(&[1, 2]));
        membership.record_conf_state(20, voters(&[1, 2, 3]));
        assert_eq!(membership.conf_state_at(5), Some(ConfState::default()));
        assert_eq!(membership.conf_state_at(15), Some(voters(&[1, 2])));
        assert_eq!(membership.conf_state_at(25), Some(voters(&[1, 2, 3])));
        assert_eq!(membership.conf_state(), voters(&[1, 2, 3]));
        for index in 0..(CONF_HISTORY_MAX as u64 + 5) {
            membership.record_conf_state(100 + index, voters(&[1]));
        }
        assert_eq!(
            membership.conf_state_at(15),
            None,
            "old changes are forgotten"
        );
    }

    #[test]
    fn a_refusal_is_told_once() {
        let fixture = fixture();
        fixture
            .membership
            .refuse_conf_change(7, ServerError::MemberIdExists);
        assert_eq!(
            fixture.membership.conf_change_refusal(7),
            Some(ServerError::MemberIdExists)
        );
        assert_eq!(fixture.membership.conf_change_refusal(7), None);
    }
}
