//! The deterministic simulation harness (madsim).
