//! Bad input ends in one clear line and a non-zero exit, never a panic.

use std::io::Write;

use candle_core::quantized::GgmlDType;

use crate::common::{assert_clean_failure, default_model_path, ffnskip, tiny_model_file};
use crate::tiny_model::TinyModel;

#[test]
fn missing_model_file() {
    let out = ffnskip(&["generate", "--model", "/nonexistent/model.gguf", "--prompt", "hi"]);
    assert_clean_failure(&out, "model file not found: /nonexistent/model.gguf");
}

#[test]
fn not_a_gguf_file() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"this is a text file, not a model\n").unwrap();
    let out = ffnskip(&["generate", "--model", f.path().to_str().unwrap(), "--prompt", "hi"]);
    assert_clean_failure(&out, "not a GGUF file");
}

#[test]
fn truncated_gguf_header_and_data() {
    let bytes = std::fs::read(default_model_path()).unwrap();
    for cut in [100, bytes.len() / 2] {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&bytes[..cut]).unwrap();
        let out = ffnskip(&["generate", "--model", f.path().to_str().unwrap(), "--prompt", "hi"]);
        assert_clean_failure(&out, "truncated or corrupt GGUF");
    }
}

#[test]
fn unsupported_architecture() {
    let (_d, path) = tiny_model_file(TinyModel { architecture: "falcon", ..Default::default() });
    let out = ffnskip(&["generate", "--model", path.to_str().unwrap(), "--prompt", "hi"]);
    assert_clean_failure(&out, "unsupported architecture 'falcon'");
}

/// A qwen2 model must carry its Q/K/V biases (the tiny model has none).
#[test]
fn qwen2_model_without_its_biases() {
    let (_d, path) = tiny_model_file(TinyModel { architecture: "qwen2", ..Default::default() });
    let out = ffnskip(&["generate", "--model", path.to_str().unwrap(), "--prompt", "hi"]);
    assert_clean_failure(&out, "blk.0.attn_q.bias");
}

#[test]
fn wrong_tensor_shape() {
    let (_d, path) = tiny_model_file(TinyModel { wrong_ffn_shape: true, ..Default::default() });
    let out = ffnskip(&["generate", "--model", path.to_str().unwrap(), "--prompt", "hi"]);
    assert_clean_failure(&out, "tensor 'blk.0.ffn_up.weight' has shape");
}

/// With its biases, a qwen2 model loads and generates.
#[test]
fn qwen2_model_with_biases_runs() {
    let (_d, path) = tiny_model_file(TinyModel { architecture: "qwen2", qkv_bias: true, ..Default::default() });
    let out = ffnskip(&["generate", "--model", path.to_str().unwrap(), "--prompt", "the", "--max-tokens", "8"]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert!(crate::common::stderr(&out).contains("generated 8 tok"), "{}", crate::common::stderr(&out));
}

#[test]
fn unsupported_quantisation_type() {
    let (_d, path) = tiny_model_file(TinyModel { dtype: GgmlDType::Q8_1, ..Default::default() });
    let out = ffnskip(&["generate", "--model", path.to_str().unwrap(), "--prompt", "hi"]);
    assert_clean_failure(&out, "unsupported quantisation type Q8_1");
}

#[test]
fn prompt_longer_than_context() {
    let out = ffnskip(&["generate", "--ctx-size", "4", "--prompt", "one two three four five six seven"]);
    assert_clean_failure(&out, "do not fit in the context of 4 tokens");
}

#[test]
fn invalid_flag_values() {
    for (args, needle) in [
        (vec!["generate", "--prompt", "hi", "--top-p", "2"], "top-p must be in (0, 1]"),
        (vec!["generate", "--prompt", "hi", "--temperature=-1"], "temperature must be"),
        (vec!["generate", "--prompt", "hi", "--temperature", "warm"], "invalid value 'warm'"),
        (vec!["generate", "--prompt", "hi", "--threads", "0"], "invalid value '0'"),
        (vec!["generate", "--prompt", "hi", "--bogus"], "unexpected argument '--bogus'"),
        (vec!["generate"], "--prompt"),
    ] {
        let out = ffnskip(&args);
        assert_clean_failure(&out, needle);
    }
}

#[test]
fn pip_failure_says_how_to_get_the_model_by_hand() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ffnskip"))
        .args(["generate", "--prompt", "hi"])
        .env("FFNSKIP_HOME", home.path())
        .env("FFNSKIP_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert_clean_failure(&out, "get it by hand");
    // Nothing half-written is left where the model would be.
    assert!(!home.path().join(ffnskip::catalog::KnownModel::default_model().file).exists());
}
