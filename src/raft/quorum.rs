//! Quorums: a majority of one voter set, or of two at once during a joint configuration.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither won nor lost yet: more votes may decide it.
    Pending,
    Lost,
    Won,
}

/// A set of voters decided by simple majority.
pub type MajorityConfig = BTreeSet<u64>;

/// The highest index acknowledged by a majority of `voters`; `acked` gives each voter's
/// acknowledged index (unknown counts as 0). An empty set commits everything, so that it
/// never limits a joint configuration with an empty outgoing half.
pub fn majority_committed(voters: &MajorityConfig, acked: &impl Fn(u64) -> Option<u64>) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    let mut indexes: Vec<u64> = voters.iter().map(|&id| acked(id).unwrap_or(0)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

/// The outcome of an election over `voters`; `vote` gives each voter's vote if cast.
pub fn majority_vote(voters: &MajorityConfig, vote: &impl Fn(u64) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for &id in voters {
        match vote(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The voters of a configuration: `incoming` alone, or both halves while joint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// Committed means committed in both halves.
    pub fn committed(&self, acked: impl Fn(u64) -> Option<u64>) -> u64 {
        majority_committed(&self.incoming, &acked).min(majority_committed(&self.outgoing, &acked))
    }

    /// Won only when both halves won; lost when either lost.
    pub fn vote_result(&self, vote: impl Fn(u64) -> Option<bool>) -> VoteResult {
        let incoming = majority_vote(&self.incoming, &vote);
        let outgoing = majority_vote(&self.outgoing, &vote);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn set(ids: &[u64]) -> MajorityConfig {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_committed_table() {
        let cases: &[(&[u64], &[(u64, u64)], u64)] = &[
            (&[1], &[(1, 5)], 5),
            (&[1, 2], &[(1, 5), (2, 3)], 3),
            (&[1, 2, 3], &[(1, 5), (2, 3)], 3),
            (&[1, 2, 3], &[(1, 5)], 0),
            (&[1, 2, 3, 4], &[(1, 5), (2, 4), (3, 3), (4, 2)], 3),
            (&[1, 2, 3, 4, 5], &[(1, 9), (2, 9), (3, 1), (4, 1)], 1),
            (&[], &[], u64::MAX),
        ];
        for (voters, acked, want) in cases {
            let acked: BTreeMap<u64, u64> = acked.iter().copied().collect();
            let got = majority_committed(&set(voters), &|id| acked.get(&id).copied());
            assert_eq!(got, *want, "voters {voters:?} acked {acked:?}");
        }
    }

    #[test]
    fn majority_vote_table() {
        let cases: &[(&[u64], &[(u64, bool)], VoteResult)] = &[
            (&[1, 2, 3], &[(1, true)], VoteResult::Pending),
            (&[1, 2, 3], &[(1, true), (2, true)], VoteResult::Won),
            (&[1, 2, 3], &[(1, false), (2, false)], VoteResult::Lost),
            (
                &[1, 2, 3, 4],
                &[(1, true), (2, true), (3, false)],
                VoteResult::Pending,
            ),
            (
                &[1, 2, 3, 4],
                &[(1, true), (2, false), (3, false)],
                VoteResult::Lost,
            ),
            (&[], &[], VoteResult::Won),
        ];
        for (voters, votes, want) in cases {
            let votes: BTreeMap<u64, bool> = votes.iter().copied().collect();
            assert_eq!(
                majority_vote(&set(voters), &|id| votes.get(&id).copied()),
                *want
            );
        }
    }

    /// The slow, obviously right answer: the largest index such that a majority of each
    /// non-empty half acknowledged at least it.
    fn naive_committed(config: &JointConfig, acked: &BTreeMap<u64, u64>) -> u64 {
        let candidates: BTreeSet<u64> = acked.values().copied().chain([0]).collect();
        let ok = |half: &MajorityConfig, index: u64| {
            half.is_empty()
                || half
                    .iter()
                    .filter(|id| acked.get(id).copied().unwrap_or(0) >= index)
                    .count()
                    > half.len() / 2
        };
        let best = candidates
            .into_iter()
            .filter(|&index| ok(&config.incoming, index) && ok(&config.outgoing, index))
            .max()
            .unwrap_or(0);
        if config.incoming.is_empty() && config.outgoing.is_empty() {
            u64::MAX
        } else {
            best
        }
    }

    proptest! {
        #[test]
        fn joint_committed_matches_naive(
            incoming in proptest::collection::btree_set(1u64..8, 0..6),
            outgoing in proptest::collection::btree_set(1u64..8, 0..6),
            acked in proptest::collection::btree_map(1u64..8, 0u64..20, 0..8),
        ) {
            let config = JointConfig { incoming, outgoing };
            let got = config.committed(|id| acked.get(&id).copied());
            prop_assert_eq!(got, naive_committed(&config, &acked));
        }
    }
}
