//! `gpt2 convert` killed (SIGKILL) at seeded random points of its run: the destination is
//! either absent or a complete model that loads, never a half-written directory, and a retry
//! of the same conversion succeeds (or, when the killed run had finished, is refused because
//! the destination exists). A kill while the files are written leaves the hidden temporary
//! directory `.NAME.partial-XXXXXX` beside the destination (nothing runs after a SIGKILL); no
//! loader takes it for a model, it does not block the retry, and the retry removes it (but
//! for one killed in the instant it has no lock file, which goes once a minute old).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use gpt2_model::{Config, Gpt2, LoadOptions};
use gpt2_tests::{gpt2, gpt2_bin, repo_fixture};
use gpt2_weights::Weights;

/// Kills per conversion.
const KILLS: usize = 20;

/// The two conversions run one after the other: their timings must not disturb each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A small deterministic generator (xorshift64*), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn convert_args(from: &Path, to: &Path, dtype: &str) -> Vec<String> {
    [
        "convert",
        "--from",
        &from.display().to_string(),
        "--to",
        &to.display().to_string(),
        "--dtype",
        dtype,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Entries of `dir` (names), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The destination is a complete model: it opens, every tensor reads, and the model loads.
fn assert_complete(dest: &Path, dtype: &str) {
    let w = Weights::open(dest).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
    w.verify()
        .unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
    let opts = if dtype == "q8_0" {
        LoadOptions::q8_0()
    } else {
        LoadOptions::default()
    };
    Gpt2::load(dest, &opts).unwrap_or_else(|e| panic!("loading {}: {e}", dest.display()));
}

#[derive(Default, Debug)]
struct Tally {
    /// Killed while running (died by the signal).
    mid_run: usize,
    /// Of those, killed while its temporary directory existed.
    while_writing: usize,
    /// The run had finished before the kill.
    finished: usize,
    /// Destinations that were complete after a kill.
    complete_after_kill: usize,
    /// Temporary directories a kill left beside the destination.
    leftovers: usize,
    /// Of those, left after the retry (killed without a lock file, too young to remove).
    lockless_left: usize,
}

fn kill_at_random_points(from: &Path, dtype: &str, work: &Path, seed: u64) -> Tally {
    // Uninterrupted runs, to spread the kills over the duration of one (the faster of two:
    // the first also warms the page cache).
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut duration = std::time::Duration::MAX;
    for probe in ["probe1", "probe2"] {
        let probe = work.join(probe);
        std::fs::create_dir_all(&probe).unwrap();
        let start = Instant::now();
        let o = gpt2(
            &convert_args(from, &probe.join("out"), dtype)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        duration = duration.min(start.elapsed());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_complete(&probe.join("out"), dtype);
    }
    eprintln!(
        "{dtype}: an uninterrupted convert takes {:.0} ms",
        duration.as_secs_f64() * 1e3
    );

    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for i in 0..KILLS {
        let parent = work.join(format!("kill{i}"));
        std::fs::create_dir_all(&parent).unwrap();
        let dest = parent.join("out");
        let delay = duration.mul_f64(rng.next_f64());
        let mut child = Command::new(gpt2_bin())
            .args(convert_args(from, &dest, dtype))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gpt2 convert");
        std::thread::sleep(delay);
        let writing = entries(&parent).iter().any(|e| e.contains(".partial-"));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) {
            tally.mid_run += 1;
            if writing {
                tally.while_writing += 1;
            }
        } else {
            assert!(status.success(), "run {i}: {status:?}");
            tally.finished += 1;
        }
        // Only the destination and temporary directories can be there.
        let names = entries(&parent);
        for name in &names {
            assert!(
                name == "out" || name.starts_with(".out.partial-"),
                "run {i} (killed after {delay:?}): unexpected {name} in {names:?}"
            );
        }
        tally.leftovers += names.iter().filter(|n| n.contains(".partial-")).count();
        let retry = gpt2(
            &convert_args(from, &dest, dtype)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        if dest.symlink_metadata().is_ok() && !retry.status.success() {
            // The killed run had completed: the retry is refused, the model is whole.
            assert_eq!(retry.status.code(), Some(2), "run {i}");
            assert!(
                String::from_utf8_lossy(&retry.stderr).contains("already exists"),
                "run {i}: {}",
                String::from_utf8_lossy(&retry.stderr)
            );
            tally.complete_after_kill += 1;
        } else {
            assert!(
                retry.status.success(),
                "run {i} (killed after {delay:?}): the retry failed: {}",
                String::from_utf8_lossy(&retry.stderr)
            );
        }
        assert_complete(&dest, dtype);
        // The retry removed what the killed run left (its lock is free), unless the kill
        // landed in the instant without a lock file (that one goes once a minute old).
        for left in entries(&parent).iter().filter(|n| n.contains(".partial-")) {
            let inside = entries(&parent.join(left));
            assert!(
                !inside.iter().any(|f| f == ".lock"),
                "run {i} (killed after {delay:?}): {left} is left after the retry, holding \
                 {inside:?}"
            );
            tally.lockless_left += 1;
        }
        let _ = std::fs::remove_dir_all(&parent);
    }
    eprintln!("{dtype}: {tally:?}");
    assert_eq!(tally.mid_run + tally.finished, KILLS);
    assert!(
        tally.mid_run >= KILLS / 4,
        "only {} of {KILLS} kills landed while the convert ran",
        tally.mid_run
    );
    tally
}

fn work_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

#[test]
fn killed_convert_to_f16_safetensors() {
    let work = work_dir();
    let tally = kill_at_random_points(&repo_fixture("tiny/hf"), "f16", work.path(), 0x5eed_0001);
    assert!(tally.while_writing > 0, "{tally:?}");
}

#[test]
fn killed_convert_to_gguf_q8_0() {
    let work = work_dir();
    // Q8_0 needs n_embd a multiple of 32: a seeded random model, large enough that the
    // conversion takes a while.
    let from: PathBuf = work.path().join("src");
    let config = Config {
        n_vocab: 50257,
        n_ctx: 64,
        n_embd: 128,
        n_head: 4,
        n_layer: 4,
        layer_norm_epsilon: 1e-5,
    };
    Gpt2::random(&config, 3, &LoadOptions::default())
        .unwrap()
        .save_hf(&from)
        .unwrap();
    let tally = kill_at_random_points(&from, "q8_0", work.path(), 0x5eed_0002);
    assert!(tally.while_writing > 0, "{tally:?}");
}
