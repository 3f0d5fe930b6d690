//! `gpt2 train`: fine-tune a model on your own text, or train one from scratch, with
//! nanoGPT's recipe and PyTorch's numbers (see the `gpt2-train` crate).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use gpt2_model::generate::{GenerateOptions, SamplingParams, Session};
use gpt2_tokenizer::Tokenizer;
use gpt2_train::batches::{DataOrder, Windows};
use gpt2_train::schedule::ScheduleKind;
use gpt2_train::{checkpoint, data, init, Settings, TrainError, Trainer};
use gpt2_weights::Config;

use super::load::{self, DeviceArg, ModelArgs};
use super::UsageError;

const EXAMPLES: &str = "\
Examples:
  gpt2 train --init fixtures/tiny/hf --data book.txt --out tuned --steps 200 --seq-len 32
  gpt2 train --n-layer 4 --n-embd 128 --n-head 4 --n-ctx 128 --data a.txt --data b.txt \\
             --val-fraction 0.1 --out scratch --steps 2000 --lr 1e-3 --log-json log.jsonl
  gpt2 train --init 124M --data train.bin --out tuned --stop-after 500      stop as if interrupted
  gpt2 train --resume tuned --data train.bin --out tuned                    continue exactly

Data: each file is one document (UTF-8 text, encoded with GPT-2's BPE); consecutive files are
separated by one <|endoftext|>. A .bin file holds little-endian u16 token ids (nanoGPT's format).
Recipe (nanoGPT): AdamW (betas 0.9/0.95, weight decay on wte, wpe and the Conv1D weights), the
global gradient norm clipped to --grad-clip, linear warm-up then cosine decay to --min-lr at
--steps. --out ends as a model directory (gpt2 generate -m DIR loads it) that is also a
checkpoint (optimizer state, step): --resume continues it bit for bit. Ctrl-C saves and exits.
With --resume the run keeps its settings; only --steps may change (the schedule follows it).";

/// `--lr-schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// Cosine decay to --min-lr at --steps.
    Cosine,
    /// --lr after warm-up.
    Constant,
}

/// `--data-order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// A seeded random order of the windows, new for each pass.
    Shuffled,
    /// Window after window from the start.
    Sequential,
}

/// Arguments of `gpt2 train`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Where the trained model goes (a new directory, or the --resume directory): a model
    /// directory in Hugging Face's layout, and a checkpoint.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Fine-tune this model: what --model takes everywhere (a size, a hub name, a model
    /// directory in either layout, a GGUF model, dequantized to f32).
    #[arg(long, value_name = "MODEL", conflicts_with_all = ["n_layer", "n_embd", "n_head", "n_ctx", "resume"])]
    pub init: Option<String>,

    /// A new model's number of blocks (with --n-embd, --n-head, --n-ctx; vocabulary 50257).
    #[arg(long, value_name = "L")]
    pub n_layer: Option<usize>,

    /// A new model's width.
    #[arg(long, value_name = "E")]
    pub n_embd: Option<usize>,

    /// A new model's number of attention heads (dividing --n-embd).
    #[arg(long, value_name = "H")]
    pub n_head: Option<usize>,

    /// A new model's context length.
    #[arg(long, value_name = "C")]
    pub n_ctx: Option<usize>,

    /// Seed of a new model's weights and of the shuffled data order [default: 1337].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Training data (repeat for several files).
    #[arg(long, value_name = "FILE", required = true)]
    pub data: Vec<PathBuf>,

    /// Validation data (repeat for several files).
    #[arg(long, value_name = "FILE", conflicts_with = "val_fraction")]
    pub val_data: Vec<PathBuf>,

    /// Hold out the last fraction of the training tokens for validation, e.g. 0.1.
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,

    /// Sequences per micro-batch [default: 8].
    #[arg(long, value_name = "B")]
    pub batch_size: Option<usize>,

    /// Tokens per sequence, at most the model's n_ctx [default: 256, or n_ctx if smaller].
    #[arg(long, value_name = "T")]
    pub seq_len: Option<usize>,

    /// Micro-batches whose gradients add up to one step [default: 1].
    #[arg(long, value_name = "K")]
    pub grad_accum: Option<usize>,

    /// Optimizer steps of the run [default: 1000].
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,

    /// Stop after this many steps (of --steps) as if interrupted: save a checkpoint and exit.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,

    /// Peak learning rate [default: 6e-4].
    #[arg(long, value_name = "LR", allow_negative_numbers = true)]
    pub lr: Option<f64>,

    /// Learning rate at the end of the cosine decay [default: --lr / 10].
    #[arg(long, value_name = "LR", allow_negative_numbers = true)]
    pub min_lr: Option<f64>,

    /// Linear warm-up steps [default: 100].
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<usize>,

    /// The learning rate after warm-up [default: cosine].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<ScheduleArg>,

    /// AdamW's decoupled weight decay (wte, wpe and the Conv1D weights) [default: 0.1].
    #[arg(long, value_name = "WD", allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,

    /// Adam's beta1 [default: 0.9].
    #[arg(long, value_name = "B1", allow_negative_numbers = true)]
    pub beta1: Option<f64>,

    /// Adam's beta2 [default: 0.95].
    #[arg(long, value_name = "B2", allow_negative_numbers = true)]
    pub beta2: Option<f64>,

    /// Adam's epsilon [default: 1e-8].
    #[arg(long, value_name = "EPS", allow_negative_numbers = true)]
    pub eps: Option<f64>,

    /// Clip the global gradient norm to this; 0 turns clipping off [default: 1.0].
    #[arg(long, value_name = "NORM", allow_negative_numbers = true)]
    pub grad_clip: Option<f64>,

    /// Dropout probability on the embeddings, attention weights and residuals [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub dropout: Option<f64>,

    /// The order the windows are taken in [default: shuffled].
    #[arg(long, value_enum)]
    pub data_order: Option<OrderArg>,

    /// Validation loss every N steps (0: never; needs --val-data or --val-fraction).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub eval_every: usize,

    /// Batches of validation data per evaluation.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub eval_batches: usize,

    /// A sample (top-k 40) every N steps (0: never).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub sample_every: usize,

    /// Save a checkpoint to --out every N steps (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub save_every: usize,

    /// Continue the run saved in this checkpoint (the same data must be given).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["n_layer", "n_embd", "n_head", "n_ctx"])]
    pub resume: Option<PathBuf>,

    /// Append one JSON object per step (and per evaluation) to this file.
    #[arg(long, value_name = "FILE")]
    pub log_json: Option<PathBuf>,

    /// CPU threads for the tensor kernels (default: the number of physical cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Where --init names are looked up (and downloaded to) first.
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// Never download --init: fail if it is not on disk.
    #[arg(long)]
    pub offline: bool,
}

/// Set by the SIGINT handler: finish the step, save, exit 0.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn on_sigint(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // A second Ctrl-C: leave at once.
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Ctrl-C sets [`INTERRUPTED`] (where the handler can be installed).
fn catch_ctrl_c() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: the handler only touches an atomic and calls `_exit`, both async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// A training error as the CLI reports it: usage errors (bad settings, data, checkpoint)
/// exit with 2.
fn report(err: TrainError, context: &str) -> anyhow::Error {
    if err.is_usage() {
        UsageError(format!("{context}: {err}")).into()
    } else {
        anyhow::Error::new(err).context(context.to_string())
    }
}

/// The model to train and where its tokenizer comes from.
struct Start {
    config: Config,
    tokenizer: Tokenizer,
    /// A fresh run's weights, or the checkpoint to resume.
    from: From,
}

enum From {
    Weights(Vec<(String, gpt2_model::Tensor)>),
    Checkpoint(Box<checkpoint::Checkpoint>),
}

fn start(args: &Args) -> anyhow::Result<Start> {
    if let Some(dir) = &args.resume {
        let ckpt = checkpoint::load(dir).map_err(|e| report(e, "--resume"))?;
        let tokenizer = Tokenizer::from_dir(dir).unwrap_or_else(|_| Tokenizer::gpt2());
        return Ok(Start {
            config: ckpt.config,
            tokenizer,
            from: From::Checkpoint(Box::new(ckpt)),
        });
    }
    if let Some(init) = &args.init {
        let model_args = ModelArgs {
            model: init.clone(),
            models_dir: args.models_dir.clone(),
            offline: args.offline,
            dtype: Some(load::DtypeArg::F32),
            threads: args.threads,
            device: DeviceArg::Cpu,
        };
        let loaded = load::load(&model_args)?;
        let weights = loaded
            .model
            .named_tensors()
            .context("cannot read the model's weights")?;
        return Ok(Start {
            config: *loaded.model.config(),
            tokenizer: loaded.tokenizer,
            from: From::Weights(weights),
        });
    }
    let (Some(n_layer), Some(n_embd), Some(n_head), Some(n_ctx)) =
        (args.n_layer, args.n_embd, args.n_head, args.n_ctx)
    else {
        return Err(UsageError(
            "give the model to train: --init MODEL to fine-tune one, or all of --n-layer, \
             --n-embd, --n-head and --n-ctx for a new one (or --resume DIR)"
                .into(),
        )
        .into());
    };
    let config = Config {
        n_vocab: gpt2_tokenizer::GPT2_VOCAB_SIZE,
        n_ctx,
        n_embd,
        n_head,
        n_layer,
        layer_norm_epsilon: 1e-5,
    };
    config
        .validate()
        .map_err(|e| UsageError(format!("the new model's shape: {e}")))?;
    let weights = init::gpt2_init(&config, args.seed.unwrap_or(1337))
        .map_err(|e| report(e, "cannot initialize the new model"))?;
    Ok(Start {
        config,
        tokenizer: Tokenizer::gpt2(),
        from: From::Weights(weights),
    })
}

/// The settings the arguments give, over `base`.
fn settings_over(args: &Args, base: &Settings, n_ctx: usize, fresh: bool) -> Settings {
    let mut s = base.clone();
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field { s.$field = v; } )* };
    }
    set!(
        batch_size,
        seq_len,
        grad_accum,
        steps,
        lr,
        min_lr,
        warmup_steps
    );
    set!(weight_decay, beta1, beta2, eps, grad_clip, dropout, seed);
    if fresh {
        if args.seq_len.is_none() {
            s.seq_len = s.seq_len.min(n_ctx);
        }
        if args.min_lr.is_none() {
            s.min_lr = s.lr / 10.0;
        }
    }
    if let Some(k) = args.lr_schedule {
        s.lr_schedule = match k {
            ScheduleArg::Cosine => ScheduleKind::Cosine,
            ScheduleArg::Constant => ScheduleKind::Constant,
        };
    }
    if let Some(o) = args.data_order {
        s.data_order = match o {
            OrderArg::Shuffled => DataOrder::Shuffled,
            OrderArg::Sequential => DataOrder::Sequential,
        };
    }
    s
}

/// Reads and encodes data files, with a progress bar for large ones on a terminal.
fn read_data(
    paths: &[PathBuf],
    tokenizer: &Tokenizer,
    n_vocab: usize,
    what: &str,
) -> anyhow::Result<Vec<u32>> {
    use std::io::IsTerminal;
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = (std::io::stderr().is_terminal() && total > 4 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "encoding {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        bar
    });
    let ids = data::read_tokens(paths, tokenizer, n_vocab, &mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    })
    .map_err(|e| report(e, &format!("cannot read the {what} data")))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(ids)
}

/// Where `--log-json` lines go.
struct JsonLog(Option<std::io::BufWriter<std::fs::File>>);

impl JsonLog {
    fn open(path: Option<&Path>, append: bool) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self(None));
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .with_context(|| format!("cannot open --log-json {}", path.display()))?;
        Ok(Self(Some(std::io::BufWriter::new(file))))
    }

    fn line(&mut self, value: serde_json::Value) -> anyhow::Result<()> {
        if let Some(w) = &mut self.0 {
            writeln!(w, "{value}").context("cannot write --log-json")?;
            w.flush().context("cannot write --log-json")?;
        }
        Ok(())
    }
}

/// A sample of `n` tokens (top-k 40) from `<|endoftext|>`.
fn sample(trainer: &Trainer, tokenizer: &Tokenizer, seed: u64) -> anyhow::Result<String> {
    let model = trainer.model();
    let n = 64.min(model.config().n_ctx.saturating_sub(1)).max(1);
    let options = GenerateOptions {
        sampling: SamplingParams {
            top_k: Some(40),
            seed,
            ..SamplingParams::default()
        },
        max_new_tokens: n,
        stop_at_eos: false,
        ..GenerateOptions::default()
    };
    let mut session = Session::new(model);
    let mut text = String::new();
    for token in session
        .generate(tokenizer, &[gpt2_tokenizer::END_OF_TEXT], options)
        .context("cannot sample")?
    {
        text.push_str(&token.context("cannot sample")?.text);
    }
    Ok(text)
}

/// Runs `gpt2 train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    load::set_threads(args.threads)?;
    let resuming_in_place = args.resume.as_deref().is_some_and(|r| {
        r == args.out
            || matches!((r.canonicalize(), args.out.canonicalize()), (Ok(a), Ok(b)) if a == b)
    });
    if args.out.symlink_metadata().is_ok() && !resuming_in_place {
        return Err(UsageError(format!(
            "--out {} already exists: give a new directory, or --resume {} to continue the run saved there",
            args.out.display(),
            args.out.display()
        ))
        .into());
    }
    if let Some(f) = args.val_fraction {
        if !(f.is_finite() && f > 0.0 && f < 1.0) {
            return Err(UsageError(format!("--val-fraction must be in (0, 1), got {f}")).into());
        }
    }

    let Start {
        config,
        tokenizer,
        from,
    } = start(&args)?;
    let n_vocab = config.n_vocab;
    let ids = read_data(&args.data, &tokenizer, n_vocab, "training")?;
    let (train, val) = match args.val_fraction {
        Some(f) => {
            let (t, v) = data::split_validation(ids, f);
            (t, Some(v))
        }
        None if !args.val_data.is_empty() => (
            ids,
            Some(read_data(
                &args.val_data,
                &tokenizer,
                n_vocab,
                "validation",
            )?),
        ),
        None => (ids, None),
    };

    let mut trainer = match from {
        From::Weights(weights) => {
            let settings = settings_over(&args, &Settings::default(), config.n_ctx, true);
            Trainer::new(&config, weights, settings, train)
                .map_err(|e| report(e, "cannot start training"))?
        }
        From::Checkpoint(ckpt) => {
            let saved = ckpt.state.settings.clone();
            let mut asked = settings_over(&args, &saved, config.n_ctx, false);
            asked.steps = saved.steps;
            if asked != saved {
                return Err(UsageError(format!(
                    "--resume: a resumed run keeps the settings it was started with (only --steps may change); \
                     the checkpoint has {}",
                    serde_json::to_string(&saved).unwrap_or_default()
                ))
                .into());
            }
            Trainer::resume(*ckpt, args.steps, train).map_err(|e| report(e, "--resume"))?
        }
    };
    let val = match val {
        Some(v) => Some(
            Windows::new(v, trainer.settings().seq_len, "validation")
                .map_err(|e| report(e, "validation"))?,
        ),
        None => None,
    };
    if let Some(n) = args.stop_after {
        if n == 0 {
            return Err(UsageError("--stop-after must be at least 1".into()).into());
        }
    }

    let s = trainer.settings().clone();
    let start_step = trainer.steps_done();
    eprintln!(
        "training {} blocks × {} wide ({:.1}M weights) on {} tokens ({} windows of {}), {} steps of {} tokens{}",
        config.n_layer,
        config.n_embd,
        config.num_parameters() as f64 / 1e6,
        trainer.windows().ids().len(),
        trainer.windows().count(),
        s.seq_len + 1,
        s.steps,
        s.tokens_per_step(),
        if start_step > 0 {
            format!(", resuming after step {start_step}")
        } else {
            String::new()
        }
    );
    let mut log = JsonLog::open(args.log_json.as_deref(), start_step > 0)?;
    catch_ctrl_c();
    let started = Instant::now();
    let mut interrupted = false;
    while !trainer.is_done() {
        let r = trainer.step().map_err(|e| report(e, "training failed"))?;
        let done = trainer.steps_done();
        eprintln!(
            "step {done:>5}/{} | loss {:.4} | lr {:.3e} | norm {:.4}{} | {:.0} ms | {:.0} tok/s",
            s.steps,
            r.loss,
            r.lr,
            r.grad_norm,
            if r.clipped { " (clipped)" } else { "" },
            r.elapsed.as_secs_f64() * 1e3,
            r.tokens_per_s()
        );
        log.line(serde_json::json!({
            "step": r.step, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm,
            "tokens_per_s": r.tokens_per_s(),
        }))?;
        if let (Some(v), true) = (&val, args.eval_every > 0 && done % args.eval_every == 0) {
            let loss = trainer
                .evaluate(v, args.eval_batches)
                .map_err(|e| report(e, "evaluation failed"))?;
            eprintln!("step {done:>5} | validation loss {loss:.4}");
            log.line(serde_json::json!({"step": r.step, "val_loss": loss}))?;
        }
        if args.sample_every > 0 && done % args.sample_every == 0 {
            let text = sample(&trainer, &tokenizer, s.seed ^ done as u64)?;
            eprintln!("step {done:>5} | sample: {}", text.replace('\n', "\n    "));
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            eprintln!("interrupted after step {done}");
            interrupted = true;
            break;
        }
        if args.stop_after.is_some_and(|n| done >= n) {
            eprintln!("stopping after step {done} (--stop-after)");
            break;
        }
        if args.save_every > 0 && done % args.save_every == 0 && !trainer.is_done() {
            trainer
                .save(&args.out, &tokenizer)
                .map_err(|e| report(e, "cannot save the checkpoint"))?;
            eprintln!("step {done:>5} | saved {}", args.out.display());
        }
    }
    trainer
        .save(&args.out, &tokenizer)
        .map_err(|e| report(e, "cannot save the checkpoint"))?;
    eprintln!(
        "saved {} after step {} ({:.1} s{})",
        args.out.display(),
        trainer.steps_done(),
        started.elapsed().as_secs_f64(),
        if interrupted { ", interrupted" } else { "" }
    );
    Ok(())
}
