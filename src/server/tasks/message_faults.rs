//! The simulator's message faults, as a [`Transport`] wrapped around the peer transport
//! (simulation builds only): every Raft message a member sends is delivered, dropped,
//! duplicated or delayed as the faults installed for the simulated world decide
//! (`types::transport::set_message_faults`). Production builds send through the peer
//! transport alone; nothing of this is in their path.

use std::sync::Arc;

use crate::raft::Message;
use crate::server::tasks::peer_transport::PeerTransport;
use crate::server::types::transport::{delivery, Delivery, Transport};

pub(crate) struct FaultyTransport {
    inner: Arc<PeerTransport>,
}

impl FaultyTransport {
    pub(crate) fn new(inner: Arc<PeerTransport>) -> FaultyTransport {
        FaultyTransport { inner }
    }
}

impl Transport for FaultyTransport {
    fn send(&self, message: Message) {
        // Faults are drawn only for messages that have somewhere to go, so that the draws,
        // and with them the whole run, depend on the seed alone.
        let Some(queue) = self.inner.route(message.to) else {
            return self.inner.send(message);
        };
        match delivery(&message) {
            Delivery::Deliver => self.inner.enqueue(&queue, message),
            // A snapshot lost on the wire fails its call, and the sender reports it.
            Delivery::Drop => self.inner.report_dropped(&message),
            Delivery::Duplicate => {
                self.inner.enqueue(&queue, message.clone());
                self.inner.enqueue(&queue, message);
            }
            Delivery::Delay(delay) => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Err(error) = queue.try_send(message) {
                        inner.report_dropped(&error.into_inner());
                    }
                });
            }
        }
    }

    fn add_peer(&self, id: u64, url: String) {
        self.inner.add_peer(id, url);
    }

    fn remove_peer(&self, id: u64) {
        self.inner.remove_peer(id);
    }
}
