//! Checkpoints: a model directory in Hugging Face's layout that also holds the optimizer's
//! state and where training stands.
//!
//! ```text
//! DIR/config.json              the model's hyperparameters (Hugging Face's config)
//! DIR/model.safetensors        the weights, f32, canonical names (what `gpt2 generate -m DIR`
//!                              and transformers' GPT2LMHeadModel.from_pretrained load)
//! DIR/vocab.json, merges.txt   the tokenizer
//! DIR/optimizer.safetensors    AdamW's moments: `exp_avg.NAME`, `exp_avg_sq.NAME` per weight
//! DIR/trainer_state.json       the completed steps, the settings, the data's fingerprint
//! ```
//!
//! A save is all or nothing: the new directory is written beside `DIR` (a hidden
//! `.DIR.partial-*` directory in the same folder), flushed, and only then swapped in for
//! the old one, so an interrupted save leaves the previous checkpoint in place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gpt2_tokenizer::Tokenizer;
use gpt2_weights::{Config, Dtype, TensorView, Weights};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::Moments;
use crate::settings::Settings;

/// The optimizer's file in a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The trainer's state file in a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// The `format` field of [`STATE_FILE`].
pub const FORMAT: &str = "gpt2-rs training checkpoint";

/// Where a run stands: what [`STATE_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format's version (1).
    pub version: u32,
    /// Steps completed (the next step to run, 0-based).
    pub step: usize,
    /// The run's settings.
    pub settings: Settings,
    /// How many training tokens there were.
    pub train_tokens: usize,
    /// [`crate::data::fingerprint`] of the training tokens, in hex.
    pub train_fingerprint: String,
}

/// One weight as saved: its name, shape, values and moments.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedParam {
    /// Canonical name (`wte.weight`, ...).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values (row-major f32).
    pub values: Vec<f32>,
    /// AdamW's moments.
    pub moments: Moments,
}

/// One weight to save, borrowed: its name, shape, values and moments.
#[derive(Debug, Clone, Copy)]
pub struct ParamRef<'a> {
    /// Canonical name.
    pub name: &'a str,
    /// Shape.
    pub shape: &'a [usize],
    /// Values (row-major f32).
    pub values: &'a [f32],
    /// AdamW's moments.
    pub moments: &'a Moments,
}

/// A checkpoint read back.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The model's hyperparameters.
    pub config: Config,
    /// Every weight, in canonical order.
    pub params: Vec<SavedParam>,
    /// Where the run stands.
    pub state: TrainState,
}

/// The values' little-endian bytes, in place (safetensors is little-endian; so is every
/// machine this project builds for, checked at compile time below).
fn f32_bytes(values: &[f32]) -> &[u8] {
    bytemuck::cast_slice(values)
}

#[cfg(target_endian = "big")]
compile_error!("checkpoints are written from memory as little-endian f32");

/// Writes `vocab.json` and `merges.txt` (Hugging Face's GPT-2 tokenizer files) into `dir`.
fn write_tokenizer(dir: &Path, tokenizer: &Tokenizer) -> Result<Vec<(PathBuf, String)>> {
    let (tokens, merges) = tokenizer.tokens_and_merges();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| (t, serde_json::Value::from(id)))
        .collect();
    let vocab_path = dir.join("vocab.json");
    let json = serde_json::to_string(&vocab).map_err(|e| TrainError::io(&vocab_path, e.into()))?;
    std::fs::write(&vocab_path, json).map_err(|e| TrainError::io(&vocab_path, e))?;
    let merges_path = dir.join("merges.txt");
    let mut text = String::from("#version: 0.2\n");
    for (a, b) in merges {
        text.push_str(&a);
        text.push(' ');
        text.push_str(&b);
        text.push('\n');
    }
    std::fs::write(&merges_path, text).map_err(|e| TrainError::io(&merges_path, e))?;
    Ok(vec![
        (vocab_path, "vocab.json".to_string()),
        (merges_path, "merges.txt".to_string()),
    ])
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create_new(path).map_err(|e| TrainError::io(path, e))?;
    f.write_all(bytes).map_err(|e| TrainError::io(path, e))?;
    f.sync_all().map_err(|e| TrainError::io(path, e))
}

/// Saves a checkpoint at `dir`, replacing the one there (if any) only once the new one is
/// complete (see the module docs).
///
/// # Errors
/// When a file cannot be written (nothing changes at `dir` then).
pub fn save(
    dir: &Path,
    config: &Config,
    params: &[ParamRef<'_>],
    state: &TrainState,
    tokenizer: &Tokenizer,
) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            TrainError::setting("--out", "a directory name", dir.display().to_string())
        })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| TrainError::io(&parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .map_err(|e| TrainError::io(&parent, e))?;
    let files = write_tokenizer(staging.path(), tokenizer)?;
    let views: Vec<(String, TensorView<'_>)> = params
        .iter()
        .map(|p| {
            (
                p.name.to_string(),
                TensorView {
                    dtype: Dtype::F32,
                    shape: p.shape.to_vec(),
                    transposed: false,
                    data: std::borrow::Cow::Borrowed(f32_bytes(p.values)),
                },
            )
        })
        .collect();
    let model_dir = staging.path().join("checkpoint");
    gpt2_weights::save_hf_with_files(&model_dir, config, &views, &files)?;
    drop(views);

    // The moments go to the file straight from memory (no copy).
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
    for p in params {
        for (kind, values) in [
            ("exp_avg", &p.moments.exp_avg),
            ("exp_avg_sq", &p.moments.exp_avg_sq),
        ] {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                p.shape.to_vec(),
                f32_bytes(values),
            )
            .map_err(|e| TrainError::io(&model_dir, std::io::Error::other(e.to_string())))?;
            tensors.push((format!("{kind}.{}", p.name), view));
        }
    }
    let opt_path = model_dir.join(OPTIMIZER_FILE);
    safetensors::serialize_to_file(tensors, None, &opt_path)
        .map_err(|e| TrainError::io(&opt_path, std::io::Error::other(e.to_string())))?;
    std::fs::File::open(&opt_path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(&opt_path, e))?;
    let state_path = model_dir.join(STATE_FILE);
    let mut json =
        serde_json::to_string_pretty(state).map_err(|e| TrainError::io(&state_path, e.into()))?;
    json.push('\n');
    write_synced(&state_path, json.as_bytes())?;

    // Swap: the old checkpoint moves into the staging directory (removed with it), the new
    // one takes its place.
    if dir.symlink_metadata().is_ok() {
        let old = staging.path().join("previous");
        std::fs::rename(dir, &old).map_err(|e| TrainError::io(dir, e))?;
        if let Err(e) = std::fs::rename(&model_dir, dir) {
            let _ = std::fs::rename(&old, dir);
            return Err(TrainError::io(dir, e));
        }
    } else {
        std::fs::rename(&model_dir, dir).map_err(|e| TrainError::io(dir, e))?;
    }
    Ok(())
}

/// Reads the checkpoint at `dir`.
///
/// # Errors
/// [`TrainError::NotACheckpoint`] when `dir` is not one (no state file, another format, a
/// missing moment, weights that are not f32 of the config's shapes).
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let not = |reason: String| TrainError::NotACheckpoint {
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.is_dir() {
        return Err(not("no such directory".into()));
    }
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| not(format!("cannot read {STATE_FILE} ({e})")))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| not(format!("{STATE_FILE}: {e}")))?;
    if state.format != FORMAT || state.version != 1 {
        return Err(not(format!(
            "{STATE_FILE} is format {:?} version {}, expected {FORMAT:?} version 1",
            state.format, state.version
        )));
    }
    let weights = Weights::open(dir).map_err(|e| not(format!("cannot open the weights ({e})")))?;
    let config = *weights.config();
    let opt_path = dir.join(OPTIMIZER_FILE);
    let opt_bytes =
        std::fs::read(&opt_path).map_err(|e| not(format!("cannot read {OPTIMIZER_FILE} ({e})")))?;
    let opt = safetensors::SafeTensors::deserialize(&opt_bytes)
        .map_err(|e| not(format!("{OPTIMIZER_FILE}: {e}")))?;
    let mut moments: HashMap<String, Vec<f32>> = HashMap::new();
    for (name, view) in opt.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(not(format!("{OPTIMIZER_FILE}: {name} is not f32")));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        moments.insert(name, values);
    }
    let mut params = Vec::new();
    for (name, shape) in gpt2_weights::expected_tensors(&config) {
        let view = weights
            .tensor(&name)
            .map_err(|e| not(format!("weight {name}: {e}")))?;
        if view.dtype != Dtype::F32 {
            return Err(not(format!(
                "weight {name} is {}, expected f32",
                view.dtype
            )));
        }
        let values = view.to_f32_vec();
        let n = values.len();
        let mut take = |kind: &str| -> Result<Vec<f32>> {
            let key = format!("{kind}.{name}");
            match moments.remove(&key) {
                Some(v) if v.len() == n => Ok(v),
                Some(v) => Err(not(format!(
                    "{OPTIMIZER_FILE}: {key} has {} values, expected {n}",
                    v.len()
                ))),
                None => Err(not(format!("{OPTIMIZER_FILE} has no {key}"))),
            }
        };
        let m = Moments {
            exp_avg: take("exp_avg")?,
            exp_avg_sq: take("exp_avg_sq")?,
        };
        params.push(SavedParam {
            name,
            shape,
            values,
            moments: m,
        });
    }
    Ok(Checkpoint {
        config,
        params,
        state,
    })
}
