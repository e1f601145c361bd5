//! A tiny random llama model written to a temporary GGUF through candle's GGUF writer, with a
//! byte-level BPE vocabulary and a ChatML template, for tests that need a real file.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ffnskip::tokenizer::byte_level_char;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const DIM: usize = 64;
pub const FFN_DIM: usize = 96;
pub const N_LAYERS: usize = 3;
pub const CONTEXT: u32 = 64;
pub const CHATML: &str = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub struct TinyModel {
    pub architecture: &'static str,
    pub dtype: GgmlDType,
    pub seed: u64,
    /// Write `blk.N.attn_{q,k,v}.bias` (qwen2 needs them).
    pub qkv_bias: bool,
    /// Give `blk.0.ffn_up.weight` 32 rows too many.
    pub wrong_ffn_shape: bool,
    /// Zero `blk.N.ffn_down.weight` of this layer, so its FFN adds exactly nothing.
    pub zero_ffn_down: Option<usize>,
    /// Changes the metadata and tensors just before they are written (hostile variants).
    pub edit: Option<Edit>,
}

pub type Edit = fn(&mut Vec<(String, Value)>, &mut Vec<(String, QTensor)>);

impl Default for TinyModel {
    fn default() -> Self {
        Self {
            architecture: "llama",
            dtype: GgmlDType::F32,
            seed: 1,
            qkv_bias: false,
            wrong_ffn_shape: false,
            zero_ffn_down: None,
            edit: None,
        }
    }
}

/// Byte tokens 0..256, two merged tokens, then the specials.
pub fn vocabulary() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_level_char(b).to_string()).collect();
    tokens.extend(["Ġt", "Ġth"].map(String::from));
    let merges = vec!["Ġ t".to_string(), "Ġt h".to_string()];
    tokens.extend(["<|im_start|>", "<|im_end|>"].map(String::from));
    let mut types = vec![1; tokens.len()];
    let n = types.len();
    types[n - 2] = 3;
    types[n - 1] = 3;
    (tokens, types, merges)
}

impl TinyModel {
    pub fn write(&self, path: &Path) {
        let dev = Device::Cpu;
        let (tokens, types, merges) = vocabulary();
        let vocab = tokens.len();
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut rand = |shape: &[usize], scale: f32| -> QTensor {
            let n = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect();
            let t = Tensor::from_vec(data, shape, &dev).unwrap();
            QTensor::quantize(&t, self.dtype).unwrap()
        };
        let ones = |n: usize| QTensor::quantize(&Tensor::ones(n, candle_core::DType::F32, &dev).unwrap(), GgmlDType::F32).unwrap();
        let mut tensors: Vec<(String, QTensor)> = vec![
            ("token_embd.weight".into(), rand(&[vocab, DIM], 1.0)),
            ("output_norm.weight".into(), ones(DIM)),
        ];
        let (heads, kv_heads, hd) = (4usize, 2usize, DIM / 4);
        for l in 0..N_LAYERS {
            let p = |n: &str| format!("blk.{l}.{n}.weight");
            tensors.push((p("attn_norm"), ones(DIM)));
            tensors.push((p("attn_q"), rand(&[heads * hd, DIM], 0.2)));
            tensors.push((p("attn_k"), rand(&[kv_heads * hd, DIM], 0.2)));
            tensors.push((p("attn_v"), rand(&[kv_heads * hd, DIM], 0.2)));
            tensors.push((p("attn_output"), rand(&[DIM, heads * hd], 0.2)));
            tensors.push((p("ffn_norm"), ones(DIM)));
            tensors.push((p("ffn_gate"), rand(&[FFN_DIM, DIM], 0.2)));
            let up_rows = if self.wrong_ffn_shape && l == 0 { FFN_DIM + 32 } else { FFN_DIM };
            tensors.push((p("ffn_up"), rand(&[up_rows, DIM], 0.2)));
            if self.qkv_bias {
                let bias = |n: &str| format!("blk.{l}.{n}.bias");
                let vector = |n: usize, rand: &mut dyn FnMut(&[usize], f32) -> QTensor| {
                    let t = rand(&[n], 0.5).dequantize(&dev).unwrap();
                    QTensor::quantize(&t, GgmlDType::F32).unwrap()
                };
                tensors.push((bias("attn_q"), vector(heads * hd, &mut rand)));
                tensors.push((bias("attn_k"), vector(kv_heads * hd, &mut rand)));
                tensors.push((bias("attn_v"), vector(kv_heads * hd, &mut rand)));
            }
            // Drawn even when zeroed, so every other weight stays the same as without the zeroing.
            let down = rand(&[DIM, FFN_DIM], 0.2);
            let down = if self.zero_ffn_down == Some(l) {
                let zeros = Tensor::zeros((DIM, FFN_DIM), candle_core::DType::F32, &dev).unwrap();
                QTensor::quantize(&zeros, self.dtype).unwrap()
            } else {
                down
            };
            tensors.push((p("ffn_down"), down));
        }
        let arch = self.architecture;
        let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (format!("{arch}.block_count"), Value::U32(N_LAYERS as u32)),
            (format!("{arch}.embedding_length"), Value::U32(DIM as u32)),
            (format!("{arch}.feed_forward_length"), Value::U32(FFN_DIM as u32)),
            (format!("{arch}.attention.head_count"), Value::U32(heads as u32)),
            (format!("{arch}.attention.head_count_kv"), Value::U32(kv_heads as u32)),
            (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
            (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
            (format!("{arch}.context_length"), Value::U32(CONTEXT)),
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
            ("tokenizer.ggml.tokens".into(), strings(&tokens)),
            ("tokenizer.ggml.token_type".into(), Value::Array(types.iter().map(|&t| Value::I32(t)).collect())),
            ("tokenizer.ggml.merges".into(), strings(&merges)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab as u32 - 1)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
            ("tokenizer.chat_template".into(), Value::String(CHATML.into())),
        ];
        if let Some(edit) = self.edit {
            edit(&mut metadata, &mut tensors);
        }
        let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut file, &md, &ts).unwrap();
    }
}
