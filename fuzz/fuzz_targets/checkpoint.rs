//! Opening a whole checkpoint (index + data shards) from arbitrary bytes, then reading
//! and verifying every tensor.
//!
//! Input layout: `[index_len: u16 le][num_shards - 1: u8 (mod 2)][index][shard data...]`;
//! the shard data is split into `num_shards` equal parts. The config is the micro
//! fixture's (vocab 96, n_ctx 16, n_embd 16, n_head 2, n_layer 1), so seeds built from
//! `fixtures/micro/openai*` (see `make_seeds.sh`) open successfully.
#![no_main]

use gpt2_weights::{tf, Config};
use libfuzzer_sys::fuzz_target;

const MICRO: Config = Config {
    n_vocab: 96,
    n_ctx: 16,
    n_embd: 16,
    n_head: 2,
    n_layer: 1,
    layer_norm_epsilon: 1e-5,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let index_len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 3);
    let num_shards = 1 + (data[2] % 2) as usize;
    let index = &data[3..3 + index_len];
    let rest = &data[3 + index_len..];
    let part = rest.len().div_ceil(num_shards);
    let mut shards: Vec<Vec<u8>> = rest.chunks(part.max(1)).map(<[u8]>::to_vec).collect();
    shards.resize(num_shards, Vec::new());
    // Block checksums off (see the index target); tensor checksums stay on.
    let Ok(index) = tf::parse_index_unchecked(index) else {
        return;
    };
    if let Ok(w) = tf::open_from_parsed(MICRO, index, shards) {
        let names: Vec<String> = w.names().map(str::to_string).collect();
        assert_eq!(names.len(), 16);
        for name in &names {
            if let Ok(t) = w.tensor(name) {
                assert_eq!(Some(t.data.len()), t.dtype.byte_len(t.num_elements()));
                let _ = t.to_f32_vec();
            }
        }
        let _ = w.verify();
    }
});
