//! libFuzzer entry point of the `by_name` target; the body is `durable_jobs_fuzz::by_name`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| durable_jobs_fuzz::by_name(data));
