//! Skip policies on the default model: realised ratios, and attention in every layer always.

use ffnskip::generate::{generate, Decoder, GenerateOptions, Generation, Session, SkipStats};
use ffnskip::skip::{Calibration, PolicySpec};

use crate::common::default_engine;

const PROMPT: &str = "<|im_start|>user\nWrite a long, detailed story about a dragon who learns to bake bread.<|im_end|>\n<|im_start|>assistant\n";

fn run(spec: &str, max_tokens: usize, calibration: Option<&Calibration>) -> (Generation, SkipStats) {
    let engine = default_engine();
    let spec: PolicySpec = spec.parse().unwrap();
    let mut decoder = Decoder::Stepwise(spec.build(engine.model.config.n_layers, calibration).unwrap());
    let prompt = engine.tokenizer.encode(PROMPT).unwrap();
    let mut session = Session::new(&engine.model, Some(1024)).unwrap();
    let opts = GenerateOptions { max_tokens, ..Default::default() };
    let gen = generate(&mut session, &engine.tokenizer, &prompt, &opts, &mut decoder, &mut |_| {}).unwrap();
    let stats = SkipStats::of(&gen, &engine.model);
    (gen, stats)
}

#[test]
fn ffnskip_realises_its_target_ratio_after_warmup() {
    let (gen, stats) = run("ffnskip@0.25", 256, None);
    assert!(stats.decoded_tokens_post_warmup >= 50, "too short a generation: {}", gen.decode_steps);
    let r = stats.ffn_skip_ratio_post_warmup;
    println!("ffnskip@0.25: post-warm-up ratio {r:.3} over {} tokens, all {:.3}", stats.decoded_tokens_post_warmup, stats.ffn_skip_ratio);
    assert!((r - 0.25).abs() <= 0.05, "realised post-warm-up ratio {r}");
    assert!(stats.ffn_skip_ratio < r, "warm-up tokens are dense, so the overall ratio is lower");
    // Cold regions (5 layers each side on 30 layers) are never skipped.
    let per_layer = &stats.ffn_skipped_per_layer;
    assert!(per_layer[..5].iter().chain(&per_layer[25..]).all(|&s| s == 0), "{per_layer:?}");
}

#[test]
fn attention_runs_in_every_layer_for_every_token_under_ffn_policies() {
    let calibration = Calibration { mean_ffn_cosine: (0..30).map(|l| l as f32 / 30.0).collect(), mean_layer_cosine: vec![0.9; 30], ..Default::default() };
    for spec in ["dense", "ffnskip@0.3:warmup=4", "random@0.3:warmup=4:seed=2", "no-adaptive@0.3:warmup=4", "fixed-start@0.3:warmup=4", "static@0.2:warmup=4"] {
        let (gen, stats) = run(spec, 40, Some(&calibration));
        let steps = gen.decode_steps as u64;
        assert!(steps > 10, "{spec}: {steps} steps");
        assert!(stats.attention_runs_per_layer.iter().all(|&a| a == steps), "{spec}: {:?}", stats.attention_runs_per_layer);
        assert!(gen.decode_counts.kv_writes.iter().all(|&w| w == steps), "{spec}");
        let skipped: u64 = stats.ffn_skipped_per_layer.iter().sum();
        assert_eq!(skipped == 0, spec == "dense", "{spec}: {skipped} FFNs skipped");
    }
}

#[test]
fn layer_policies_skip_attention_too_and_fill_the_cache() {
    let calibration = Calibration { mean_ffn_cosine: vec![0.9; 30], mean_layer_cosine: (0..30).map(|l| l as f32 / 30.0).collect(), ..Default::default() };
    let (gen, stats) = run("layer-drop@0.1", 24, Some(&calibration));
    let steps = gen.decode_steps as u64;
    // The three most saturated window layers (22, 23, 24) are gone for every step.
    for l in 22..25 {
        assert_eq!(stats.attention_runs_per_layer[l], 0);
        assert_eq!(stats.ffn_skipped_per_layer[l], steps);
    }
    let (gen, stats) = run("layer-early-exit@0.15:warmup=2:tau=0.5", 40, None);
    let skipped_layers: u64 = stats.ffn_skipped_per_layer.iter().sum();
    let attention_skipped: u64 = stats.attention_runs_per_layer.iter().map(|&a| gen.decode_steps as u64 - a).sum();
    assert!(skipped_layers > 0 && attention_skipped == skipped_layers);
    // Early exit fills the K/V of the layers it skips from the exit state.
    assert!(gen.decode_counts.kv_writes.iter().all(|&w| w == gen.decode_steps as u64));
}

#[test]
fn policies_at_ratio_zero_are_token_identical_to_dense() {
    let (dense, _) = run("dense", 48, None);
    for spec in ["ffnskip@0", "random@0:seed=3", "no-adaptive@0", "layer-early-exit@0"] {
        let (gen, stats) = run(spec, 48, None);
        assert_eq!(gen.tokens, dense.tokens, "{spec}");
        assert_eq!(stats.ffn_skip_ratio, 0.0, "{spec}");
    }
}

/// Each chat turn starts with a prefill, and with it a new warm-up: the policy runs its first
/// decode steps of every turn dense, and the statistics count exactly those steps as warm-up.
#[test]
fn every_turn_starts_a_new_warmup() {
    let engine = default_engine();
    let spec: PolicySpec = "ffnskip@0.25:warmup=8".parse().unwrap();
    let mut decoder = Decoder::Stepwise(spec.build(engine.model.config.n_layers, None).unwrap());
    let mut session = Session::new(&engine.model, Some(1024)).unwrap();
    let opts = GenerateOptions { max_tokens: 40, ..Default::default() };
    let mut history = engine.tokenizer.encode(PROMPT).unwrap();
    for turn in 0..2 {
        let gen = generate(&mut session, &engine.tokenizer, &history, &opts, &mut decoder, &mut |_| {}).unwrap();
        assert!(gen.decode_steps > 20, "turn {turn}: {} steps", gen.decode_steps);
        assert_eq!(gen.post_warmup_steps, gen.decode_steps - 8, "turn {turn}");
        let skipped = |c: &ffnskip::model::BlockCounts, steps: usize| steps as u64 * 30 - c.ffn.iter().sum::<u64>();
        let warmup_skipped = skipped(&gen.decode_counts, gen.decode_steps) - skipped(&gen.post_warmup_counts, gen.post_warmup_steps);
        assert_eq!(warmup_skipped, 0, "turn {turn}: the warm-up steps skipped FFNs");
        assert!(skipped(&gen.post_warmup_counts, gen.post_warmup_steps) > 0, "turn {turn}: nothing skipped after the warm-up");
        history.extend_from_slice(&gen.tokens);
        history.extend(engine.tokenizer.encode("<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n").unwrap());
    }
}
