//! Arbitrary bytes through GPT-2's tokenizer: `decode(encode(s)) == s` for UTF-8, no panic
//! for any bytes (see `checks::encode_decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gpt2_fuzz::checks::encode_decode(data));
