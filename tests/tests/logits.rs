//! `gpt2 logits` against the committed reference logits (fixtures/tiny, made with
//! Hugging Face transformers).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    gpt2_tests::root().join("fixtures")
}

fn gpt2() -> Command {
    Command::new(gpt2_tests::gpt2_bin())
}

/// (shape, values) of an f32 tensor in a safetensors file.
fn read_f32(path: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).expect("read safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse safetensors");
    let t = st.tensor(name).expect("tensor");
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let values = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), values)
}

fn reference() -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("tiny/reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("json")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn all_positions_from_ids_match_the_reference_in_both_layouts() {
    let r = reference();
    let tmp = tempfile::tempdir().expect("tempdir");
    for layout in ["hf", "openai"] {
        for p in r["prompts"].as_array().expect("prompts") {
            let ids: Vec<String> = p["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.to_string())
                .collect();
            let out = tmp.path().join(format!(
                "{layout}-{}.safetensors",
                p["name"].as_str().unwrap_or("p")
            ));
            let status = gpt2()
                .args(["logits", "--model"])
                .arg(fixtures().join("tiny").join(layout))
                .args(["--ids", &ids.join(","), "--all-positions", "--out"])
                .arg(&out)
                .status()
                .expect("run gpt2");
            assert!(status.success());
            let (shape, got) = read_f32(&out, "logits");
            let (want_shape, want) = read_f32(
                &fixtures().join("tiny/reference.safetensors"),
                p["logits_tensor"].as_str().expect("name"),
            );
            assert_eq!(shape, want_shape);
            let d = max_diff(&got, &want);
            assert!(d <= 1e-4, "{layout} {}: max |diff| {d}", p["name"]);
        }
    }
}

#[test]
fn prompt_text_is_tokenized_and_last_position_is_the_default() {
    let r = reference();
    let p = &r["prompts"][0];
    let text = p["text"].as_str().expect("text");
    assert!(!text.is_empty());
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("last.safetensors");
    let status = gpt2()
        .args(["logits", "--model"])
        .arg(fixtures().join("tiny/hf"))
        .args(["--prompt", text, "--out"])
        .arg(&out)
        .status()
        .expect("run gpt2");
    assert!(status.success());
    let (shape, got) = read_f32(&out, "logits");
    let (want_shape, want) = read_f32(
        &fixtures().join("tiny/reference.safetensors"),
        p["logits_tensor"].as_str().expect("name"),
    );
    let (n, vocab) = (want_shape[0], want_shape[1]);
    assert_eq!(shape, vec![1, vocab]);
    assert!(max_diff(&got, &want[(n - 1) * vocab..]) <= 1e-4);
    // The ids are recorded in the metadata.
    let bytes = std::fs::read(&out).expect("read");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("metadata");
    let ids: Vec<String> = p["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(
        meta.metadata().as_ref().and_then(|m| m.get("ids")),
        Some(&ids.join(","))
    );
}

#[test]
fn bad_input_is_a_usage_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("x.safetensors");
    let model = fixtures().join("tiny/hf");
    let run = |extra: &[String]| {
        gpt2()
            .args(["logits", "--model"])
            .arg(&model)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run gpt2")
    };
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Out-of-vocabulary id, unparsable ids, too long for n_ctx (32), both inputs, neither.
    let long: Vec<String> = (0..33).map(|i| i.to_string()).collect();
    let long = long.join(",");
    for args in [
        strings(&["--ids", "1,50257"]),
        strings(&["--ids", "1,x"]),
        strings(&["--ids", &long]),
        strings(&["--ids", "1", "--prompt", "hi"]),
        vec![],
    ] {
        let o = run(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists());
    }
    let o = run(&strings(&["--ids", "1,50257"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("50257") && err.contains("vocabulary"), "{err}");
    let o = run(&strings(&["--ids", &long]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("32"), "{err}");
}

/// `gpt2 logits --ids 464,3290 --out OUT` with the tiny model.
fn logits_to(out: &std::path::Path) -> std::process::Output {
    gpt2()
        .args(["logits", "--model"])
        .arg(fixtures().join("tiny/hf"))
        .args(["--ids", "464,3290", "--out"])
        .arg(out)
        .output()
        .expect("run gpt2")
}

/// The names in `dir`, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(unix)]
#[test]
fn a_symlink_planted_at_a_predictable_temporary_name_is_not_followed() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().expect("tempdir");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious").expect("write victim");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    // The old writer used `.{name}.partial-{pid}`: plant links for the next pids.
    let last_pid: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1);
    let planted = |pid: u32| out_dir.join(format!(".x.safetensors.partial-{pid}"));
    for pid in last_pid + 1..last_pid + 2000 {
        symlink(&victim, planted(pid)).expect("plant symlink");
    }
    let out = out_dir.join("x.safetensors");
    let o = logits_to(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
    for pid in last_pid + 1..last_pid + 2000 {
        let meta = std::fs::symlink_metadata(planted(pid)).expect("planted link");
        assert!(meta.file_type().is_symlink());
    }
    assert_eq!(read_f32(&out, "logits").0.len(), 2);
    // Nothing else was left behind: the links, and the output.
    assert_eq!(names_in(&out_dir).len(), 1999 + 1);
}

#[cfg(unix)]
#[test]
fn out_must_be_a_regular_file_or_new() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let target = dir.join("target");
    std::fs::write(&target, "keep").expect("write");
    let link = dir.join("link.safetensors");
    symlink(&target, &link).expect("symlink");
    let dangling = dir.join("dangling.safetensors");
    symlink(dir.join("nowhere"), &dangling).expect("symlink");
    let fifo = dir.join("fifo.safetensors");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let subdir = dir.join("dir.safetensors");
    std::fs::create_dir(&subdir).expect("mkdir");
    let before = names_in(dir);

    let mut refused = vec![(&link, "symbolic link"), (&dangling, "symbolic link")];
    refused.push((&subdir, "a directory"));
    if made.is_ok_and(|s| s.success()) {
        refused.push((&fifo, "not a regular file"));
    }
    for (out, what) in refused {
        let o = logits_to(out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", out.display());
        assert!(err.contains("--out") && err.contains(what), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Nothing written, nothing followed, no temporary left.
    assert_eq!(names_in(dir), before);
    assert_eq!(std::fs::read_to_string(&target).expect("target"), "keep");
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert!(!dir.join("nowhere").exists());
    assert!(names_in(&subdir).is_empty());

    // A missing directory is refused too.
    let o = logits_to(&dir.join("no/such/dir/x.safetensors"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

#[cfg(unix)]
#[test]
fn a_regular_out_file_is_replaced_with_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("x.safetensors");
    std::fs::write(&out, "old").expect("write");
    let o = logits_to(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_f32(&out, "logits").0, vec![1, 50257]);
    assert_eq!(names_in(tmp.path()), ["x.safetensors"]);
    // The mode a file created the usual way gets (0666 less the umask), not 0600.
    let usual = tmp.path().join("usual");
    std::fs::File::create(&usual).expect("create");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode();
    assert_eq!(mode(&out) & 0o777, mode(&usual) & 0o777);
}
