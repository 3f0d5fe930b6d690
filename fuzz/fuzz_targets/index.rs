//! The `.index` parser on arbitrary bytes: must return Ok or Err, never panic, hang or
//! allocate without bound (see `checks::index`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gpt2_fuzz::checks::index(data));
