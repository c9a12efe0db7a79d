//! The Transport seam: how Raft messages reach other members.
//!
//! The Raft task hands every outgoing message to a `Transport`; delivery is best effort
//! (Raft retransmits what is lost), so `send` never blocks and never fails. Peers come and
//! go with membership changes. Production sends through the peer transport
//! (`tasks::peer_transport`); the simulation build wraps it in `tasks::message_faults`,
//! which applies the faults installed here for the simulated world.

use crate::raft::Message;

pub trait Transport: Send + Sync {
    /// Queues `message` for its destination. A full queue or an unknown destination drops it.
    fn send(&self, message: Message);
    /// Starts carrying messages to member `id` at `url` (a member joined).
    fn add_peer(&self, id: u64, url: String);
    /// Stops carrying messages to member `id` (it was removed, or moved to new URLs).
    fn remove_peer(&self, id: u64);
}

/// What the simulator does with one Raft message between members.
#[cfg(madsim)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Deliver,
    Drop,
    /// Deliver it twice.
    Duplicate,
    /// Deliver it after this long (later messages may overtake it).
    Delay(std::time::Duration),
}

/// The simulator's message-level faults: consulted for every message a member sends.
#[cfg(madsim)]
pub trait MessageFaults: Send + Sync {
    fn decide(&self, message: &Message) -> Delivery;
}

#[cfg(madsim)]
thread_local! {
    /// Per thread, since each simulated world runs on a thread of its own: a process-wide
    /// value would let worlds simulated side by side install each other's faults.
    static MESSAGE_FAULTS: std::cell::RefCell<Option<std::sync::Arc<dyn MessageFaults>>> =
        const { std::cell::RefCell::new(None) };
}

/// Installs the faults every member's transport applies (`None`: deliver everything), for
/// the world simulated on this thread.
#[cfg(madsim)]
pub fn set_message_faults(faults: Option<std::sync::Arc<dyn MessageFaults>>) {
    MESSAGE_FAULTS.with(|cell| *cell.borrow_mut() = faults);
}

/// How `message` is to be delivered.
#[cfg(madsim)]
pub fn delivery(message: &Message) -> Delivery {
    let faults = MESSAGE_FAULTS.with(|cell| cell.borrow().clone());
    faults.map_or(Delivery::Deliver, |faults| faults.decide(message))
}
