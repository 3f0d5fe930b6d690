//! Arbitrary sampling parameters, logits and context through the sampler (see
//! `checks::sampling` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gpt2_fuzz::checks::sampling(data));
