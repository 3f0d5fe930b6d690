//! Progress reporting on stderr: indicatif bars on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where status messages and per-file progress go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reporter {
    enabled: bool,
    tty: bool,
}

impl Reporter {
    /// `enabled = false` prints nothing at all.
    pub(crate) fn new(enabled: bool) -> Self {
        Reporter {
            enabled,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// One status line.
    pub(crate) fn say(&self, msg: impl std::fmt::Display) {
        if self.enabled {
            eprintln!("{msg}");
        }
    }

    /// Progress of one file; `already` bytes are on disk from an earlier attempt.
    pub(crate) fn file(&self, label: &str) -> FileProgress {
        FileProgress {
            label: label.to_string(),
            enabled: self.enabled,
            tty: self.tty,
            bar: None,
            start: Instant::now(),
            resumed_from: 0,
            position: 0,
            announced: false,
        }
    }
}

/// Progress of one file transfer.
pub(crate) struct FileProgress {
    label: String,
    enabled: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    start: Instant,
    resumed_from: u64,
    position: u64,
    announced: bool,
}

impl FileProgress {
    /// A (re)started transfer: `total` bytes in all when known, `position` of them already on disk.
    pub(crate) fn start(&mut self, total: Option<u64>, position: u64) {
        self.position = position;
        if !self.enabled {
            return;
        }
        if self.tty {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{msg} [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(self.label.clone());
                bar
            });
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(position);
            bar.reset_eta();
        } else if !self.announced {
            let size = total
                .map(|t| format!(" ({})", HumanBytes(t)))
                .unwrap_or_default();
            if position == 0 {
                eprintln!("downloading {}{size}", self.label);
            } else {
                eprintln!("resuming {} at {}{size}", self.label, HumanBytes(position));
            }
        } else if position > 0 {
            eprintln!("resuming {} at {}", self.label, HumanBytes(position));
        }
        if !self.announced {
            self.resumed_from = position;
            self.announced = true;
        }
    }

    /// `n` more bytes arrived.
    pub(crate) fn inc(&mut self, n: u64) {
        self.position += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// The file is complete.
    pub(crate) fn finish(&mut self) {
        if !self.enabled {
            return;
        }
        if let Some(bar) = self.bar.take() {
            bar.finish();
            // indicatif leaves the cursor at the end of the finished bar.
            eprintln!();
        } else {
            let secs = self.start.elapsed().as_secs_f64();
            let fetched = self.position.saturating_sub(self.resumed_from);
            let rate = if secs > 0.0 {
                format!(", {}/s", HumanBytes((fetched as f64 / secs) as u64))
            } else {
                String::new()
            };
            eprintln!(
                "done {}: {} in {secs:.1}s{rate}",
                self.label,
                HumanBytes(self.position)
            );
        }
    }

    /// The transfer stopped with an error (the bar is left where it was).
    pub(crate) fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
            eprintln!();
        }
    }
}

/// hf-hub drives the same progress display through its own trait.
impl hf_hub::api::Progress for FileProgress {
    fn init(&mut self, size: usize, _filename: &str) {
        self.start(Some(size as u64), 0);
    }

    fn update(&mut self, size: usize) {
        self.inc(size as u64);
    }

    fn finish(&mut self) {
        FileProgress::finish(self);
    }
}
