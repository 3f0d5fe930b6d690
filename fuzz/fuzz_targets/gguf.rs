//! The GGUF container reader on arbitrary bytes: must return Ok or Err, never panic, hang or
//! allocate without bound; what it accepts must keep its promises (see `checks::gguf`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gpt2_fuzz::checks::gguf(data));
