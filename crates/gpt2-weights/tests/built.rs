//! Checkpoints the fixtures don't have, built byte by byte from the micro fixture:
//! data at shifted offsets in reordered shards, bf16, big-endian, unsupported dtypes.

mod common;

use gpt2_weights::{tf, Config, Dtype, Weights};

fn micro() -> (Config, tf::CheckpointIndex, Vec<u8>) {
    let dir = common::fixtures("micro/openai");
    let config = *Weights::open(&dir).unwrap().config();
    let index = tf::parse_index(&std::fs::read(dir.join("model.ckpt.index")).unwrap()).unwrap();
    let data = std::fs::read(dir.join("model.ckpt.data-00000-of-00001")).unwrap();
    (config, index, data)
}

fn reference() -> Weights {
    Weights::open(&common::fixtures("micro/hf")).unwrap()
}

fn assert_same_as_micro(w: &Weights) {
    let reference = reference();
    for name in reference.names() {
        assert_eq!(
            w.tensor(name).unwrap(),
            reference.tensor(name).unwrap(),
            "{name}"
        );
    }
    w.verify().unwrap();
}

/// Three shards; every tensor moved to shard `i % 3` behind 7 bytes of junk and after the
/// tensors placed before it, so no offset is the original one.
#[test]
fn shifted_offsets_in_three_shards() {
    let (config, mut index, data) = micro();
    let mut shards = vec![vec![0xAAu8; 7]; 3];
    for (i, (_, e)) in index.entries.iter_mut().enumerate() {
        let bytes = &data[e.offset as usize..(e.offset + e.size) as usize];
        let shard = &mut shards[i % 3];
        e.shard_id = (i % 3) as u32;
        e.offset = shard.len() as u64;
        shard.extend_from_slice(bytes);
        shard.extend_from_slice(&[0x55; 3]);
    }
    index.header.num_shards = 3;
    let index_bytes = common::index_bytes(&index);
    let w = tf::open_from_bytes(config, &index_bytes, shards.clone()).unwrap();
    assert_same_as_micro(&w);

    // The same from files, under a non-default prefix in a subdirectory.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(
        common::fixtures("micro/openai/hparams.json"),
        dir.join("hparams.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("checkpoint"),
        "model_checkpoint_path: \"run-1/ckpt-42\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("run-1")).unwrap();
    std::fs::write(dir.join("run-1/ckpt-42.index"), &index_bytes).unwrap();
    for (i, s) in shards.iter().enumerate() {
        std::fs::write(dir.join(format!("run-1/ckpt-42.data-{i:05}-of-00003")), s).unwrap();
    }
    assert_same_as_micro(&Weights::open(dir).unwrap());
}

#[test]
fn bf16_checkpoint() {
    let (config, mut index, data) = micro();
    let mut shard = Vec::new();
    for (_, e) in index.entries.iter_mut() {
        let bytes = &data[e.offset as usize..(e.offset + e.size) as usize];
        let bf: Vec<u8> = bytes
            .chunks_exact(4)
            .flat_map(|c| {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                half::bf16::from_f32(v).to_le_bytes()
            })
            .collect();
        e.dtype = 14; // DT_BFLOAT16
        e.offset = shard.len() as u64;
        e.size = bf.len() as u64;
        e.crc32c = crc32c::crc32c(&bf);
        shard.extend_from_slice(&bf);
    }
    let w = tf::open_from_bytes(config, &common::index_bytes(&index), vec![shard]).unwrap();
    assert_eq!(w.dtype(), Dtype::BF16);
    let r = reference();
    for name in r.names() {
        assert_eq!(
            w.tensor(name).unwrap(),
            r.tensor(name).unwrap().to_dtype(Dtype::BF16)
        );
    }
}

#[test]
fn big_endian_checkpoint_is_rejected() {
    let (config, mut index, data) = micro();
    index.header.endianness = 1;
    let err = tf::open_from_bytes(config, &common::index_bytes(&index), vec![data])
        .unwrap_err()
        .to_string();
    assert!(err.contains("big-endian"), "{err}");
}

#[test]
fn unsupported_dtype_names_the_tensor() {
    let (config, mut index, data) = micro();
    let (_, e) = index
        .entries
        .iter_mut()
        .find(|(n, _)| n == "model/wpe")
        .unwrap();
    e.dtype = 2; // DT_DOUBLE
    e.size /= 2; // (any size: the dtype is rejected first)
    let err = tf::open_from_bytes(config, &common::index_bytes(&index), vec![data])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`model/wpe` has dtype DT_DOUBLE (2)"), "{err}");
}

#[test]
fn size_that_does_not_match_the_shape() {
    let (config, mut index, data) = micro();
    let (_, e) = index
        .entries
        .iter_mut()
        .find(|(n, _)| n == "model/ln_f/g")
        .unwrap();
    e.size -= 4;
    let err = tf::open_from_bytes(config, &common::index_bytes(&index), vec![data])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`model/ln_f/g`: 60 bytes stored, but shape [16] of f32 needs 64"),
        "{err}"
    );
}

#[test]
fn shard_id_beyond_num_shards() {
    let (config, mut index, data) = micro();
    index.entries[3].1.shard_id = 1;
    let err = tf::open_from_bytes(config, &common::index_bytes(&index), vec![data])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shard_id 1 but the header says num_shards = 1"),
        "{err}"
    );
}

#[test]
fn builder_round_trips_the_fixture_index() {
    // The test-side writer and the parser agree (so the tests above test the reader).
    let (_, index, _) = micro();
    assert_eq!(
        tf::parse_index(&common::index_bytes(&index)).unwrap(),
        index
    );
}

#[test]
fn several_data_blocks_and_prefix_compression() {
    let (config, index, data) = micro();
    for (per_block, restart) in [(1, 1), (3, 2), (5, 16), (100, 3)] {
        let bytes = common::index_bytes_with(&index, per_block, restart);
        assert_eq!(
            tf::parse_index(&bytes).unwrap(),
            index,
            "{per_block} {restart}"
        );
        let w = tf::open_from_bytes(config, &bytes, vec![data.clone()]).unwrap();
        assert_same_as_micro(&w);
    }
}

#[test]
fn overlapping_data_blocks_are_rejected() {
    let (_, index, _) = micro();
    let entries = common::index_entries(&index);
    let (first, second) = entries.split_at(entries.len() / 2);
    let mut file = Vec::new();
    let a = common::write_block(&mut file, &common::index_bytes_block(first));
    let _b = common::write_block(&mut file, &common::index_bytes_block(second));
    // The index block lists block `a` twice, under increasing separator keys.
    let idx = vec![
        (
            first.last().unwrap().0.clone(),
            common::handle_bytes(a.0, a.1),
        ),
        (
            second.last().unwrap().0.clone(),
            common::handle_bytes(a.0, a.1),
        ),
    ];
    let err = tf::parse_index(&common::finish(file, &idx))
        .unwrap_err()
        .to_string();
    assert!(err.contains("overlaps the previous block"), "{err}");
}
