//! Writing Hugging Face model directories: [`save_hf`] and [`convert`].
//!
//! Every write is atomic at the directory level: files are written into a temporary
//! directory beside the destination (`.NAME.partial-XXXXXX`), flushed to disk, and the
//! directory is renamed to its final name only when complete. An interrupted or failed
//! write therefore never leaves a directory at the destination; a crash (or SIGKILL) can at
//! worst leave a `.partial-` directory, which no reader mistakes for a model.
//!
//! Such leftovers are removed by the next write to the same destination: while a write runs,
//! it holds an exclusive lock on the file `.lock` in its temporary directory (removed just
//! before the rename), so a `.NAME.partial-*` directory whose `.lock` can be locked belongs to
//! a writer that died. One without a `.lock` (a writer dies in the instant after creating the
//! directory, or after removing the lock before the rename) is removed once it is a minute
//! old; one whose lock is held is left alone.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Mismatch;
use crate::names::expected_shapes;
use crate::{Config, Dtype, Layout, TensorView, Weights, WeightsError};

/// Writes a Hugging Face layout directory (`config.json` + `model.safetensors`) at `to`,
/// atomically (see the module docs). `to` must not exist.
///
/// `tensors` must be exactly the canonical tensors of `config`
/// ([`expected_tensors`](crate::expected_tensors)), with matching shapes; anything else
/// is an error and nothing is written.
///
/// ```
/// use std::borrow::Cow;
/// use gpt2_weights::{expected_tensors, save_hf, Config, Dtype, TensorView, Weights};
/// let config = Config { n_vocab: 8, n_ctx: 4, n_embd: 4, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let tensors: Vec<(String, TensorView)> = expected_tensors(&config)
///     .into_iter()
///     .map(|(name, shape)| {
///         let n: usize = shape.iter().product();
///         let data = Cow::Owned(vec![0u8; 4 * n]);
///         (name, TensorView { dtype: Dtype::F32, shape, transposed: false, data })
///     })
///     .collect();
/// let dir = tempfile::tempdir()?;
/// let to = dir.path().join("model");
/// save_hf(&to, &config, &tensors)?;
/// assert_eq!(Weights::open(&to)?.config(), &config);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_hf(
    to: &Path,
    config: &Config,
    tensors: &[(String, TensorView<'_>)],
) -> Result<(), WeightsError> {
    save_hf_with_files(to, config, tensors, &[])
}

/// [`save_hf`], also copying `files` into the new directory: each `(source path,
/// file name in the new directory)`, e.g. `("models/124M/encoder.json", "vocab.json")`.
pub fn save_hf_with_files(
    to: &Path,
    config: &Config,
    tensors: &[(String, TensorView<'_>)],
    files: &[(PathBuf, String)],
) -> Result<(), WeightsError> {
    let views: Vec<(&str, &TensorView<'_>)> =
        tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_hf_dir(to, config, views, files)
}

/// Converts a model of any layout (typically OpenAI's release) into a Hugging Face layout
/// directory at `to`, with every tensor stored as `dtype` (a float dtype: safetensors has no
/// Q8_0; write GGUF with [`gguf::convert_to_gguf`](crate::gguf::convert_to_gguf)).
///
/// - Every tensor is read through [`Weights::tensor`], so TensorFlow checksums are
///   verified before anything is renamed into place.
/// - `f32` from `f32` is lossless (the bytes are copied as they are); `f16`/`bf16` round
///   to nearest even. A finite weight too large for f16 (`|w| > 65504`) is an error naming
///   the tensor, not an infinity.
/// - A GGUF source is dequantized (Q8_0) and its transposed matrices written in Hugging
///   Face's `[in, out]` order.
/// - Tokenizer files come along: from an OpenAI directory `encoder.json` → `vocab.json`
///   and `vocab.bpe` → `merges.txt`; from a Hugging Face directory `vocab.json`,
///   `merges.txt`, `tokenizer.json`, `tokenizer_config.json`,
///   `special_tokens_map.json` and `generation_config.json` — each when present.
/// - Atomic (see the module docs); `to` must not exist.
///
/// Each tensor is cast while it is written, so converting needs memory for one cast
/// tensor at a time, not a second copy of the model. (Another storage type is added
/// by extending [`Dtype`] and the cast in [`TensorView::to_dtype`].)
///
/// ```no_run
/// use gpt2_weights::{convert, Dtype};
/// convert("models/124M".as_ref(), "models/gpt2-f16".as_ref(), Dtype::F16)?;
/// # Ok::<(), gpt2_weights::WeightsError>(())
/// ```
pub fn convert(from: &Path, to: &Path, dtype: Dtype) -> Result<(), WeightsError> {
    if to.symlink_metadata().is_ok() {
        return Err(WeightsError::DestinationExists(to.to_path_buf()));
    }
    if !dtype.is_float() {
        return Err(WeightsError::Unsupported {
            file: to.display().to_string(),
            message: format!(
                "safetensors cannot store {dtype}; write a GGUF model for Q8_0 \
                 (gguf::convert_to_gguf)"
            ),
        });
    }
    let weights = Weights::open(from)?;
    let mut tensors = Vec::new();
    for name in weights.names() {
        let view = weights.tensor(name)?;
        if dtype == Dtype::F16 && view.dtype != Dtype::F16 {
            check_f16_range(from, name, &view)?;
        }
        tensors.push((name, Cast { view, dtype }));
    }
    let files = tokenizer_files(from, weights.layout());
    write_hf_dir(to, weights.config(), tensors, &files)
}

/// The tokenizer (and generation) files that [`convert`] copies from a model directory of
/// `layout`, as `(source path, file name in the new directory)` pairs, for those present:
/// from an OpenAI directory `encoder.json` → `vocab.json` and `vocab.bpe` → `merges.txt`;
/// from a Hugging Face or GGUF directory `vocab.json`, `merges.txt`, `tokenizer.json`,
/// `tokenizer_config.json`, `special_tokens_map.json` and `generation_config.json`.
///
/// ```
/// use gpt2_weights::{tokenizer_files, Layout};
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("encoder.json"), "{}")?;
/// let files = tokenizer_files(dir.path(), Layout::OpenAi);
/// assert_eq!(files, vec![(dir.path().join("encoder.json"), "vocab.json".to_string())]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn tokenizer_files(from: &Path, layout: Layout) -> Vec<(PathBuf, String)> {
    let pairs: &[(&str, &str)] = match layout {
        Layout::OpenAi => &[("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")],
        Layout::HuggingFace | Layout::Gguf => &[
            ("vocab.json", "vocab.json"),
            ("merges.txt", "merges.txt"),
            ("tokenizer.json", "tokenizer.json"),
            ("tokenizer_config.json", "tokenizer_config.json"),
            ("special_tokens_map.json", "special_tokens_map.json"),
            ("generation_config.json", "generation_config.json"),
        ],
    };
    pairs
        .iter()
        .map(|(src, dst)| (from.join(src), dst.to_string()))
        .filter(|(src, _)| src.is_file())
        .collect()
}

/// Refuses a finite value that f16 cannot hold (it would become an infinity).
fn check_f16_range(from: &Path, name: &str, view: &TensorView<'_>) -> Result<(), WeightsError> {
    const F16_MAX: f32 = 65504.0;
    let mut worst = 0f32;
    view.for_each_f32(|v| {
        if v.is_finite() && v.abs() > worst.abs() {
            worst = v;
        }
    });
    if worst.abs() > F16_MAX {
        return Err(WeightsError::Unsupported {
            file: from.display().to_string(),
            message: format!(
                "tensor `{name}` holds {worst:e}, beyond f16's range (|w| at most 65504); \
                 convert to f32 or bf16 instead"
            ),
        });
    }
    Ok(())
}

/// A tensor cast to `dtype` when the safetensors writer asks for its bytes.
struct Cast<'a> {
    view: TensorView<'a>,
    dtype: Dtype,
}

impl safetensors::View for Cast<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        // A float dtype: `convert` refuses Q8_0 before anything is written.
        self.dtype
            .to_safetensors()
            .unwrap_or(safetensors::Dtype::F32)
    }
    fn shape(&self) -> &[usize] {
        &self.view.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self.view.to_dtype(self.dtype).data {
            Cow::Borrowed(b) => Cow::Borrowed(b),
            Cow::Owned(v) => Cow::Owned(v),
        }
    }
    fn data_len(&self) -> usize {
        self.dtype
            .byte_len(self.view.num_elements())
            .unwrap_or(usize::MAX)
    }
}

trait Shaped {
    fn shape_of(&self) -> &[usize];
    fn len_ok(&self) -> bool;
}

impl Shaped for &TensorView<'_> {
    fn shape_of(&self) -> &[usize] {
        &self.shape
    }
    fn len_ok(&self) -> bool {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| self.dtype.byte_len(n))
            == Some(self.data.len())
    }
}

impl Shaped for Cast<'_> {
    fn shape_of(&self) -> &[usize] {
        &self.view.shape
    }
    fn len_ok(&self) -> bool {
        (&self.view).len_ok()
    }
}

fn write_hf_dir<V: safetensors::View + Shaped>(
    to: &Path,
    config: &Config,
    tensors: Vec<(&str, V)>,
    files: &[(PathBuf, String)],
) -> Result<(), WeightsError> {
    config.validate()?;
    check_tensors(to, config, &tensors)?;
    save_dir_with(to, config, files, &["model.safetensors"], |tmp| {
        let model_path = tmp.join("model.safetensors");
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(tensors, Some(metadata), &model_path).map_err(
            |e| match e {
                safetensors::SafeTensorError::IoError(io) => WeightsError::io(&model_path, io),
                other => WeightsError::format(model_path.display(), other.to_string()),
            },
        )?;
        Ok(vec![model_path])
    })
}

/// Writes a model directory at `to` atomically (see the module docs): `config.json` for
/// `config`, the weight files that `write_weights` writes into the temporary directory it is
/// given (returning their paths, which are then flushed to disk), and copies of `files`
/// (`(source path, file name)` pairs, as for [`save_hf_with_files`]). `weight_names` are the
/// names `write_weights` uses, which `files` may not take. `to` must not exist; on any error
/// nothing is left at `to`.
///
/// This is the writer behind [`save_hf`] and [`convert`]; other weight formats (the GGUF
/// files of `gpt2-model`) use it to get the same all-or-nothing behaviour.
///
/// ```
/// use gpt2_weights::{save_dir_with, Config, WeightsError};
/// let config = Config { n_vocab: 8, n_ctx: 4, n_embd: 4, n_head: 2, n_layer: 1, layer_norm_epsilon: 1e-5 };
/// let dir = tempfile::tempdir()?;
/// let to = dir.path().join("model");
/// save_dir_with(&to, &config, &[], &["weights.bin"], |tmp| {
///     let path = tmp.join("weights.bin");
///     std::fs::write(&path, b"...").map_err(|source| WeightsError::Io { path: path.clone(), source })?;
///     Ok::<_, WeightsError>(vec![path])
/// })?;
/// assert!(to.join("config.json").is_file() && to.join("weights.bin").is_file());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_dir_with<E: From<WeightsError>>(
    to: &Path,
    config: &Config,
    files: &[(PathBuf, String)],
    weight_names: &[&str],
    write_weights: impl FnOnce(&Path) -> Result<Vec<PathBuf>, E>,
) -> Result<(), E> {
    config.validate()?;
    for (src, dst) in files {
        if Path::new(dst).file_name().and_then(|f| f.to_str()) != Some(dst.as_str())
            || dst == "config.json"
            || weight_names.contains(&dst.as_str())
        {
            return Err(WeightsError::format(
                to.display(),
                format!(
                    "cannot copy {} to `{dst}`: not a plain, free file name",
                    src.display()
                ),
            )
            .into());
        }
    }
    if to.symlink_metadata().is_ok() {
        return Err(WeightsError::DestinationExists(to.to_path_buf()).into());
    }
    let name = to
        .file_name()
        .ok_or_else(|| WeightsError::format(to.display(), "destination has no directory name"))?;
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| WeightsError::io(&parent, e))?;
    let prefix = format!(".{}.partial-", name.to_string_lossy());
    remove_stale_partials(&parent, &prefix);
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(|e| WeightsError::io(&parent, e))?;
    // Held until the rename: tells a later writer that this directory is in use.
    let lock_path = tmp.path().join(LOCK_FILE);
    let lock = File::create_new(&lock_path).map_err(|e| WeightsError::io(&lock_path, e))?;
    lock.lock().map_err(|e| WeightsError::io(&lock_path, e))?;

    let config_path = tmp.path().join("config.json");
    let mut json = serde_json::to_string_pretty(&config.to_config_json())
        .map_err(|e| WeightsError::format(config_path.display(), e.to_string()))?;
    json.push('\n');
    std::fs::write(&config_path, json).map_err(|e| WeightsError::io(&config_path, e))?;

    let mut written = vec![config_path];
    written.extend(write_weights(tmp.path())?);
    for (src, dst) in files {
        let path = tmp.path().join(dst);
        // Copy the bytes, not the permissions (a read-only source, like a shared
        // download cache, must not give read-only files).
        let mut input = File::open(src).map_err(|e| WeightsError::io(src, e))?;
        let mut output = File::create(&path).map_err(|e| WeightsError::io(&path, e))?;
        std::io::copy(&mut input, &mut output).map_err(|e| WeightsError::io(&path, e))?;
        written.push(path);
    }
    for path in &written {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| WeightsError::io(path, e))?;
    }
    // Complete: move it into place. (A failure here drops `tmp`, which removes it.)
    if to.symlink_metadata().is_ok() {
        return Err(WeightsError::DestinationExists(to.to_path_buf()).into());
    }
    // The lock file goes before the rename (the lock itself stays held until then); a later
    // writer leaves a partial directory without one alone.
    std::fs::remove_file(&lock_path).map_err(|e| WeightsError::io(&lock_path, e))?;
    std::fs::rename(tmp.path(), to).map_err(|e| WeightsError::io(to, e))?;
    drop(lock);
    // The directory now lives at `to`; don't let the guard delete it.
    let _ = tmp.keep();
    if let Ok(dir) = File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The lock file of a temporary directory (see the module docs).
const LOCK_FILE: &str = ".lock";

/// How old a temporary directory without a lock file must be to count as left by a writer
/// that died.
const STALE_WITHOUT_LOCK: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the `PREFIX*` directories in `parent` left by writers that died (see the module
/// docs). Best effort: anything that cannot be checked or removed is left as it is.
fn remove_stale_partials(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let is_partial = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix));
        // A real directory, not a symlink to one.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !(is_partial && is_dir) {
            continue;
        }
        let dir = entry.path();
        match File::open(dir.join(LOCK_FILE)) {
            Ok(lock) => {
                if lock.try_lock().is_ok() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Err(_) => {
                // A live writer has a lock file within an instant of creating the directory
                // and renames it an instant after removing it.
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_WITHOUT_LOCK);
                if old {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
    }
}

fn check_tensors<V: Shaped>(
    to: &Path,
    config: &Config,
    tensors: &[(&str, V)],
) -> Result<(), WeightsError> {
    let mut given: HashMap<&str, &V> = HashMap::new();
    let mut mismatch = Mismatch::default();
    for (name, t) in tensors {
        if given.insert(name, t).is_some() {
            return Err(WeightsError::format(
                to.display(),
                format!("tensor `{name}` given twice"),
            ));
        }
        if !t.len_ok() {
            return Err(WeightsError::format(
                to.display(),
                format!("tensor `{name}`: data length does not match its shape and dtype"),
            ));
        }
    }
    for (name, shape) in expected_shapes(config) {
        match given.remove(name.as_str()) {
            None => mismatch.missing.push(name),
            Some(t) if t.shape_of() != shape.as_slice() => {
                let found = t.shape_of().to_vec();
                mismatch.wrong_shape.push((name, shape, found))
            }
            Some(_) => {}
        }
    }
    mismatch.unexpected = given.into_keys().map(str::to_string).collect();
    mismatch.unexpected.sort();
    if mismatch.is_empty() {
        Ok(())
    } else {
        Err(WeightsError::Mismatch {
            dir: to.to_path_buf(),
            mismatch,
        })
    }
}
