//! The GGUF container reader on arbitrary bytes: must return Ok or Err, never panic, hang or
//! allocate without bound; what it accepts must keep its promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = gpt2_weights::SharedBytes::from_vec(data.to_vec());
    let Ok(file) = gpt2_weights::gguf::GgufFile::from_bytes(bytes, "<fuzz>".as_ref()) else {
        return;
    };
    assert!(file.alignment().is_power_of_two());
    let mut spans: Vec<(u64, usize)> = Vec::new();
    for t in file.tensors() {
        let bytes = file.tensor_bytes(&t.name).expect("a listed tensor has bytes");
        assert_eq!(bytes.len(), t.byte_len);
        assert_eq!(t.offset % file.alignment(), 0);
        spans.push((t.offset, t.byte_len));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].0 + w[0].1 as u64 <= w[1].0 || w[0].1 == 0, "overlapping tensors");
    }
    let _ = file.tokenizer_lists();
});
