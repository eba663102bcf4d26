//! libFuzzer entry point of the `schedule` target; the body is `durable_jobs_fuzz::schedule`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| durable_jobs_fuzz::schedule(data));
