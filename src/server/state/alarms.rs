//! The alarms raised in the cluster (etcd's `alarmStore`): applied from the log on every
//! member alike, kept in memory for the request path and persisted in the backend.

use std::sync::Mutex;

use crate::proto::etcdserverpb::{AlarmMember, AlarmType};
use crate::server::state::store::Store;

pub(crate) struct Alarms {
    /// Where the alarms are persisted.
    store: Store,
    /// A `std` mutex: held only to read or change the short list, never across an await.
    active: Mutex<Vec<AlarmMember>>,
}

impl Alarms {
    /// The alarms `store` recorded.
    pub(crate) fn load(store: Store) -> Alarms {
        let active = Mutex::new(store.alarms());
        Alarms { store, active }
    }

    pub(crate) fn list(&self) -> Vec<AlarmMember> {
        self.active.lock().expect("alarms lock poisoned").clone()
    }

    pub(crate) fn is_active(&self, alarm: AlarmType) -> bool {
        self.active
            .lock()
            .expect("alarms lock poisoned")
            .iter()
            .any(|active| active.alarm == alarm as i32)
    }

    /// The alarms restored with a snapshot replace the ones raised before it.
    pub(crate) fn reload(&self) {
        *self.active.lock().expect("alarms lock poisoned") = self.store.alarms();
    }

    /// Raises `alarm` and saves the list. Returns whether it was not already raised.
    pub(crate) fn activate(&self, alarm: AlarmMember) -> bool {
        let mut active = self.active.lock().expect("alarms lock poisoned");
        if active.contains(&alarm) {
            return false;
        }
        active.push(alarm);
        self.store.save_alarms(&active);
        true
    }

    /// Clears `alarm` and saves the list. Returns whether it was raised.
    pub(crate) fn deactivate(&self, alarm: AlarmMember) -> bool {
        let mut active = self.active.lock().expect("alarms lock poisoned");
        let before = active.len();
        active.retain(|raised| *raised != alarm);
        if active.len() == before {
            return false;
        }
        self.store.save_alarms(&active);
        true
    }
}
