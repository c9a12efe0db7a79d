//! The lessor: leases, their TTLs and deadlines, and the keys attached to them.
//!
//! Grants, revokes and attachments change through the Raft log, so every member holds the
//! same leases. Deadlines are local: only the leader (the *primary* lessor) keeps them,
//! renews them on keep-alive and asks, through Raft, to revoke the expired. A member that
//! becomes leader cannot know when the previous leader last renewed a lease, so it restarts
//! every deadline from now with the full TTL (it may keep a lease alive a little longer,
//! never shorter). Time is passed in by the caller, so the lessor itself is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// When the lease expires; only on the primary lessor.
    pub deadline: Option<Instant>,
    pub keys: BTreeSet<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("lease not found")]
    NotFound,
    #[error("lease already exists")]
    Exists,
    /// Past its deadline on the primary: its revocation is due, so it cannot be renewed.
    #[error("lease expired")]
    Expired,
}

#[derive(Debug, Default)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    primary: bool,
    /// The shortest TTL granted (etcd: enough for an election to finish).
    min_ttl: i64,
}

impl Lessor {
    pub fn new(min_ttl: i64) -> Self {
        Self {
            min_ttl,
            ..Default::default()
        }
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Grants lease `id` with `ttl` seconds (raised to the minimum); returns the TTL.
    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) -> Result<i64, LeaseError> {
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl = ttl.max(self.min_ttl);
        let deadline = self.primary.then(|| now + Duration::from_secs(ttl as u64));
        self.leases.insert(
            id,
            Lease {
                id,
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        Ok(ttl)
    }

    /// Restores a lease read back from the backend (at startup).
    pub fn restore(&mut self, id: i64, ttl: i64) {
        self.leases.entry(id).or_insert(Lease {
            id,
            ttl,
            deadline: None,
            keys: BTreeSet::new(),
        });
    }

    /// Removes the lease; returns the keys that were attached (the caller deletes them).
    pub fn revoke(&mut self, id: i64) -> Result<BTreeSet<Bytes>, LeaseError> {
        self.leases
            .remove(&id)
            .map(|lease| lease.keys)
            .ok_or(LeaseError::NotFound)
    }

    /// Restarts the lease's deadline; returns its TTL. A lease already past its deadline
    /// is not renewed: it is about to be revoked.
    pub fn renew(&mut self, id: i64, now: Instant) -> Result<i64, LeaseError> {
        let lease = self.leases.get_mut(&id).ok_or(LeaseError::NotFound)?;
        if lease.deadline.is_some_and(|deadline| deadline <= now)
            && !crate::planted::active(crate::planted::Bug::RenewExpiredLease)
        {
            return Err(LeaseError::Expired);
        }
        if self.primary {
            lease.deadline = Some(now + Duration::from_secs(lease.ttl as u64));
        }
        Ok(lease.ttl)
    }

    pub fn exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn attach(&mut self, id: i64, key: Bytes) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key);
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Becomes the primary: every deadline restarts from `now` with the full TTL.
    pub fn promote(&mut self, now: Instant) {
        self.primary = true;
        for lease in self.leases.values_mut() {
            lease.deadline = Some(now + Duration::from_secs(lease.ttl as u64));
        }
    }

    pub fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.deadline = None;
        }
    }

    /// Leases past their deadline, at most `max` of them.
    pub fn expired(&self, now: Instant, max: usize) -> Vec<i64> {
        self.leases
            .values()
            .filter(|lease| lease.deadline.is_some_and(|deadline| deadline <= now))
            .map(|lease| lease.id)
            .take(max)
            .collect()
    }

    /// (remaining seconds, granted TTL, attached keys), or None if the lease is unknown.
    /// The remaining seconds are whole seconds left, rounded down, as etcd reports them (a
    /// lease granted for 60 s a moment ago has 59 left).
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64, Vec<Bytes>)> {
        let lease = self.leases.get(&id)?;
        let remaining = match lease.deadline {
            Some(deadline) => deadline.saturating_duration_since(now).as_secs() as i64,
            None => lease.ttl,
        };
        Some((remaining, lease.ttl, lease.keys.iter().cloned().collect()))
    }

    pub fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_live_only_on_the_primary_and_restart_on_promotion() {
        let start = Instant::now();
        let mut lessor = Lessor::new(2);
        assert_eq!(
            lessor.grant(1, 1, start),
            Ok(2),
            "raised to the minimum TTL"
        );
        assert_eq!(lessor.grant(1, 5, start), Err(LeaseError::Exists));
        assert!(lessor
            .expired(start + Duration::from_secs(100), 10)
            .is_empty());
        lessor.promote(start + Duration::from_secs(10));
        assert!(lessor
            .expired(start + Duration::from_secs(11), 10)
            .is_empty());
        assert_eq!(lessor.expired(start + Duration::from_secs(12), 10), vec![1]);
        assert_eq!(
            lessor.renew(1, start + Duration::from_secs(12)),
            Err(LeaseError::Expired),
            "an expired lease is revoked, not renewed"
        );
        lessor.renew(1, start + Duration::from_secs(11)).unwrap();
        assert!(lessor
            .expired(start + Duration::from_secs(12), 10)
            .is_empty());
        assert_eq!(lessor.expired(start + Duration::from_secs(13), 10), vec![1]);
        lessor.attach(1, Bytes::from_static(b"k"));
        assert_eq!(lessor.revoke(1).unwrap().len(), 1);
        assert_eq!(lessor.renew(1, start), Err(LeaseError::NotFound));
    }
}
