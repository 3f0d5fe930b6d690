//! Opening a whole checkpoint (index + data shards) from arbitrary bytes, then reading and
//! verifying every tensor (see `checks::checkpoint` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gpt2_fuzz::checks::checkpoint(data));
