//! [`Weights`]: an opened, validated model directory.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::Mismatch;
use crate::gguf::GgufFile;
use crate::names::expected_shapes;
use crate::{Config, Dtype, Layout, TensorView, WeightsError};

/// The bytes of one data file: memory-mapped, or owned (for parsing from memory).
pub(crate) enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One data file of a model.
pub(crate) struct DataFile {
    pub path: PathBuf,
    /// Shared with the [`SharedBytes`] handed out, which keep the map alive.
    pub bytes: Arc<Backing>,
}

/// One tensor's bytes that keep their file mapped for as long as they (or a clone) live:
/// what lets a model use its weights straight from the page cache, with no copy, after the
/// [`Weights`] they came from are dropped. Cheap to clone.
///
/// ```no_run
/// use gpt2_weights::Weights;
/// let bytes = {
///     let w = Weights::open("models/124M".as_ref())?;
///     w.shared_bytes("wte.weight")?
/// }; // `w` is gone; the mapping stays while `bytes` lives.
/// assert_eq!(bytes.len(), 50257 * 768 * 4);
/// # Ok::<(), gpt2_weights::WeightsError>(())
/// ```
#[derive(Clone)]
pub struct SharedBytes {
    backing: Arc<Backing>,
    start: usize,
    len: usize,
}

impl SharedBytes {
    /// Whether the bytes are a view of a memory-mapped file (not a copy in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.backing, Backing::Mmap(_))
    }

    /// A whole file, memory-mapped read-only (with the same transparent-huge-page advice as
    /// the weight files): what [`GgufFile::open`] reads, and for a reader of another format
    /// that wants its tensors in place, through [`slice`](Self::slice).
    ///
    /// The file must not be truncated or rewritten in place while the bytes live (replacing
    /// it by a rename is fine): see [`Weights`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use gpt2_weights::SharedBytes;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("data");
    /// std::fs::write(&path, b"header|payload")?;
    /// let file = SharedBytes::map_file(&path)?;
    /// assert!(file.is_mapped());
    /// assert_eq!(&*file.slice(7, 7).expect("in range"), b"payload");
    /// assert!(file.slice(7, 8).is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`WeightsError::Io`] when the file cannot be opened or mapped.
    pub fn map_file(path: &Path) -> Result<SharedBytes, WeightsError> {
        let data = DataFile::map(path)?;
        let len = data.bytes.len();
        Ok(SharedBytes {
            backing: data.bytes,
            start: 0,
            len,
        })
    }

    /// Bytes held in memory (not mapped), behind the same handle: for a consumer that keeps
    /// either kind, such as a matrix quantized in memory or read in place from a file.
    ///
    /// ```
    /// use gpt2_weights::SharedBytes;
    /// let b = SharedBytes::from_vec(vec![1, 2, 3]);
    /// assert!(!b.is_mapped());
    /// assert_eq!(&*b, &[1, 2, 3]);
    /// ```
    pub fn from_vec(bytes: Vec<u8>) -> SharedBytes {
        let len = bytes.len();
        SharedBytes {
            backing: Arc::new(Backing::Owned(bytes)),
            start: 0,
            len,
        }
    }

    /// The `len` bytes at `start` of these bytes, sharing the same map; `None` when out of
    /// range.
    pub fn slice(&self, start: usize, len: usize) -> Option<SharedBytes> {
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| SharedBytes {
            backing: self.backing.clone(),
            start: self.start + start,
            len,
        })
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // In range: checked when the handle was made, and the backing never changes.
        &self.backing[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedBytes({} bytes, mapped: {})",
            self.len,
            self.is_mapped()
        )
    }
}

impl DataFile {
    /// A data file over bytes already mapped (a whole file, as [`SharedBytes::map_file`] gives).
    pub fn from_shared(path: &Path, bytes: &SharedBytes) -> DataFile {
        debug_assert_eq!(bytes.start, 0);
        DataFile {
            path: path.to_path_buf(),
            bytes: bytes.backing.clone(),
        }
    }

    /// Memory-maps `path` read-only.
    pub fn map(path: &Path) -> Result<DataFile, WeightsError> {
        let file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
        // SAFETY: the map is read-only. As with every mmap, the file must not be
        // truncated or modified by another process while it is open; checksums and
        // bounds are checked, so a modified file yields wrong numbers or an error,
        // and truncation yields SIGBUS — the same contract as the safetensors crate.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| WeightsError::io(path, e))?;
        // Transparent huge pages for the file's page cache where the kernel supports them for
        // file mappings (Linux with large folios): what is read from disk through this map
        // lands in 2 MiB pages, and the model's weight-streaming kernels, which read the
        // weights in place, run ~20% faster (fewer TLB misses; measured with f16 at 124M).
        // Only a hint: an error (another OS, an old kernel) changes nothing.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(DataFile {
            path: path.to_path_buf(),
            bytes: Arc::new(Backing::Mmap(map)),
        })
    }
}

/// A tensor as found in a file, before validation.
pub(crate) struct RawTensor {
    /// The name in the file.
    pub stored_name: String,
    /// The canonical name, if the stored name maps to one.
    pub canonical: Option<String>,
    /// The dtype, or a description of an unsupported one.
    pub dtype: Result<Dtype, String>,
    /// The canonical shape.
    pub shape: Vec<usize>,
    /// Whether the bytes hold the transpose (see [`TensorView::transposed`]).
    pub transposed: bool,
    /// Index into the data files.
    pub file: usize,
    pub start: usize,
    pub len: usize,
    /// TensorFlow's crc32c (unmasked) of the bytes, when the format stores one.
    pub crc32c: Option<u32>,
}

struct Entry {
    name: String,
    stored_name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    transposed: bool,
    file: usize,
    start: usize,
    len: usize,
    crc32c: Option<u32>,
    verified: AtomicBool,
}

/// Name, dtype and shape of one tensor, without reading its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    /// Canonical name (`h.0.attn.c_attn.weight`).
    pub name: &'a str,
    /// The name in the file (`model/h0/attn/c_attn/w`, `transformer.h.0...`).
    pub stored_name: &'a str,
    /// Stored element type.
    pub dtype: Dtype,
    /// Canonical shape (OpenAI's leading 1 of `[1, in, out]` weights removed).
    pub shape: &'a [usize],
    /// Whether the data hold the transpose (see [`TensorView::transposed`]).
    pub transposed: bool,
}

/// An opened, validated GPT-2 model of any [`Layout`].
///
/// Opening reads the config and the tensor index, checks every tensor's name and shape
/// against the config (reporting all missing, unexpected and wrongly shaped tensors
/// together) and memory-maps the data. Tensor data is read on demand by
/// [`tensor`](Self::tensor), which borrows straight from the map (no copy) and checks
/// TensorFlow's crc32c the first time a tensor is read.
///
/// ```no_run
/// use gpt2_weights::Weights;
/// let w = Weights::open("models/124M".as_ref())?;
/// println!("{} layers, {} parameters", w.config().n_layer, w.config().num_parameters());
/// let wte = w.tensor("wte.weight")?;
/// assert_eq!(wte.shape, vec![50257, 768]);
/// # Ok::<(), gpt2_weights::WeightsError>(())
/// ```
pub struct Weights {
    dir: PathBuf,
    config: Config,
    layout: Layout,
    dtype: Dtype,
    files: Vec<DataFile>,
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    gguf: Option<Box<GgufFile>>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("dir", &self.dir)
            .field("layout", &self.layout)
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

const HF_LOOKED_FOR: &str = "config.json with model.safetensors or model.safetensors.index.json \
    (Hugging Face layout)";
const GGUF_LOOKED_FOR: &str = "model.gguf (GGUF)";
const OPENAI_LOOKED_FOR: &str = "hparams.json with checkpoint and model.ckpt.index / \
    .data-NNNNN-of-MMMMM (OpenAI layout)";

impl Weights {
    /// Opens a model directory (or a `*.gguf` file), detecting its layout (see
    /// [`detect_layout`](Self::detect_layout)).
    pub fn open(dir: &Path) -> Result<Weights, WeightsError> {
        let layout = Self::detect_layout(dir)?;
        Self::open_layout(dir, layout)
    }

    /// Opens a model directory of a given layout ([`Layout::Gguf`]: a directory holding
    /// `model.gguf`, or a `*.gguf` file).
    pub fn open_layout(dir: &Path, layout: Layout) -> Result<Weights, WeightsError> {
        match layout {
            Layout::HuggingFace => crate::hf::open(dir),
            Layout::OpenAi => crate::tf::open(dir),
            Layout::Gguf => match crate::gguf::find_gguf(dir) {
                Some(file) => crate::gguf::open_weights(dir, &file),
                None => Err(WeightsError::MissingFile {
                    path: dir.join(crate::gguf::GGUF_FILE),
                    needed_for: "a GGUF model (or give the path of a `.gguf` file)".into(),
                }),
            },
        }
    }

    /// Which layout a path holds.
    ///
    /// GGUF when it is a file named `*.gguf` or a directory holding `model.gguf` (preferred
    /// over the other layouts' files beside it); Hugging Face when it has `config.json` and
    /// `model.safetensors` (or `model.safetensors.index.json`); otherwise OpenAI when it has
    /// `hparams.json`, `checkpoint` or `model.ckpt.index`. Anything else is an error that
    /// lists what was looked for.
    pub fn detect_layout(dir: &Path) -> Result<Layout, WeightsError> {
        let meta = std::fs::metadata(dir).map_err(|e| WeightsError::io(dir, e))?;
        if crate::gguf::find_gguf(dir).is_some() {
            return Ok(Layout::Gguf);
        }
        if !meta.is_dir() {
            return Err(WeightsError::UnknownLayout {
                dir: dir.to_path_buf(),
                looked_for: format!(
                    "a directory (found a file) holding {GGUF_LOOKED_FOR}, {HF_LOOKED_FOR}, or \
                     {OPENAI_LOOKED_FOR}; or a `.gguf` file"
                ),
            });
        }
        let has = |name: &str| dir.join(name).is_file();
        let hf_weights = has("model.safetensors") || has("model.safetensors.index.json");
        if hf_weights && has("config.json") {
            return Ok(Layout::HuggingFace);
        }
        if has("hparams.json") || has("checkpoint") || has("model.ckpt.index") {
            return Ok(Layout::OpenAi);
        }
        if hf_weights || has("config.json") {
            return Ok(Layout::HuggingFace);
        }
        Err(WeightsError::UnknownLayout {
            dir: dir.to_path_buf(),
            looked_for: format!("{GGUF_LOOKED_FOR}, {HF_LOOKED_FOR}, or {OPENAI_LOOKED_FOR}"),
        })
    }

    /// Validates `raw` against `config` and builds the view. `lm_head` is the index into
    /// `raw` of an explicit LM head, which must equal `wte.weight`.
    pub(crate) fn assemble(
        dir: &Path,
        layout: Layout,
        config: Config,
        files: Vec<DataFile>,
        raw: Vec<RawTensor>,
    ) -> Result<Weights, WeightsError> {
        let mut found: HashMap<&str, usize> = HashMap::new();
        let mut lm_head = None;
        let mut unexpected = Vec::new();
        for (i, t) in raw.iter().enumerate() {
            match t.canonical.as_deref() {
                Some("lm_head.weight") if layout != Layout::OpenAi => lm_head = Some(i),
                Some(c) => {
                    if let Some(&j) = found.get(c) {
                        return Err(WeightsError::format(
                            dir.display(),
                            format!(
                                "tensors `{}` and `{}` both give `{c}`",
                                raw[j].stored_name, t.stored_name
                            ),
                        ));
                    }
                    found.insert(c, i);
                }
                None => unexpected.push(t.stored_name.clone()),
            }
        }
        let mut mismatch = Mismatch::default();
        let mut order = Vec::new();
        let mut expected_names = HashSet::new();
        for (name, shape) in expected_shapes(&config) {
            match found.get(name.as_str()) {
                None => mismatch.missing.push(name.clone()),
                Some(&i) if raw[i].shape != shape => {
                    mismatch
                        .wrong_shape
                        .push((name.clone(), shape, raw[i].shape.clone()))
                }
                Some(&i) => order.push(i),
            }
            expected_names.insert(name);
        }
        for (c, &i) in &found {
            if !expected_names.contains(*c) {
                unexpected.push(raw[i].stored_name.clone());
            }
        }
        unexpected.sort();
        mismatch.unexpected = unexpected;
        if !mismatch.is_empty() {
            return Err(WeightsError::Mismatch {
                dir: dir.to_path_buf(),
                mismatch,
            });
        }

        let mut entries = Vec::with_capacity(order.len());
        for &i in &order {
            let t = &raw[i];
            let dtype = t.dtype.clone().map_err(|d| WeightsError::Unsupported {
                file: files[t.file].path.display().to_string(),
                message: format!(
                    "tensor `{}` has dtype {d}; expected f32, f16, bf16 (or q8_0 in GGUF)",
                    t.stored_name
                ),
            })?;
            check_extent(&files, t, dtype)?;
            entries.push(Entry {
                name: t.canonical.clone().unwrap_or_default(),
                stored_name: t.stored_name.clone(),
                dtype,
                shape: t.shape.clone(),
                transposed: t.transposed,
                file: t.file,
                start: t.start,
                len: t.len,
                crc32c: t.crc32c,
                verified: AtomicBool::new(false),
            });
        }
        check_no_overlap(&files, &entries)?;
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        let dtype = entries.first().map(|e| e.dtype).unwrap_or(Dtype::F32);
        let weights = Weights {
            dir: dir.to_path_buf(),
            config,
            layout,
            dtype,
            files,
            entries,
            by_name,
            gguf: None,
        };
        if let Some(i) = lm_head {
            weights.check_lm_head(&raw[i])?;
        }
        Ok(weights)
    }

    fn check_lm_head(&self, t: &RawTensor) -> Result<(), WeightsError> {
        let wte = self.tensor("wte.weight")?;
        let file = &self.files[t.file];
        let same = t.dtype.as_ref().ok() == Some(&wte.dtype)
            && t.shape == wte.shape
            && t.transposed == wte.transposed
            && t.start
                .checked_add(t.len)
                .and_then(|end| file.bytes.get(t.start..end))
                == Some(&wte.data[..]);
        if same {
            Ok(())
        } else {
            Err(WeightsError::Unsupported {
                file: file.path.display().to_string(),
                message: format!(
                    "`{}` differs from `wte.weight`; GPT-2's LM head must be tied to the \
                     token embedding (an untied LM head is not supported)",
                    t.stored_name
                ),
            })
        }
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Which layout the directory has.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The dtype of the stored weights (that of `wte.weight`; the layouts this crate
    /// writes and the released checkpoints use one dtype for every tensor, and
    /// [`TensorView::dtype`] gives each tensor's own).
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The directory the weights were opened from (for a GGUF model opened by its file's
    /// path, that path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The GGUF file, for a [`Layout::Gguf`] model: its metadata (`general.name`, the
    /// tokenizer lists via [`GgufFile::tokenizer_lists`]), version and tensor infos.
    pub fn gguf(&self) -> Option<&GgufFile> {
        self.gguf.as_deref()
    }

    pub(crate) fn set_gguf(&mut self, file: GgufFile) {
        self.gguf = Some(Box::new(file));
    }

    /// Canonical tensor names, in model order (see [`expected_tensors`](crate::expected_tensors)).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Name, stored name, dtype and shape of every tensor, in model order, without
    /// reading any data.
    pub fn infos(&self) -> impl Iterator<Item = TensorInfo<'_>> {
        self.entries.iter().map(|e| TensorInfo {
            name: &e.name,
            stored_name: &e.stored_name,
            dtype: e.dtype,
            shape: &e.shape,
            transposed: e.transposed,
        })
    }

    /// The total number of stored parameters (equals `config().num_parameters()`).
    pub fn num_parameters(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
    }

    /// One tensor by canonical name, borrowing its bytes from the memory-mapped file.
    ///
    /// For TensorFlow checkpoints the first read of each tensor checks its crc32c
    /// against the index (an error names the tensor).
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, WeightsError> {
        let &i = self
            .by_name
            .get(name)
            .ok_or_else(|| WeightsError::UnknownTensor(name.to_string()))?;
        let e = &self.entries[i];
        let file = &self.files[e.file];
        let data = file.bytes.get(e.start..e.start + e.len).ok_or_else(|| {
            truncated(&file.path, &e.stored_name, e.start, e.len, file.bytes.len())
        })?;
        if let Some(expected) = e.crc32c {
            if !e.verified.load(Ordering::Relaxed) {
                let found = crc32c::crc32c(data);
                if found != expected {
                    return Err(WeightsError::Checksum {
                        file: file.path.clone(),
                        tensor: e.stored_name.clone(),
                        expected,
                        found,
                    });
                }
                e.verified.store(true, Ordering::Relaxed);
            }
        }
        Ok(TensorView {
            dtype: e.dtype,
            shape: e.shape.clone(),
            transposed: e.transposed,
            data: Cow::Borrowed(data),
        })
    }

    /// One tensor's bytes (as [`tensor`](Self::tensor) reads and checks them) in a handle
    /// that keeps the file mapped on its own, for a consumer that outlives these `Weights`.
    pub fn shared_bytes(&self, name: &str) -> Result<SharedBytes, WeightsError> {
        let view = self.tensor(name)?;
        let &i = self
            .by_name
            .get(name)
            .ok_or_else(|| WeightsError::UnknownTensor(name.to_string()))?;
        let e = &self.entries[i];
        debug_assert_eq!(view.data.len(), e.len);
        Ok(SharedBytes {
            backing: self.files[e.file].bytes.clone(),
            start: e.start,
            len: e.len,
        })
    }

    /// Reads every tensor and checks every checksum the format stores (TensorFlow's
    /// crc32c; safetensors stores none, so there this only checks extents).
    pub fn verify(&self) -> Result<(), WeightsError> {
        for e in &self.entries {
            self.tensor(&e.name)?;
        }
        Ok(())
    }
}

/// No two tensors share bytes: a crafted index could point every tensor at the same data
/// (each would pass its own checks, and a checksum of the shared bytes would match them all).
fn check_no_overlap(files: &[DataFile], entries: &[Entry]) -> Result<(), WeightsError> {
    let mut spans: Vec<&Entry> = entries.iter().filter(|e| e.len > 0).collect();
    spans.sort_by_key(|e| (e.file, e.start));
    for pair in spans.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.file == b.file && a.start + a.len > b.start {
            return Err(WeightsError::format(
                files[a.file].path.display(),
                format!(
                    "tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap; each \
                     tensor needs bytes of its own",
                    a.stored_name,
                    a.start,
                    a.start + a.len,
                    b.stored_name,
                    b.start,
                    b.start + b.len
                ),
            ));
        }
    }
    Ok(())
}

fn check_extent(files: &[DataFile], t: &RawTensor, dtype: Dtype) -> Result<(), WeightsError> {
    let file = &files[t.file];
    let want = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| dtype.byte_len(n));
    if want != Some(t.len) {
        return Err(WeightsError::format(
            file.path.display(),
            format!(
                "tensor `{}`: {} bytes stored, but shape {:?} of {dtype} needs {}",
                t.stored_name,
                t.len,
                t.shape,
                want.map_or(
                    "more than fits in memory (or not whole blocks)".to_string(),
                    |w| w.to_string()
                )
            ),
        ));
    }
    if t.start
        .checked_add(t.len)
        .is_none_or(|end| end > file.bytes.len())
    {
        return Err(truncated(
            &file.path,
            &t.stored_name,
            t.start,
            t.len,
            file.bytes.len(),
        ));
    }
    Ok(())
}

fn truncated(path: &Path, tensor: &str, start: usize, len: usize, file_len: usize) -> WeightsError {
    WeightsError::format(
        path.display(),
        format!(
            "truncated: tensor `{tensor}` needs bytes {start}..{} but the file has {file_len} bytes",
            start as u128 + len as u128
        ),
    )
}
