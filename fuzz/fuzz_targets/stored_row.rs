//! libFuzzer entry point of the `stored_row` target; the body is `durable_jobs_fuzz::stored_row`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| durable_jobs_fuzz::stored_row(data));
