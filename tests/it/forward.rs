//! The forward pass on a tiny random f32 model: decoding token by token through the KV cache
//! gives the same logits as one full forward over the sequence.

use ffnskip::model::{BlockCounts, GgufFile, KvPrecision, Llama, Step};
use ffnskip::skip::Dense;

use crate::common::tiny_model_file;
use crate::tiny_model::{TinyModel, N_LAYERS};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn kv_cache_decode_matches_full_forward() {
    let (_dir, path) = tiny_model_file(TinyModel::default());
    let model = Llama::load(&GgufFile::open(&path).unwrap()).unwrap();
    let vocab = model.config.vocab_size;
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % vocab as u32).collect();
    let mut counts = BlockCounts::new(N_LAYERS);

    let mut cache = model.new_cache_with(32, KvPrecision::F32);
    let full = Step { all_logits: true, ..Step::prefill(&tokens, 0) };
    let all = model.forward(full, &mut cache, &mut Dense, &mut counts).unwrap();
    assert_eq!(all.len(), tokens.len() * vocab);

    // Prefill a prefix, then decode the rest one token at a time.
    let mut cache = model.new_cache_with(32, KvPrecision::F32);
    let prefix = 5;
    let step = Step::prefill(&tokens[..prefix], 0);
    let last = model.forward(step, &mut cache, &mut Dense, &mut counts).unwrap();
    let mut worst = max_abs_diff(&last, &all[(prefix - 1) * vocab..prefix * vocab]);
    for (i, t) in tokens.iter().enumerate().skip(prefix) {
        let step = Step::decode(t, i);
        let logits = model.forward(step, &mut cache, &mut Dense, &mut counts).unwrap();
        worst = worst.max(max_abs_diff(&logits, &all[i * vocab..(i + 1) * vocab]));
    }
    assert!(worst <= 1e-4, "max abs diff {worst}");
    // The logits are not trivially equal: positions differ from each other.
    assert!(max_abs_diff(&all[..vocab], &all[vocab..2 * vocab]) > 1e-3);
}

#[test]
fn context_overflow_is_an_error_not_a_panic() {
    let (_dir, path) = tiny_model_file(TinyModel::default());
    let model = Llama::load(&GgufFile::open(&path).unwrap()).unwrap();
    let mut cache = model.new_cache(4);
    let mut counts = BlockCounts::new(N_LAYERS);
    let step = Step::prefill(&[1, 2, 3, 4, 5], 0);
    let err = model.forward(step, &mut cache, &mut Dense, &mut counts).unwrap_err();
    assert!(err.to_string().contains("do not fit in the context"), "{err}");
}
