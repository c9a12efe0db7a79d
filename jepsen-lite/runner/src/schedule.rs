//! The fault schedule: which faults a run injects, when, for how long, drawn from the seed.
//!
//! A run is a warm-up, then faults one after another, each followed by a recovery gap in
//! which the cluster is whole, then a quiet tail. The kinds come in seeded rounds: every
//! enabled kind once (in a shuffled order) before any comes again, so that a short run
//! still sees every kind it has room for. Everything here is a pure function of the
//! options and the seed, so the same seed repeats the same schedule; which process is the
//! leader when a fault aimed at the leader fires is decided by the cluster at that time.

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The nemeses one can ask for with `--nemesis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Nemesis {
    /// kill -9 of one member (random, or the leader), restarted on the same data dir.
    Kill,
    /// SIGSTOP of one member (random, or the leader) for longer than an election timeout.
    Pause,
    /// One member (or, in a cluster of five, two) cut off from the others, for the whole
    /// fault or on and off (a flapping link).
    Partition,
    /// kill -9 of every member at once, then every member restarted.
    CrashAll,
    /// One member's data dir (a small file system of its own) filled to the last byte,
    /// then emptied. Not part of `all`: it mounts a file system, which needs root.
    DiskFull,
    /// Two faults at once on two members: one from the start, the other from half-way
    /// (each a kill, a pause or a cut-off), so that a cluster of three loses its quorum.
    /// Not part of `all`, so that `all` keeps the schedules its seeds always had.
    Overlap,
    /// A member (a random one, or the leader) removed, its data dir wiped, added back as a
    /// learner and promoted once caught up. Not part of `all` (its schedules stay).
    Membership,
}

impl Nemesis {
    pub const ALL: [Nemesis; 4] = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::CrashAll,
    ];

    pub fn parse_list(text: &str) -> Result<Vec<Nemesis>, String> {
        let mut out = Vec::new();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let nemesis = match name {
                "kill" => Nemesis::Kill,
                "pause" => Nemesis::Pause,
                "partition" => Nemesis::Partition,
                "crash-all" => Nemesis::CrashAll,
                "disk-full" => Nemesis::DiskFull,
                "overlap" => Nemesis::Overlap,
                "membership" => Nemesis::Membership,
                "all" => {
                    out.extend(Nemesis::ALL);
                    continue;
                }
                "none" => continue,
                other => {
                    return Err(format!(
                        "unknown nemesis {other:?} (kill, pause, partition, crash-all, disk-full, overlap, membership, all, none)"
                    ))
                }
            };
            if !out.contains(&nemesis) {
                out.push(nemesis);
            }
        }
        out.dedup();
        Ok(out)
    }
}

/// The faults a run injects, each with the member it aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    KillLeader,
    Pause,
    PauseLeader,
    Partition,
    PartitionLeader,
    /// A random member cut off and let back every [`FLAP_CUT`] + [`FLAP_WHOLE`].
    PartitionFlap,
    CrashAll,
    DiskFull,
    Overlap,
    /// A random member removed and added back (see [`Nemesis::Membership`]).
    Replace,
    /// The leader removed and added back.
    ReplaceLeader,
}

/// One half of an overlapping fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Single {
    Kill,
    Pause,
    Partition,
}

impl Single {
    const ALL: [Single; 3] = [Single::Kill, Single::Pause, Single::Partition];

    pub fn name(self) -> &'static str {
        match self {
            Single::Kill => "kill",
            Single::Pause => "pause",
            Single::Partition => "cut-off",
        }
    }
}

/// How long a flapping partition cuts, then leaves the network whole, in each cycle.
pub const FLAP_CUT: Duration = Duration::from_millis(700);
pub const FLAP_WHOLE: Duration = Duration::from_millis(300);

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::Pause => "pause",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::Partition => "partition",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionFlap => "partition-flap",
            FaultKind::CrashAll => "crash-all",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Overlap => "overlap",
            FaultKind::Replace => "replace",
            FaultKind::ReplaceLeader => "replace-leader",
        }
    }

    #[cfg(test)]
    pub fn nemesis(self) -> Nemesis {
        match self {
            FaultKind::Kill | FaultKind::KillLeader => Nemesis::Kill,
            FaultKind::Pause | FaultKind::PauseLeader => Nemesis::Pause,
            FaultKind::Partition | FaultKind::PartitionLeader | FaultKind::PartitionFlap => {
                Nemesis::Partition
            }
            FaultKind::CrashAll => Nemesis::CrashAll,
            FaultKind::DiskFull => Nemesis::DiskFull,
            FaultKind::Overlap => Nemesis::Overlap,
            FaultKind::Replace | FaultKind::ReplaceLeader => Nemesis::Membership,
        }
    }

    /// Whether the fault aims at whichever member leads when it fires.
    pub fn at_leader(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::PauseLeader
                | FaultKind::PartitionLeader
                | FaultKind::ReplaceLeader
        )
    }

    /// What a fault of a random member is in effect when that member leads: the same
    /// fault of the leader (a flapping partition has no leader variant).
    pub fn when_target_leads(self) -> FaultKind {
        match self {
            FaultKind::Kill => FaultKind::KillLeader,
            FaultKind::Pause => FaultKind::PauseLeader,
            FaultKind::Partition => FaultKind::PartitionLeader,
            FaultKind::Replace => FaultKind::ReplaceLeader,
            other => other,
        }
    }

    fn of(nemesis: Nemesis) -> &'static [FaultKind] {
        match nemesis {
            Nemesis::Kill => &[FaultKind::Kill, FaultKind::KillLeader],
            Nemesis::Pause => &[FaultKind::Pause, FaultKind::PauseLeader],
            Nemesis::Partition => &[
                FaultKind::Partition,
                FaultKind::PartitionLeader,
                FaultKind::PartitionFlap,
            ],
            Nemesis::CrashAll => &[FaultKind::CrashAll],
            Nemesis::DiskFull => &[FaultKind::DiskFull],
            Nemesis::Overlap => &[FaultKind::Overlap],
            Nemesis::Membership => &[FaultKind::Replace, FaultKind::ReplaceLeader],
        }
    }

    /// How long the fault lasts, in milliseconds (a range to draw from). A pause outlasts
    /// the election timeout (1 s by default, in etcd and oxcd) by at least a second, so
    /// that the other members elect a new leader while the paused one is frozen.
    fn duration_ms(self) -> std::ops::Range<u64> {
        match self {
            FaultKind::Kill | FaultKind::KillLeader => 1_500..3_000,
            FaultKind::Pause | FaultKind::PauseLeader => 2_000..3_500,
            FaultKind::Partition | FaultKind::PartitionLeader => 2_000..4_000,
            FaultKind::PartitionFlap => 3_000..5_000,
            FaultKind::CrashAll => 1_000..2_000,
            FaultKind::DiskFull => 2_000..4_000,
            FaultKind::Overlap => 3_000..5_000,
            // From the removal until the promotion is asked for.
            FaultKind::Replace | FaultKind::ReplaceLeader => 2_000..4_000,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedFault {
    /// When it starts, from the start of the workload.
    pub at: Duration,
    pub kind: FaultKind,
    /// How long until it is healed (the member restarted or resumed, the network whole).
    pub duration: Duration,
    /// For a random target: which member (index). For a partition in a cluster of five:
    /// the member that joins the target in the minority. Drawn here so that the seed
    /// decides it.
    pub member: usize,
    pub companion: usize,
    /// For an overlapping fault: what strikes `member` from the start and `companion`
    /// from half-way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap: Option<(Single, Single)>,
}

/// What a schedule is drawn from.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    pub seed: u64,
    pub members: usize,
    pub total: Duration,
    pub nemeses: Vec<Nemesis>,
    /// No fault before this.
    pub warm_up: Duration,
    /// No fault after `total - tail`.
    pub tail: Duration,
}

/// The seeded schedule (empty when no nemesis is enabled or the run is too short).
pub fn schedule(options: &ScheduleOptions) -> Vec<PlannedFault> {
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let kinds: Vec<FaultKind> = options
        .nemeses
        .iter()
        .flat_map(|&nemesis| FaultKind::of(nemesis).iter().copied())
        .collect();
    let mut out = Vec::new();
    if kinds.is_empty() || options.members == 0 {
        return out;
    }
    let end = options.total.saturating_sub(options.tail);
    let mut at = options.warm_up;
    let mut round: Vec<FaultKind> = Vec::new();
    loop {
        if round.is_empty() {
            round = kinds.clone();
            // Fisher-Yates, from the seed.
            for i in (1..round.len()).rev() {
                let j = rng.random_range(0..=i);
                round.swap(i, j);
            }
        }
        let kind = round.pop().expect("refilled above");
        let duration = Duration::from_millis(rng.random_range(kind.duration_ms()));
        let recovery = Duration::from_millis(rng.random_range(2_000..3_000));
        let member = rng.random_range(0..options.members);
        let mut companion = rng.random_range(0..options.members);
        if options.members > 1 && companion == member {
            companion = (member + 1) % options.members;
        }
        if at + duration + recovery > end {
            break;
        }
        // Drawn only for this kind, so that the schedules of the other kinds stay what they
        // were for every seed.
        let overlap = (kind == FaultKind::Overlap).then(|| {
            (
                Single::ALL[rng.random_range(0..Single::ALL.len())],
                Single::ALL[rng.random_range(0..Single::ALL.len())],
            )
        });
        out.push(PlannedFault {
            at,
            kind,
            duration,
            overlap,
            member,
            companion,
        });
        at += duration + recovery;
    }
    out
}

/// The members cut off with `target` by a partition: the target alone in a cluster of
/// three or four, with `companion` in one of five or more (a minority of two), so that the
/// rest keeps a majority.
pub fn minority(members: usize, target: usize, companion: usize) -> Vec<usize> {
    if members >= 5 && companion != target {
        let mut out = vec![target, companion];
        out.sort_unstable();
        out
    } else {
        vec![target]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64, nemeses: Vec<Nemesis>) -> ScheduleOptions {
        ScheduleOptions {
            seed,
            members: 3,
            total: Duration::from_secs(60),
            nemeses,
            warm_up: Duration::from_secs(2),
            tail: Duration::from_secs(2),
        }
    }

    #[test]
    fn same_seed_same_schedule_and_other_seeds_differ() {
        let a = schedule(&options(7, Nemesis::ALL.to_vec()));
        let b = schedule(&options(7, Nemesis::ALL.to_vec()));
        assert_eq!(a, b);
        let others: Vec<_> = (8..16)
            .map(|seed| schedule(&options(seed, Nemesis::ALL.to_vec())))
            .collect();
        assert!(
            others.iter().any(|other| *other != a),
            "every seed drew the same schedule"
        );
    }

    #[test]
    fn faults_do_not_overlap_and_stay_inside_the_run() {
        for seed in 0..50 {
            let opts = options(seed, Nemesis::ALL.to_vec());
            let faults = schedule(&opts);
            assert!(!faults.is_empty(), "seed {seed}: no fault in 60 s");
            let mut free_from = opts.warm_up;
            for fault in &faults {
                assert!(fault.at >= free_from, "seed {seed}: {fault:?} overlaps");
                assert!(fault.member < 3 && fault.companion < 3);
                assert_ne!(fault.member, fault.companion);
                let range = fault.kind.duration_ms();
                let ms = fault.duration.as_millis() as u64;
                assert!(range.contains(&ms), "seed {seed}: {fault:?}");
                free_from = fault.at + fault.duration + Duration::from_secs(2);
                assert!(fault.at + fault.duration <= opts.total - opts.tail);
            }
        }
    }

    #[test]
    fn every_kind_comes_once_a_round() {
        let faults = schedule(&options(3, Nemesis::ALL.to_vec()));
        assert!(faults.len() >= 8, "{} faults in 60 s", faults.len());
        let first: std::collections::BTreeSet<FaultKind> =
            faults[..8].iter().map(|fault| fault.kind).collect();
        assert_eq!(first.len(), 8, "the first round repeats a kind: {faults:?}");
    }

    #[test]
    fn overlaps_name_two_members_and_leave_other_schedules_alone() {
        let with = schedule(&options(9, vec![Nemesis::Overlap]));
        assert!(!with.is_empty());
        for fault in &with {
            assert!(fault.overlap.is_some());
            assert_ne!(fault.member, fault.companion);
        }
        let plain = schedule(&options(9, Nemesis::ALL.to_vec()));
        assert!(plain.iter().all(|fault| fault.overlap.is_none()));
    }

    #[test]
    fn only_the_enabled_nemeses() {
        let faults = schedule(&options(5, vec![Nemesis::Pause]));
        assert!(!faults.is_empty());
        assert!(faults
            .iter()
            .all(|fault| fault.kind.nemesis() == Nemesis::Pause));
        assert!(schedule(&options(5, Vec::new())).is_empty());
    }

    #[test]
    fn nemesis_names() {
        assert_eq!(
            Nemesis::parse_list("kill,pause").unwrap(),
            vec![Nemesis::Kill, Nemesis::Pause]
        );
        assert_eq!(Nemesis::parse_list("all").unwrap(), Nemesis::ALL.to_vec());
        assert!(Nemesis::parse_list("none").unwrap().is_empty());
        assert_eq!(
            Nemesis::parse_list("all,disk-full").unwrap().last(),
            Some(&Nemesis::DiskFull)
        );
        assert!(Nemesis::parse_list("kil").is_err());
        assert_eq!(
            Nemesis::parse_list("membership").unwrap(),
            vec![Nemesis::Membership]
        );
        assert!(!Nemesis::ALL.contains(&Nemesis::Membership));
    }

    #[test]
    fn membership_changes_replace_a_member_or_the_leader() {
        let faults = schedule(&options(4, vec![Nemesis::Membership]));
        assert!(faults.len() >= 2);
        let kinds: std::collections::BTreeSet<FaultKind> =
            faults.iter().map(|fault| fault.kind).collect();
        assert_eq!(
            kinds,
            [FaultKind::Replace, FaultKind::ReplaceLeader]
                .into_iter()
                .collect()
        );
        assert!(faults
            .iter()
            .all(|fault| fault.kind.nemesis() == Nemesis::Membership));
        assert_eq!(
            FaultKind::Replace.when_target_leads(),
            FaultKind::ReplaceLeader
        );
    }

    #[test]
    fn a_partition_leaves_a_majority() {
        assert_eq!(minority(3, 1, 2), vec![1]);
        assert_eq!(minority(5, 4, 0), vec![0, 4]);
        assert_eq!(minority(5, 2, 2), vec![2]);
    }
}
