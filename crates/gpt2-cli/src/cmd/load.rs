//! Loading a model and its tokenizer for the commands that run one (`generate`, `score`, ...).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use gpt2_model::{DType, Device, Gpt2, LoadOptions};
use gpt2_tokenizer::{excerpt, Layout, Tokenizer};

use super::UsageError;

/// Compute dtype on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats: the reference numbers.
    F32,
    /// 16-bit floats: half the memory traffic, slightly different numbers.
    F16,
    /// 8-bit blocks (GGML Q8_0) for the weight matrices (quantized at load, or as stored in
    /// a GGUF model); f32 activations.
    #[value(name = "q8_0")]
    Q8_0,
}

/// Which model to run and how: shared by every command that loads one.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// The model: a size (124M, 355M, 774M, 1558M), a hub name (gpt2, gpt2-medium, gpt2-large,
    /// gpt2-xl), a model directory in either layout (OpenAI's release or Hugging Face's), or a
    /// GGUF model (a directory with model.gguf, as `gpt2 convert --dtype q8_0` writes, or a
    /// .gguf file). A name not found locally is downloaded.
    #[arg(short, long, default_value = "124M", value_name = "NAME|DIR")]
    pub model: String,

    /// Where model names are looked up (and downloaded to) first; then $GPT2_MODELS_DIR,
    /// ./models and the user cache directory.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// Never download: fail if the model is not on disk.
    #[arg(long)]
    pub offline: bool,

    /// Compute dtype [default: f32; q8_0 for a GGUF model, whose 8-bit weights f32/f16
    /// dequantize].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,

    /// CPU threads for the tensor kernels (default: the number of physical cores, or
    /// $RAYON_NUM_THREADS).
    /// At most 4 x the logical CPUs.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Where to run: `cpu`, `cuda` (or `cuda:N` for GPU N) or `metal`. The GPUs need a `gpt2`
    /// built with the `cuda` or `metal` cargo feature.
    #[arg(long, default_value = "cpu", value_parser = parse_device, value_name = "DEVICE")]
    pub device: DeviceArg,
}

impl ModelArgs {
    /// The `--dtype` to use for the model at `dir`: as given, else q8_0 for a GGUF model and
    /// f32 for the rest.
    pub fn dtype_for(&self, dir: &Path) -> DtypeArg {
        match self.dtype {
            Some(dtype) => dtype,
            None if gpt2_weights::gguf::find_gguf(dir).is_some() => DtypeArg::Q8_0,
            None => DtypeArg::F32,
        }
    }
}

/// A `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// NVIDIA GPU number N.
    Cuda(usize),
    /// Apple GPU number N.
    Metal(usize),
}

/// Parses `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`.
fn parse_device(s: &str) -> Result<DeviceArg, String> {
    let (kind, ordinal) = match s.split_once(':') {
        Some((kind, n)) => {
            let n = n.parse::<usize>().map_err(|_| {
                format!(
                    "expected a GPU number after {}, found {}",
                    excerpt(kind),
                    excerpt(n)
                )
            })?;
            (kind, n)
        }
        None => (s, 0),
    };
    match kind {
        "cpu" if ordinal == 0 => Ok(DeviceArg::Cpu),
        "cuda" => Ok(DeviceArg::Cuda(ordinal)),
        "metal" => Ok(DeviceArg::Metal(ordinal)),
        _ => Err(format!(
            "expected cpu, cuda, cuda:N, metal or metal:N, found {}",
            excerpt(s)
        )),
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceArg::Cpu => f.write_str("cpu"),
            DeviceArg::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceArg::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl DeviceArg {
    /// Opens the device; a GPU this build or machine does not have is a clear error.
    fn open(self) -> anyhow::Result<Device> {
        let device = match self {
            DeviceArg::Cpu => return Ok(Device::Cpu),
            DeviceArg::Cuda(n) => Device::new_cuda(n),
            DeviceArg::Metal(n) => Device::new_metal(n),
        };
        device.with_context(|| {
            format!(
                "cannot open the device {self} (a GPU needs a gpt2 built with `--features cuda` or \
                 `--features metal`, and the GPU itself)"
            )
        })
    }
}

/// A loaded model, its tokenizer, and how long loading took.
pub struct Loaded {
    /// The model.
    pub model: Gpt2,
    /// The tokenizer (the model directory's files, or GPT-2's embedded vocabulary).
    pub tokenizer: Tokenizer,
    /// The model directory.
    pub dir: PathBuf,
    /// Time to resolve and load the model and the tokenizer (a download included).
    pub load_time: Duration,
}

/// The most `--threads` that makes sense: 4 × the logical CPUs
/// (`std::thread::available_parallelism`). More threads than that only contend for the CPUs,
/// and a count like 1000000 would exhaust memory for their stacks.
pub fn max_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_mul(4)
}

/// Parses `--threads`: a count from 1 to [`max_threads`].
fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("expected a number of threads, found {}", excerpt(s)))?;
    check_threads(n)
}

/// `n` if it is a sensible thread count, else what the bound is.
fn check_threads(n: usize) -> Result<usize, String> {
    let max = max_threads();
    match n {
        0 => Err("--threads must be at least 1, got 0".into()),
        n if n > max => Err(format!(
            "--threads must be at most {max} (4 x the {} logical CPUs here), got {n}",
            max / 4
        )),
        n => Ok(n),
    }
}

/// Sets the CPU thread count for candle's kernels and starts rayon's thread pool with it.
/// Candle reads the count from `RAYON_NUM_THREADS` (and `CANDLE_NUM_THREADS`) at its first
/// tensor operation, so this must run before the model is built. The pool is started here so
/// that threads that cannot be created (e.g. under an address-space limit) are an error with
/// context instead of a panic inside the first tensor operation. A second call does nothing.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if STARTED.get().is_some() {
        return Ok(());
    }
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        let n = check_threads(n).map_err(UsageError)?;
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        pool = pool.num_threads(n);
    }
    pool.build_global().with_context(|| match threads {
        Some(n) => format!("cannot start {n} CPU threads (--threads {n})"),
        None => {
            "cannot start the CPU threads (one per logical CPU, or $RAYON_NUM_THREADS)".to_string()
        }
    })?;
    let _ = STARTED.set(());
    Ok(())
}

/// The model directory's own tokenizer files (any layout, as `gpt2-tokenizer` detects them),
/// else the tokenizer stored in a GGUF model, else GPT-2's embedded vocabulary; half a layout
/// is an error. `dir` may be a `.gguf` file (then only the last two apply). Also says where the
/// tokenizer came from, for messages.
fn tokenizer_for(dir: &Path) -> anyhow::Result<(Tokenizer, String)> {
    let from_gguf = || -> anyhow::Result<(Tokenizer, String)> {
        if let Some(file) = gpt2_weights::gguf::find_gguf(dir) {
            let gguf = gpt2_weights::gguf::GgufFile::open(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if let Some(lists) = gguf
                .tokenizer_lists()
                .with_context(|| format!("cannot load the tokenizer in {}", file.display()))?
            {
                let source = format!("{} (tokenizer.ggml.*)", file.display());
                let tokenizer =
                    Tokenizer::from_tokens_and_merges(lists.tokens, lists.merges, &source)
                        .with_context(|| {
                            format!("cannot load the tokenizer in {}", file.display())
                        })?;
                return Ok((
                    tokenizer,
                    format!("the tokenizer stored in {}", file.display()),
                ));
            }
        }
        Ok((
            Tokenizer::gpt2(),
            format!(
                "GPT-2's built-in tokenizer ({} has no tokenizer files)",
                dir.display()
            ),
        ))
    };
    if dir.is_file() {
        return from_gguf();
    }
    let layout = match Layout::detect(dir) {
        Ok(layout) => layout,
        Err(gpt2_tokenizer::Error::NoTokenizerFiles { .. }) => return from_gguf(),
        Err(err) => return Err(err).context("cannot find the model's tokenizer files"),
    };
    let tokenizer = Tokenizer::from_dir_with_layout(dir, layout)
        .with_context(|| format!("cannot load the tokenizer in {}", dir.display()))?;
    let files = layout.files().join(" + ");
    Ok((
        tokenizer,
        format!("the tokenizer of {} ({files})", dir.display()),
    ))
}

/// Checks that the tokenizer has exactly the model's `n_vocab` tokens. A smaller one cannot
/// decode every token the model can generate (it failed at the first such token); a larger one
/// can encode text into ids that the model has no embedding for.
fn check_vocab_size(tokenizer: &Tokenizer, source: &str, n_vocab: usize) -> anyhow::Result<()> {
    let size = tokenizer.vocab_size();
    if size != n_vocab {
        let why = if size < n_vocab {
            "it could not decode every token the model generates"
        } else {
            "it could encode text into ids the model does not have"
        };
        anyhow::bail!(
            "{source} has {size} tokens, but the model's vocabulary (n_vocab) has {n_vocab}: \
             they must be the same size ({why})"
        );
    }
    Ok(())
}

/// Resolves `--model` (downloading a named model when needed), loads it and its tokenizer.
pub fn load(args: &ModelArgs) -> anyhow::Result<Loaded> {
    set_threads(args.threads)?;
    let start = Instant::now();
    let resolve = gpt2_download::ResolveOptions {
        models_dir: args.models_dir.clone(),
        offline: args.offline,
        ..Default::default()
    };
    let as_path = Path::new(&args.model);
    let resolved = if as_path.is_file() {
        // A .gguf file (any other file is refused by Gpt2::load with what it looked for).
        Ok(as_path.to_path_buf())
    } else {
        gpt2_download::resolve_model(&args.model, &resolve)
    };
    let dir = match resolved {
        Ok(dir) => dir,
        // A name or path that cannot be a model is a usage error; a failed download is not.
        Err(
            err @ (gpt2_download::DownloadError::UnknownModel { .. }
            | gpt2_download::DownloadError::ModelDirNotFound(_)),
        ) => return Err(UsageError(format!("--model: {err}")).into()),
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context(format!("cannot get the model {}", excerpt(&args.model))))
        }
    };
    let mut opts = match args.dtype_for(&dir) {
        DtypeArg::F32 => LoadOptions::cpu(DType::F32),
        DtypeArg::F16 => LoadOptions::cpu(DType::F16),
        DtypeArg::Q8_0 => LoadOptions::q8_0(),
    };
    opts.device = args.device.open()?;
    let model = Gpt2::load(&dir, &opts)
        .with_context(|| format!("cannot load the model in {}", dir.display()))?;
    let (tokenizer, source) = tokenizer_for(&dir)?;
    check_vocab_size(&tokenizer, &source, model.config().n_vocab)?;
    Ok(Loaded {
        model,
        tokenizer,
        dir,
        load_time: start.elapsed(),
    })
}

/// Token ids given on the command line (`--prompt-ids 464,3290`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIds(pub Vec<u32>);

/// Parses `--prompt-ids`/`--ids` values: token ids separated by commas and/or spaces.
pub fn parse_ids(s: &str) -> Result<TokenIds, String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<u32>().map_err(|_| {
                format!(
                    "expected token ids like 464,3290 (non-negative integers), found {}",
                    excerpt(part)
                )
            })
        })
        .collect::<Result<Vec<u32>, String>>()
        .map(TokenIds)
}

/// Checks ids against the model's vocabulary (a usage error naming the first bad one).
pub fn check_ids(ids: &[u32], n_vocab: usize) -> anyhow::Result<()> {
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= n_vocab)
    {
        return Err(UsageError(format!(
            "token id {id} (at index {i}) is out of range: the model's vocabulary has {n_vocab} tokens (ids 0..={})",
            n_vocab - 1
        ))
        .into());
    }
    Ok(())
}

/// The text argument, or all of stdin when it is absent or `-`. A terminal on stdin counts as
/// no input (an empty string) rather than waiting for one.
pub fn text_or_stdin(arg: Option<&str>) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
    match arg {
        Some(text) if text != "-" => Ok(text.to_string()),
        _ => {
            let stdin = std::io::stdin();
            if arg.is_none() && stdin.is_terminal() {
                return Ok(String::new());
            }
            let mut text = String::new();
            stdin
                .lock()
                .read_to_string(&mut text)
                .context("cannot read the text from stdin")?;
            Ok(text)
        }
    }
}
