#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxcd::fuzz::client_requests(data));
