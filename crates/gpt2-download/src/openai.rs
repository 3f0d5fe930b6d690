//! OpenAI's release: seven files per size, converted to the Hugging Face layout.

use std::fs;
use std::path::Path;

use gpt2_weights::{Dtype, Weights};

use crate::error::DownloadError;
use crate::fsutil::{self, check_checksum};
use crate::http::Http;
use crate::progress::Reporter;
use crate::FetchOptions;

/// The files of one size of OpenAI's release, as `download_model.py` fetches them.
pub const OPENAI_FILES: [&str; 7] = [
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
];

/// sha256 of OpenAI's `encoder.json` (the same file for every size).
pub const ENCODER_JSON_SHA256: &str =
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783";
/// sha256 of OpenAI's `vocab.bpe` (the same file for every size).
pub const VOCAB_BPE_SHA256: &str =
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5";

/// The tokenizer files of an HF-layout directory and the OpenAI file each one equals.
const TOKENIZER_COPIES: [(&str, &str); 2] =
    [("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")];

/// Downloads `name` (`124M`...) into `staging`, verifies it, converts it into `target`
/// (renamed into place only when complete), and keeps or removes the original files.
pub(crate) fn fetch(
    name: &str,
    opts: &FetchOptions,
    target: &Path,
    reporter: &Reporter,
) -> Result<(), DownloadError> {
    let models_dir = &opts.models_dir;
    let staging = fsutil::hidden_sibling(models_dir, name, "download");
    fsutil::create_dir_all(&staging)?;
    let http = Http::new(opts.http_settings());
    let base = opts.openai_base_url.trim_end_matches('/');

    let mut fetched = 0usize;
    for file in OPENAI_FILES {
        let dest = staging.join(file);
        // A complete file from an earlier run (a symlink is not one: the download refuses it).
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let url = format!("{base}/{name}/{file}");
        http.download(&url, &dest, &format!("{name}/{file}"), reporter)?;
        fetched += 1;
    }
    if fetched == 0 {
        reporter.say(format!(
            "{name}: all files already downloaded in {}",
            staging.display()
        ));
    }

    // Known tokenizer files.
    check_checksum(&staging.join("encoder.json"), "sha256", ENCODER_JSON_SHA256)?;
    check_checksum(&staging.join("vocab.bpe"), "sha256", VOCAB_BPE_SHA256)?;

    // The checkpoint: names, shapes and every tensor's crc32c from the index.
    reporter.say(format!(
        "{name}: verifying the checkpoint (crc32c of every tensor)"
    ));
    let verified = Weights::open(&staging).and_then(|w| w.verify());
    if let Err(source) = verified {
        // Whatever is wrong, a new run must fetch the checkpoint again, not trust it.
        for file in OPENAI_FILES.iter().filter(|f| f.starts_with("model.ckpt")) {
            let _ = fs::remove_file(staging.join(file));
        }
        return Err(DownloadError::Weights {
            context: format!(
                "verifying the downloaded checkpoint in {} (its files were removed; run again to re-download)",
                staging.display()
            ),
            source: Box::new(source),
        });
    }

    // Convert into a directory inside `staging`, check it, then rename it into place.
    reporter.say(format!("{name}: converting to safetensors"));
    let converted = staging.join("hf");
    fsutil::remove_dir_if_exists(&converted)?;
    gpt2_weights::convert(&staging, &converted, Dtype::F32).map_err(|source| {
        DownloadError::Weights {
            context: format!("converting {}", staging.display()),
            source: Box::new(source),
        }
    })?;
    for (hf_name, openai_name) in TOKENIZER_COPIES {
        let dest = converted.join(hf_name);
        if !dest.exists() {
            fs::copy(staging.join(openai_name), &dest)
                .map_err(|e| DownloadError::io("copying", &dest, e))?;
        }
    }
    Weights::open(&converted)
        .and_then(|w| w.verify())
        .map_err(|source| DownloadError::Weights {
            context: format!("checking the converted model in {}", converted.display()),
            source: Box::new(source),
        })?;
    fsutil::rename(&converted, target)?;

    if opts.keep_original {
        let original = models_dir.join(format!("{name}-openai"));
        if original.exists() {
            reporter.say(format!(
                "{name}: {} already exists, leaving it as it is",
                original.display()
            ));
            fsutil::remove_dir_if_exists(&staging)?;
        } else {
            fsutil::rename(&staging, &original)?;
            reporter.say(format!(
                "{name}: kept OpenAI's files in {}",
                original.display()
            ));
        }
    } else {
        fsutil::remove_dir_if_exists(&staging)?;
    }
    Ok(())
}
