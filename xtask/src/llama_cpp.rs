//! `cargo xtask llama-cpp`: builds llama.cpp's `llama-bench` and `llama-quantize` on this
//! machine, from the llama.cpp tree vendored in one pinned release of PyPI's
//! `llama-cpp-python`, so that `cargo xtask bench --llama-bench` compares against the same
//! llama.cpp on whatever CPU the machine has.
//!
//! Steps, each skipped when its output is already there:
//! 1. download the sdist (its address from PyPI's simple index) into `DIR`, checking its
//!    SHA-256 against the pin below;
//! 2. unpack it (`tar`);
//! 3. find `cmake` on `PATH`, or install the pinned `cmake` and `ninja` wheels from PyPI into
//!    `DIR/venv` (`python3 -m venv`);
//! 4. configure with `-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON` (the kernels this CPU
//!    runs, as a user building llama.cpp here would get them) and build the two tools.
//!
//! Nothing from llama.cpp is committed; it stays under `target/`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// The pinned `llama-cpp-python` release (llama.cpp 0.5.0-dev, ggml 0.25.3 vendored).
const VERSION: &str = "0.3.36";
/// SHA-256 of its sdist, `llama_cpp_python-0.3.36.tar.gz`.
const SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
/// The build tools installed from PyPI when `cmake` is not on `PATH`.
const BUILD_TOOLS: [&str; 2] = ["cmake==4.4.5", "ninja==1.13.2"];

/// Arguments of `cargo xtask llama-cpp`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the sdist, the source tree and the build go.
    #[arg(long, default_value = "target/llama-cpp", value_name = "DIR")]
    pub dir: PathBuf,
    /// Parallel compile jobs (default: every CPU).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// PyPI's simple index (where the sdist's address is looked up).
    #[arg(long, default_value = "https://pypi.org/simple", value_name = "URL")]
    pub index: String,
    /// Configure and build again even when the tools are there.
    #[arg(long)]
    pub rebuild: bool,
}

/// Runs the task and prints the path of `llama-bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let bin = args.dir.join("build").join("bin");
    let bench = bin.join("llama-bench");
    if bench.is_file() && bin.join("llama-quantize").is_file() && !args.rebuild {
        println!("{}", bench.display());
        return Ok(());
    }
    let sdist = fetch_sdist(&args.dir, &args.index)?;
    let src = unpack(&args.dir, &sdist)?;
    let (cmake, generator) = build_tools(&args.dir)?;
    let build = args.dir.join("build");
    let mut configure = Command::new(&cmake);
    configure
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(&build)
        .args([
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=ON",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=OFF",
        ])
        .args(&generator);
    run_command(&mut configure, "configuring llama.cpp")?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut make = Command::new(&cmake);
    make.arg("--build")
        .arg(&build)
        .args(["--target", "llama-bench", "llama-quantize", "-j"])
        .arg(jobs.to_string());
    run_command(&mut make, "building llama-bench and llama-quantize")?;
    if !bench.is_file() {
        bail!("the build finished but {} is not there", bench.display());
    }
    println!("{}", bench.display());
    Ok(())
}

/// The sdist in `dir`, downloaded and checked when it is not there yet.
fn fetch_sdist(dir: &Path, index: &str) -> anyhow::Result<PathBuf> {
    let name = format!("llama_cpp_python-{VERSION}.tar.gz");
    let path = dir.join(&name);
    if path.is_file() && sha256_of(&path)? == SHA256 {
        return Ok(path);
    }
    let page_url = format!("{}/llama-cpp-python/", index.trim_end_matches('/'));
    let page = ureq::get(&page_url)
        .call()
        .with_context(|| format!("reading {page_url}"))?
        .into_string()
        .with_context(|| format!("reading {page_url}"))?;
    let url = sdist_url(&page, &name).with_context(|| format!("{page_url} lists no {name}"))?;
    eprintln!("downloading {url}");
    let mut body = ureq::get(&url)
        .call()
        .with_context(|| format!("downloading {url}"))?
        .into_reader();
    // A temporary file of our own in the destination's folder, renamed into place once the
    // digest matches: an interrupted download leaves nothing under the final name.
    let mut tmp = tempfile::Builder::new()
        .prefix(".llama-cpp-python-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body
            .read(&mut buf)
            .with_context(|| format!("downloading {url}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(tmp.as_file_mut(), &buf[..n])
            .with_context(|| format!("writing {}", tmp.path().display()))?;
    }
    let got = hex(&hasher.finalize());
    if got != SHA256 {
        bail!("{url} has SHA-256 {got}, expected {SHA256}");
    }
    tmp.persist(&path)
        .with_context(|| format!("renaming the download to {}", path.display()))?;
    Ok(path)
}

/// The address of `name` in a PEP 503 simple-index page (`<a href="URL#sha256=…">`), without
/// its fragment.
fn sdist_url(page: &str, name: &str) -> Option<String> {
    page.split("href=\"").skip(1).find_map(|rest| {
        let href = rest.split('"').next()?;
        let url = href.split('#').next()?;
        url.rsplit('/')
            .next()
            .is_some_and(|file| file == name)
            .then(|| url.replace("&amp;", "&"))
    })
}

/// The vendored llama.cpp tree, unpacked from `sdist` into `dir` when it is not there yet.
fn unpack(dir: &Path, sdist: &Path) -> anyhow::Result<PathBuf> {
    let src = dir
        .join(format!("llama_cpp_python-{VERSION}"))
        .join("vendor")
        .join("llama.cpp");
    if src.join("CMakeLists.txt").is_file() {
        return Ok(src);
    }
    let mut tar = Command::new("tar");
    tar.arg("-xzf").arg(sdist).arg("-C").arg(dir);
    run_command(&mut tar, "unpacking the sdist")?;
    if !src.join("CMakeLists.txt").is_file() {
        bail!("{} has no vendor/llama.cpp tree", sdist.display());
    }
    Ok(src)
}

/// `cmake`, and the generator arguments: the one on `PATH` with its default generator, else
/// the pinned PyPI wheels in `dir/venv` with their Ninja.
fn build_tools(dir: &Path) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let on_path = Command::new("cmake")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Ok((PathBuf::from("cmake"), Vec::new()));
    }
    let venv = dir.join("venv");
    let bin = venv.join("bin");
    let (cmake, ninja) = (bin.join("cmake"), bin.join("ninja"));
    if !(cmake.is_file() && ninja.is_file()) {
        eprintln!(
            "cmake is not on PATH: installing {} into {}",
            BUILD_TOOLS.join(" "),
            venv.display()
        );
        let mut mkvenv = Command::new("python3");
        mkvenv.args(["-m", "venv"]).arg(&venv);
        run_command(
            &mut mkvenv,
            "creating a Python venv for cmake (python3 -m venv)",
        )?;
        let mut pip = Command::new(bin.join("pip"));
        pip.args(["install", "--quiet", "--only-binary", ":all:"])
            .args(BUILD_TOOLS);
        run_command(&mut pip, "installing cmake and ninja from PyPI")?;
    }
    let ninja = std::path::absolute(&ninja).unwrap_or(ninja);
    Ok((
        cmake,
        vec![
            "-G".into(),
            "Ninja".into(),
            format!("-DCMAKE_MAKE_PROGRAM={}", ninja.display()),
        ],
    ))
}

fn run_command(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what}: {:?} failed ({status})", cmd.get_program());
    }
    Ok(())
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdist_address_is_read_from_a_simple_index_page() {
        let page = r#"<html><body>
<a href="https://files.example/p/llama_cpp_python-0.3.35.tar.gz#sha256=00">llama_cpp_python-0.3.35.tar.gz</a>
<a href="https://files.example/q/llama_cpp_python-0.3.36.tar.gz#sha256=11" data-requires-python="&gt;=3.8">llama_cpp_python-0.3.36.tar.gz</a>
<a href="https://files.example/r/llama_cpp_python-0.3.36-cp311-linux_x86_64.whl#sha256=22">wheel</a>
</body></html>"#;
        assert_eq!(
            sdist_url(page, "llama_cpp_python-0.3.36.tar.gz").as_deref(),
            Some("https://files.example/q/llama_cpp_python-0.3.36.tar.gz")
        );
        assert_eq!(sdist_url(page, "llama_cpp_python-0.3.99.tar.gz"), None);
    }
}
