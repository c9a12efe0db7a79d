//! Layer 5, wiring: bootstrap (recovering or creating a member's state), spawning the
//! tasks, the listeners the services are served on, and shutdown; and backups restored
//! into a new data dir.

pub(crate) mod backup;
pub(crate) mod bootstrap;
#[cfg(not(madsim))]
pub(crate) mod in_process;
pub(crate) mod listen;
pub(crate) mod start;
