//! A `POST /v1/completions` body through the server's request parser (see
//! `checks::server_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gpt2_fuzz::checks::server_request(data));
