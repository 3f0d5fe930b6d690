//! The `.index` parser on arbitrary bytes: must return Ok or Err, never panic, hang or
//! allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let checked = gpt2_weights::tf::parse_index(data);
    // Without block checksums, mutations reach the block and protobuf parsers.
    let unchecked = gpt2_weights::tf::parse_index_unchecked(data);
    if let Ok(index) = &checked {
        assert_eq!(Some(index), unchecked.as_ref().ok(), "checksums changed the result");
    }
    if let Ok(index) = unchecked {
        // What the parser promises on success.
        assert!(index.header.num_shards >= 1);
        for pair in index.entries.windows(2) {
            assert!(pair[0].0 < pair[1].0, "entries not strictly sorted");
        }
        for (name, e) in &index.entries {
            assert!(!name.is_empty());
            assert!(e.shard_id < index.header.num_shards);
        }
    }
});
