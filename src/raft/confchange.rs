//! Membership changes: from one tracker configuration and a `ConfChangeV2` to the next.
//!
//! A change that alters at most one voter may be applied directly. Anything else goes
//! through a joint configuration (Raft thesis §4.3): the old voters become the outgoing
//! half, the changes are applied to the incoming half, decisions need a majority of both,
//! and a later empty change leaves the joint state. A voter demoted to learner while joint
//! stays a voter of the outgoing half and becomes a learner when the joint state is left.

use super::progress::TrackerConfig;
use super::types::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use super::Error;

/// Whether `change` leaves a joint configuration.
pub fn leaves_joint(change: &ConfChangeV2) -> bool {
    change.changes.is_empty()
}

/// Whether `change` enters a joint configuration, and if so whether it leaves it by itself.
pub fn enters_joint(change: &ConfChangeV2) -> Option<bool> {
    let transition =
        ConfChangeTransition::try_from(change.transition).unwrap_or(ConfChangeTransition::Auto);
    match transition {
        ConfChangeTransition::Auto if change.changes.len() <= 1 => None,
        ConfChangeTransition::Auto | ConfChangeTransition::JointImplicit => Some(true),
        ConfChangeTransition::JointExplicit => Some(false),
    }
}

/// The configuration after `change`.
pub fn apply(config: &TrackerConfig, change: &ConfChangeV2) -> Result<TrackerConfig, Error> {
    if leaves_joint(change) {
        return leave_joint(config);
    }
    match enters_joint(change) {
        Some(auto_leave) => enter_joint(config, auto_leave, &change.changes),
        None => simple(config, &change.changes),
    }
}

fn refuse(reason: impl Into<String>) -> Error {
    Error::ConfChangeRefused(reason.into())
}

fn enter_joint(
    config: &TrackerConfig,
    auto_leave: bool,
    changes: &[ConfChangeSingle],
) -> Result<TrackerConfig, Error> {
    if config.voters.is_joint() {
        return Err(refuse("the configuration is already joint"));
    }
    if config.voters.incoming.is_empty() {
        return Err(refuse("cannot make a zero-voter configuration joint"));
    }
    let mut next = config.clone();
    next.voters.outgoing = next.voters.incoming.clone();
    apply_changes(&mut next, changes)?;
    next.auto_leave = auto_leave;
    check(&next)?;
    Ok(next)
}

fn leave_joint(config: &TrackerConfig) -> Result<TrackerConfig, Error> {
    if !config.voters.is_joint() {
        return Err(refuse("the configuration is not joint"));
    }
    let mut next = config.clone();
    let learners_next = std::mem::take(&mut next.learners_next);
    next.learners.extend(learners_next);
    next.voters.outgoing.clear();
    next.auto_leave = false;
    check(&next)?;
    Ok(next)
}

fn simple(config: &TrackerConfig, changes: &[ConfChangeSingle]) -> Result<TrackerConfig, Error> {
    if config.voters.is_joint() {
        return Err(refuse(
            "cannot apply a simple change to a joint configuration",
        ));
    }
    let mut next = config.clone();
    apply_changes(&mut next, changes)?;
    let changed = config
        .voters
        .incoming
        .symmetric_difference(&next.voters.incoming)
        .count();
    if changed > 1 {
        return Err(refuse(
            "more than one voter changed without joint consensus",
        ));
    }
    check(&next)?;
    Ok(next)
}

fn apply_changes(config: &mut TrackerConfig, changes: &[ConfChangeSingle]) -> Result<(), Error> {
    for change in changes {
        let id = change.node_id;
        if id == 0 {
            continue;
        }
        match ConfChangeType::try_from(change.change_type) {
            Ok(ConfChangeType::AddNode) => {
                config.voters.incoming.insert(id);
                config.learners.remove(&id);
                config.learners_next.remove(&id);
            }
            Ok(ConfChangeType::AddLearnerNode) => {
                config.voters.incoming.remove(&id);
                config.learners.remove(&id);
                config.learners_next.remove(&id);
                // A voter of the outgoing half cannot be a learner at the same time: it
                // becomes one when the joint state is left.
                if config.voters.outgoing.contains(&id) {
                    config.learners_next.insert(id);
                } else {
                    config.learners.insert(id);
                }
            }
            Ok(ConfChangeType::RemoveNode) => {
                config.voters.incoming.remove(&id);
                config.learners.remove(&id);
                config.learners_next.remove(&id);
            }
            Err(_) => {
                return Err(refuse(format!(
                    "unknown change type {} for node {id}",
                    change.change_type
                )))
            }
        }
    }
    if config.voters.incoming.is_empty() {
        return Err(refuse("removing every voter is not allowed"));
    }
    Ok(())
}

/// Invariants of every configuration.
fn check(config: &TrackerConfig) -> Result<(), Error> {
    for id in &config.learners {
        if config.voters.contains(*id) {
            return Err(refuse(format!("{id} is both a voter and a learner")));
        }
    }
    for id in &config.learners_next {
        if !config.voters.outgoing.contains(id) {
            return Err(refuse(format!(
                "{id} is a future learner but not an outgoing voter"
            )));
        }
    }
    if !config.voters.is_joint() && (!config.learners_next.is_empty() || config.auto_leave) {
        return Err(refuse(
            "joint-only fields set outside a joint configuration",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ConfState;

    fn single(change_type: ConfChangeType, node_id: u64) -> ConfChangeSingle {
        ConfChangeSingle {
            change_type: change_type as i32,
            node_id,
        }
    }

    fn v2(transition: ConfChangeTransition, changes: Vec<ConfChangeSingle>) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: transition as i32,
            changes,
            context: Default::default(),
        }
    }

    /// The invariant check refuses each joint-only field on its own outside a joint
    /// configuration (a state only a bug elsewhere could make), and accepts both inside.
    #[test]
    fn joint_only_fields_are_refused_outside_a_joint_configuration() {
        let mut auto_leave = config(&[1, 2, 3]);
        auto_leave.auto_leave = true;
        assert!(check(&auto_leave).is_err());
        let mut learners_next = config(&[1, 2, 3]);
        learners_next.learners_next.insert(3);
        assert!(check(&learners_next).is_err());
        assert!(check(&config(&[1, 2, 3])).is_ok());
        let mut joint = config(&[1, 2]);
        joint.voters.outgoing = [1, 2, 3].into_iter().collect();
        joint.learners_next.insert(3);
        joint.auto_leave = true;
        assert!(check(&joint).is_ok());
    }

    fn config(voters: &[u64]) -> TrackerConfig {
        TrackerConfig::from_conf_state(&ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn simple_add_and_remove_one_voter() {
        let add = v2(
            ConfChangeTransition::Auto,
            vec![single(ConfChangeType::AddNode, 4)],
        );
        let next = apply(&config(&[1, 2, 3]), &add).unwrap();
        assert_eq!(next.to_conf_state().voters, vec![1, 2, 3, 4]);
        let remove = v2(
            ConfChangeTransition::Auto,
            vec![single(ConfChangeType::RemoveNode, 1)],
        );
        assert_eq!(
            apply(&next, &remove).unwrap().to_conf_state().voters,
            vec![2, 3, 4]
        );
    }

    #[test]
    fn two_voters_at_once_need_joint_consensus() {
        let changes = vec![
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::RemoveNode, 1),
        ];
        let joint = apply(
            &config(&[1, 2, 3]),
            &v2(ConfChangeTransition::Auto, changes),
        )
        .unwrap();
        let state = joint.to_conf_state();
        assert_eq!(state.voters, vec![2, 3, 4]);
        assert_eq!(state.voters_outgoing, vec![1, 2, 3]);
        assert!(state.auto_leave);
        let left = apply(&joint, &ConfChangeV2::default())
            .unwrap()
            .to_conf_state();
        assert_eq!(left.voters, vec![2, 3, 4]);
        assert!(left.voters_outgoing.is_empty());
        assert!(apply(&config(&[1]), &ConfChangeV2::default()).is_err());
    }

    #[test]
    fn demoting_a_voter_while_joint_defers_it_to_learners_next() {
        let changes = vec![single(ConfChangeType::AddLearnerNode, 3)];
        let joint = apply(
            &config(&[1, 2, 3]),
            &v2(ConfChangeTransition::JointExplicit, changes),
        )
        .unwrap();
        let state = joint.to_conf_state();
        assert_eq!(state.learners_next, vec![3]);
        assert!(state.learners.is_empty());
        assert!(!state.auto_leave);
        let left = apply(&joint, &ConfChangeV2::default())
            .unwrap()
            .to_conf_state();
        assert_eq!(left.learners, vec![3]);
        assert_eq!(left.voters, vec![1, 2]);
    }

    #[test]
    fn learner_promotion_and_refusals() {
        let learner = apply(
            &config(&[1]),
            &v2(
                ConfChangeTransition::Auto,
                vec![single(ConfChangeType::AddLearnerNode, 2)],
            ),
        )
        .unwrap();
        assert_eq!(learner.to_conf_state().learners, vec![2]);
        let promoted = apply(
            &learner,
            &v2(
                ConfChangeTransition::Auto,
                vec![single(ConfChangeType::AddNode, 2)],
            ),
        )
        .unwrap()
        .to_conf_state();
        assert_eq!((promoted.voters, promoted.learners), (vec![1, 2], vec![]));
        let remove_all = v2(
            ConfChangeTransition::Auto,
            vec![single(ConfChangeType::RemoveNode, 1)],
        );
        assert!(apply(&config(&[1]), &remove_all).is_err());
    }
}
