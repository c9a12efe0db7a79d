//! Availability under each fault, measured from the attempt log.
//!
//! For every fault injected: the time from the fault to the first acknowledged write and
//! to the first acknowledged linearizable read sent after it through a healthy member (one
//! the fault did not kill, pause or cut off; after a whole-cluster crash, any member), and
//! the share of attempts that failed while the fault lasted (timeouts, refusals and
//! connections that could not be made), over every member and over the healthy ones.
//! A fault after which no such write (or read) was acknowledged before the next fault is
//! reported as never.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::record::{Attempt, Class};
use crate::schedule::FaultKind;

/// A fault as it was injected.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultRecord {
    /// The fault in effect: a fault planned for a random member that led is the same
    /// fault of the leader.
    pub kind: FaultKind,
    pub planned: FaultKind,
    /// When it took effect (ns on the run's clock).
    pub start: i64,
    /// When it was healed.
    pub healed: i64,
    /// Until when its effects are measured: the next fault, or the end of the workload.
    pub window_end: i64,
    /// The members it killed, paused or cut off.
    pub affected: Vec<usize>,
    /// What happened, for the timeline (which member, whether it led).
    pub note: String,
}

/// What one fault cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultAvailability {
    pub kind: FaultKind,
    pub start_s: f64,
    pub duration_s: f64,
    pub first_write_ms: Option<f64>,
    pub first_read_ms: Option<f64>,
    pub attempts: u64,
    pub error_rate: f64,
    pub healthy_error_rate: f64,
}

fn healthy(fault: &FaultRecord, member: usize, members: usize) -> bool {
    fault.affected.len() >= members || !fault.affected.contains(&member)
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// Measures every fault of `faults` against `attempts`.
pub fn measure(
    faults: &[FaultRecord],
    attempts: &[Attempt],
    members: usize,
) -> Vec<FaultAvailability> {
    faults
        .iter()
        .map(|fault| {
            let first = |class: Class| {
                attempts
                    .iter()
                    .filter(|a| {
                        a.ok && a.class == class
                            && a.call >= fault.start
                            && a.call < fault.window_end
                            && healthy(fault, a.member, members)
                    })
                    .map(|a| a.return_time - fault.start)
                    .min()
                    .map(ms)
            };
            let during: Vec<&Attempt> = attempts
                .iter()
                .filter(|a| a.call >= fault.start && a.call <= fault.healed)
                .collect();
            let rate = |list: &[&Attempt]| {
                if list.is_empty() {
                    0.0
                } else {
                    list.iter().filter(|a| !a.ok).count() as f64 / list.len() as f64
                }
            };
            let healthy_during: Vec<&Attempt> = during
                .iter()
                .copied()
                .filter(|a| healthy(fault, a.member, members))
                .collect();
            FaultAvailability {
                kind: fault.kind,
                start_s: fault.start as f64 / 1e9,
                duration_s: (fault.healed - fault.start) as f64 / 1e9,
                first_write_ms: first(Class::Write),
                first_read_ms: first(Class::LinearizableRead),
                attempts: during.len() as u64,
                error_rate: rate(&during),
                healthy_error_rate: rate(&healthy_during),
            }
        })
        .collect()
}

/// Per fault kind: how many, and the mean and worst of each measure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindSummary {
    pub kind: FaultKind,
    pub faults: usize,
    pub first_write_ms_mean: Option<f64>,
    pub first_write_ms_max: Option<f64>,
    /// Faults after which no write through a healthy member was acknowledged in time.
    pub writes_never: usize,
    pub first_read_ms_mean: Option<f64>,
    pub first_read_ms_max: Option<f64>,
    pub reads_never: usize,
    pub error_rate_mean: f64,
    pub healthy_error_rate_mean: f64,
}

fn mean_max(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    (Some(mean), Some(max))
}

pub fn summarize(measured: &[FaultAvailability]) -> Vec<KindSummary> {
    let mut by_kind: BTreeMap<FaultKind, Vec<&FaultAvailability>> = BTreeMap::new();
    for fault in measured {
        by_kind.entry(fault.kind).or_default().push(fault);
    }
    by_kind
        .into_iter()
        .map(|(kind, list)| {
            let writes: Vec<f64> = list.iter().filter_map(|f| f.first_write_ms).collect();
            let reads: Vec<f64> = list.iter().filter_map(|f| f.first_read_ms).collect();
            let (first_write_ms_mean, first_write_ms_max) = mean_max(&writes);
            let (first_read_ms_mean, first_read_ms_max) = mean_max(&reads);
            let n = list.len() as f64;
            KindSummary {
                kind,
                faults: list.len(),
                first_write_ms_mean,
                first_write_ms_max,
                writes_never: list.len() - writes.len(),
                first_read_ms_mean,
                first_read_ms_max,
                reads_never: list.len() - reads.len(),
                error_rate_mean: list.iter().map(|f| f.error_rate).sum::<f64>() / n,
                healthy_error_rate_mean: list.iter().map(|f| f.healthy_error_rate).sum::<f64>() / n,
            }
        })
        .collect()
}

/// The summary as a Markdown table.
pub fn table(summary: &[KindSummary]) -> String {
    let cell = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut out = String::from(
        "| fault | n | first write ms (mean / max) | first lin. read ms (mean / max) | errors during fault (all / healthy members) |\n\
         |---|---|---|---|---|\n",
    );
    for row in summary {
        let never = |count: usize| {
            if count > 0 {
                format!(", {count} never")
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} / {}{} | {} / {}{} | {:.1}% / {:.1}% |",
            row.kind,
            row.faults,
            cell(row.first_write_ms_mean),
            cell(row.first_write_ms_max),
            never(row.writes_never),
            cell(row.first_read_ms_mean),
            cell(row.first_read_ms_max),
            never(row.reads_never),
            row.error_rate_mean * 100.0,
            row.healthy_error_rate_mean * 100.0,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn attempt(member: usize, class: Class, call_ms: i64, return_ms: i64, ok: bool) -> Attempt {
        Attempt {
            member,
            class,
            call: call_ms * MS,
            return_time: return_ms * MS,
            ok,
        }
    }

    fn fault(kind: FaultKind, affected: Vec<usize>) -> FaultRecord {
        FaultRecord {
            kind,
            planned: kind,
            start: 1_000 * MS,
            healed: 3_000 * MS,
            window_end: 6_000 * MS,
            affected,
            note: String::new(),
        }
    }

    #[test]
    fn first_acknowledged_after_the_fault_on_a_healthy_member() {
        let attempts = vec![
            // Before the fault: ignored.
            attempt(1, Class::Write, 900, 950, true),
            // Called before, returned after: ignored (it was sent to a whole cluster).
            attempt(1, Class::Write, 990, 1_010, true),
            // On the killed member: ignored, and an error.
            attempt(0, Class::Write, 1_100, 1_150, true),
            attempt(0, Class::Write, 1_200, 2_200, false),
            // A healthy member: times out, then answers.
            attempt(1, Class::Write, 1_000, 2_000, false),
            attempt(2, Class::Write, 2_000, 2_400, true),
            attempt(1, Class::Write, 2_100, 2_300, true),
            attempt(2, Class::LinearizableRead, 1_050, 1_500, true),
            // A past-revision read is no linearizable read.
            attempt(1, Class::Other, 1_001, 1_002, true),
            // After the window: ignored.
            attempt(1, Class::Write, 6_500, 6_501, true),
        ];
        let measured = measure(&[fault(FaultKind::Kill, vec![0])], &attempts, 3);
        let m = &measured[0];
        assert_eq!(m.first_write_ms, Some(1_300.0));
        assert_eq!(m.first_read_ms, Some(500.0));
        // During [1000, 3000]: 7 attempts (the one called at 990 is before), 3 failed.
        assert_eq!(m.attempts, 7);
        assert!((m.error_rate - 2.0 / 7.0).abs() < 1e-9, "{}", m.error_rate);
        // Healthy members: 5 attempts, 1 failed.
        assert!((m.healthy_error_rate - 1.0 / 5.0).abs() < 1e-9);
        assert!((m.duration_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn after_a_whole_cluster_crash_every_member_counts() {
        let attempts = vec![attempt(0, Class::Write, 2_500, 2_600, true)];
        let measured = measure(&[fault(FaultKind::CrashAll, vec![0, 1, 2])], &attempts, 3);
        assert_eq!(measured[0].first_write_ms, Some(1_600.0));
        assert_eq!(measured[0].first_read_ms, None);
    }

    #[test]
    fn summary_per_kind_counts_the_faults_never_recovered() {
        let attempts = vec![
            attempt(1, Class::Write, 1_100, 1_200, true),
            attempt(1, Class::LinearizableRead, 1_100, 1_300, true),
        ];
        let mut late = fault(FaultKind::Pause, vec![0]);
        late.start = 10_000 * MS;
        late.healed = 12_000 * MS;
        late.window_end = 15_000 * MS;
        let faults = vec![fault(FaultKind::Pause, vec![0]), late];
        let summary = summarize(&measure(&faults, &attempts, 3));
        assert_eq!(summary.len(), 1);
        let row = &summary[0];
        assert_eq!(row.faults, 2);
        assert_eq!(row.first_write_ms_mean, Some(200.0));
        assert_eq!(row.writes_never, 1);
        assert_eq!(row.reads_never, 1);
        let text = table(&summary);
        assert!(
            text.contains("| pause | 2 | 200 / 200, 1 never | 300 / 300, 1 never |"),
            "{text}"
        );
    }
}
