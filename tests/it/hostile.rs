//! Hostile model files, written by the tests themselves: each one ends the CLI with a single
//! clear error line and a non-zero exit, never a panic, an out-of-bounds read or a huge
//! allocation. Byte-level corruptions are built with a raw GGUF writer (candle's writer only
//! writes valid files); semantic ones edit a tiny model before candle writes it.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::common::{assert_clean_failure, ffnskip, tiny_model_file};
use crate::tiny_model::{Edit, TinyModel};

const F32: u32 = 0;
const Q4_0: u32 = 2;
const STRING: u32 = 8;
const ARRAY: u32 = 9;

fn string(s: &str) -> Vec<u8> {
    [(s.len() as u64).to_le_bytes().as_slice(), s.as_bytes()].concat()
}

fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    [string(key), ty.to_le_bytes().to_vec(), value.to_vec()].concat()
}

fn arch() -> Vec<u8> {
    kv("general.architecture", STRING, &string("llama"))
}

fn tensor(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = string(name);
    b.extend((dims.len() as u32).to_le_bytes());
    dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
    b.extend(ty.to_le_bytes());
    b.extend(offset.to_le_bytes());
    b
}

/// A version-3 GGUF: header, metadata, tensor table, padding to 32 bytes, `data`.
fn gguf(kvs: &[Vec<u8>], tensors: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    kvs.iter().chain(tensors).for_each(|x| b.extend(x));
    b.resize(b.len().div_ceil(32) * 32, 0);
    b.extend(data);
    b
}

fn generate_with(bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.gguf");
    std::fs::write(&path, bytes).unwrap();
    run_generate(&path, &["--prompt", "hi"], needle);
}

fn run_generate(path: &Path, extra: &[&str], needle: &str) {
    let mut args = vec!["generate", "--model", path.to_str().unwrap(), "-n", "2"];
    args.extend(extra);
    assert_clean_failure(&ffnskip(&args), needle);
}

fn tiny_with(edit: Edit, extra: &[&str], needle: &str) {
    let (_dir, path) = tiny_model_file(TinyModel { edit: Some(edit), ..Default::default() });
    run_generate(&path, extra, needle);
}

#[test]
fn tensor_count_claiming_more_than_the_file() {
    let mut b = gguf(&[arch()], &[], &[]);
    b[8..16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    generate_with(&b, "the tensor table");
}

#[test]
fn metadata_count_claiming_more_than_the_file() {
    let mut b = gguf(&[arch()], &[], &[]);
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    generate_with(&b, "the metadata entries");
}

#[test]
fn string_length_past_the_end() {
    let value = [(1u64 << 40).to_le_bytes().as_slice(), b"llama"].concat();
    generate_with(&gguf(&[kv("general.architecture", STRING, &value)], &[], &[]), "bytes claimed but only");
}

#[test]
fn array_length_past_the_end() {
    let value = [4u32.to_le_bytes().as_slice(), &(1u64 << 50).to_le_bytes(), &[0u8; 8]].concat();
    generate_with(&gguf(&[arch(), kv("tokenizer.ggml.token_type", ARRAY, &value)], &[], &[]), "an array");
}

#[test]
fn zero_alignment() {
    let align = kv("general.alignment", 4, &0u32.to_le_bytes());
    generate_with(&gguf(&[arch(), align], &[], &[]), "general.alignment 0 is not a power of two");
}

#[test]
fn duplicate_tensor_names() {
    let t = tensor("output_norm.weight", &[8], F32, 0);
    generate_with(&gguf(&[arch()], &[t.clone(), t], &[0; 32]), "tensor 'output_norm.weight' appears twice");
}

#[test]
fn tensor_shape_whose_element_count_overflows() {
    let t = tensor("token_embd.weight", &[u64::MAX, u64::MAX], F32, 0);
    generate_with(&gguf(&[arch()], &[t], &[0; 32]), "claims more elements than the file could hold");
}

#[test]
fn misaligned_tensor() {
    let t = tensor("output_norm.weight", &[4], F32, 4);
    generate_with(&gguf(&[arch()], &[t], &[0; 32]), "not a multiple of the alignment 32");
}

#[test]
fn overlapping_tensors() {
    let a = tensor("attn_norm.weight", &[16], F32, 0);
    let b = tensor("ffn_norm.weight", &[16], F32, 32);
    let out = gguf(&[arch()], &[a, b], &[0; 96]);
    generate_with(&out, "overlap");
}

#[test]
fn tensor_data_past_the_end_of_the_file() {
    let t = tensor("output_norm.weight", &[16], F32, 0);
    generate_with(&gguf(&[arch()], &[t], &[0; 32]), "needs 64 bytes from");
}

#[test]
fn tensor_of_the_wrong_size_for_its_type() {
    let t = tensor("output_norm.weight", &[7], Q4_0, 0);
    generate_with(&gguf(&[arch()], &[t], &[0; 32]), "has 7 elements, not a multiple of 32");
}

fn replace_tensor(tensors: &mut [(String, QTensor)], name: &str, value: f32) {
    let n = tensors.iter().find(|(k, _)| k == name).unwrap().1.shape().elem_count();
    let mut v = vec![1.0f32; n];
    v[n / 2] = value;
    let t = QTensor::quantize(&Tensor::from_vec(v, n, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap();
    tensors.iter_mut().find(|(k, _)| k == name).unwrap().1 = t;
}

fn set(metadata: &mut [(String, Value)], key: &str, value: Value) {
    metadata.iter_mut().find(|(k, _)| k == key).unwrap().1 = value;
}

#[test]
fn nan_in_a_norm_weight() {
    tiny_with(|_, t| replace_tensor(t, "blk.1.ffn_norm.weight", f32::NAN), &["--prompt", "hi"], "tensor 'blk.1.ffn_norm.weight' holds NaN or infinite values");
}

#[test]
fn infinity_in_the_output_norm() {
    tiny_with(|_, t| replace_tensor(t, "output_norm.weight", f32::INFINITY), &["--prompt", "hi"], "tensor 'output_norm.weight' holds NaN or infinite values");
}

#[test]
fn special_token_id_outside_the_vocabulary() {
    tiny_with(|m, _| set(m, "tokenizer.ggml.eos_token_id", Value::U32(100_000)), &["--prompt", "hi"], "the EOS token id 100000 is outside the vocabulary of 260 tokens");
}

#[test]
fn duplicate_special_token() {
    let edit: Edit = |m, _| {
        let Value::Array(tokens) = &mut m.iter_mut().find(|(k, _)| k == "tokenizer.ggml.tokens").unwrap().1 else {
            panic!("tokens are an array")
        };
        let n = tokens.len();
        tokens[n - 2] = Value::String("<|im_end|>".into());
    };
    tiny_with(edit, &["--prompt", "hi"], "special token '<|im_end|>' appears twice");
}

#[test]
fn chat_template_that_recurses_forever() {
    let edit: Edit = |m, _| {
        let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        set(m, "tokenizer.chat_template", Value::String(src.into()))
    };
    tiny_with(edit, &["--chat", "--prompt", "hi"], "chat template:");
}

#[test]
fn chat_template_that_loops_forever() {
    let edit: Edit = |m, _| {
        let src = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}";
        set(m, "tokenizer.chat_template", Value::String(src.into()))
    };
    tiny_with(edit, &["--chat", "--prompt", "hi"], "out of fuel");
}

#[test]
#[cfg(target_os = "linux")] // the template worker's memory cap (src/sandbox.rs)
fn chat_template_that_builds_gigabytes() {
    let edit: Edit = |m, _| {
        let src = format!("{{% set s = 'x' * 50000000 %}}{}{{{{ s }}}}", "{% set s = s ~ s %}".repeat(16));
        set(m, "tokenizer.chat_template", Value::String(src))
    };
    tiny_with(edit, &["--chat", "--prompt", "hi"], "needed more than 256 MiB of memory");
}

#[test]
fn prompt_longer_than_the_context() {
    let (_dir, path) = tiny_model_file(TinyModel::default());
    let prompt = "the ".repeat(200);
    run_generate(&path, &["--prompt", &prompt], "do not fit in the context of");
}

/// Found by the `gguf` fuzz target (fuzz/artifacts crash-a491fe48…): the key
/// "general.alignment\0\0\0" with the u8 value 0; candle trims the NULs and divided by zero.
#[test]
fn fuzz_crash_alignment_key_with_trailing_nuls() {
    let key = kv("general.alignment\0\0\0", 0, &[0]);
    generate_with(&gguf(&[key, arch()], &[], &[]), "general.alignment 0 is not a power of two");
}
