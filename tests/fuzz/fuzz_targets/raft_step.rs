#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxcd::fuzz::raft_step(data));
