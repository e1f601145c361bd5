//! The seam between the model and its skip policies, on tiny F32 models: what a skipped block
//! computes, which hidden states the saturation signals come from, and the K/V that whole-layer
//! skipping writes.

use ffnskip::generate::Session;
use ffnskip::model::BlockCounts;
use ffnskip::skip::{Dense, LayerPlan, Phase, Saturation, SkipPolicy};
use ffnskip::Engine;

use crate::common::tiny_model_file;
use crate::tiny_model::{TinyModel, N_LAYERS};

const PROMPT: [u32; 5] = [72, 101, 108, 108, 111];

fn engine(model: TinyModel) -> Engine {
    let (_dir, path) = tiny_model_file(model);
    Engine::load(&path).unwrap()
}

/// Plans each decode step's layers (and with `prefill_too` the prompt's) from a fixed list,
/// and records every saturation the model reports for decode steps, asking for it after every
/// layer whose FFN runs.
struct Fixed {
    plans: Vec<LayerPlan>,
    prefill_too: bool,
    decoding: bool,
    seen: Vec<(usize, Saturation)>,
}

impl Fixed {
    fn new(plans: Vec<LayerPlan>) -> Self {
        Self { plans, prefill_too: false, decoding: false, seen: Vec::new() }
    }
}

impl SkipPolicy for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    fn begin_step(&mut self, phase: Phase) {
        self.decoding = phase == Phase::Decode;
    }

    fn plan(&mut self, layer: usize) -> LayerPlan {
        if self.decoding || self.prefill_too {
            self.plans[layer]
        } else {
            LayerPlan::Full
        }
    }

    fn wants_saturation(&self, _layer: usize) -> bool {
        self.decoding
    }

    fn observe(&mut self, layer: usize, saturation: Saturation) {
        self.seen.push((layer, saturation));
    }
}

/// Prefills the prompt, then decodes `fed`, all under `policy`; returns the logits of every
/// decode step and the session.
fn decode<'m>(engine: &'m Engine, fed: &[u32], policy: &mut dyn SkipPolicy) -> (Vec<Vec<f32>>, Session<'m>) {
    let mut session = Session::new(&engine.model, Some(32)).unwrap();
    let (mut counts, mut logits) = (BlockCounts::new(N_LAYERS), Vec::new());
    session.prefill(&PROMPT, policy, &mut counts, &mut logits).unwrap();
    let steps = fed
        .iter()
        .map(|&t| {
            session.decode(t, policy, &mut counts, &mut logits).unwrap();
            logits.clone()
        })
        .collect();
    (steps, session)
}

#[test]
fn a_skipped_ffn_equals_that_ffn_with_zeroed_weights() {
    let skipping = engine(TinyModel::default());
    let zeroed = engine(TinyModel { zero_ffn_down: Some(1), ..TinyModel::default() });
    let fed = [116, 104, 101, 32, 99, 97, 116];
    let mut plans = vec![LayerPlan::Full; N_LAYERS];
    plans[1] = LayerPlan::SkipFfn;
    let mut skip_1 = Fixed { prefill_too: true, ..Fixed::new(plans) };
    let (skipped, _) = decode(&skipping, &fed, &mut skip_1);
    let (dense_zeroed, _) = decode(&zeroed, &fed, &mut Dense);
    let (dense, _) = decode(&skipping, &fed, &mut Dense);
    for (step, (a, b)) in skipped.iter().zip(&dense_zeroed).enumerate() {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "step {step}");
    }
    assert_ne!(skipped, dense, "layer 1's FFN changes the output, so skipping it must show");
}

#[test]
fn saturation_is_measured_on_the_layers_own_h_mid_and_h_out() {
    // Layer 1's FFN adds exactly zero, so there h_out = h_mid: norm ratio 0, cosine 1. Every
    // other layer's FFN moves the residual stream.
    let engine = engine(TinyModel { zero_ffn_down: Some(1), ..TinyModel::default() });
    let mut policy = Fixed::new(vec![LayerPlan::Full; N_LAYERS]);
    decode(&engine, &[116, 104], &mut policy);
    assert_eq!(policy.seen.len(), 2 * N_LAYERS, "one report per layer and step");
    for (layer, s) in &policy.seen {
        if *layer == 1 {
            assert_eq!(s.norm_ratio, 0.0, "{s:?}");
            assert!((s.cosine - 1.0).abs() < 1e-6, "{s:?}");
        } else {
            assert!(s.norm_ratio > 0.01 && s.cosine < 0.9999, "layer {layer}: {s:?}");
        }
        // cos(x, h_out) spans attention and FFN, so it differs from cos(h_mid, h_out).
        assert_ne!(s.layer_cosine, s.cosine, "layer {layer}");
    }
}

#[test]
fn a_multi_row_step_measures_its_last_row() {
    // A verifying forward of [a, b, c] reports the saturation of c's row: the same numbers as
    // decoding a, b and then c (the rows round as decode steps, so equality is exact).
    let engine = engine(TinyModel::default());
    let (a, b, c) = (116, 104, 101);
    let mut one_by_one = Fixed::new(vec![LayerPlan::Full; N_LAYERS]);
    decode(&engine, &[a, b, c], &mut one_by_one);
    let mut session = Session::new(&engine.model, Some(32)).unwrap();
    let (mut counts, mut logits) = (BlockCounts::new(N_LAYERS), Vec::new());
    session.prefill(&PROMPT, &mut Dense, &mut counts, &mut logits).unwrap();
    let mut batched = Fixed::new(vec![LayerPlan::Full; N_LAYERS]);
    session.verify(&[a, b, c], &mut batched, &mut counts, &mut logits).unwrap();
    assert_eq!(batched.seen, one_by_one.seen[2 * N_LAYERS..], "the last row's signals");
    assert_ne!(batched.seen, one_by_one.seen[..N_LAYERS], "not the first row's");
}

#[test]
fn whole_layer_skipping_writes_the_kv_of_the_exit_state() {
    // Early exit after layer 0 skips layers 1 and 2 whole, writing their K/V from the hidden
    // state leaving layer 0 (x1). Layer 1's K/V are then dense's (dense computes them from x1
    // too); layer 2's are what layer 2 projects from x1, which is what it computes when
    // layer 1 is dropped and layer 2 runs.
    let engine = engine(TinyModel::default());
    let fed = [116];
    let pos = PROMPT.len();
    let kv_at = |session: &Session, layer: usize| {
        let (k, v) = session.kv(layer);
        let kv_dim = k.len() / session.tokens().len();
        (k[pos * kv_dim..].to_vec(), v[pos * kv_dim..].to_vec())
    };
    let exit = vec![LayerPlan::Full, LayerPlan::SkipLayerCopyKv, LayerPlan::SkipLayerCopyKv];
    let (_, early) = decode(&engine, &fed, &mut Fixed::new(exit));
    let (_, dense) = decode(&engine, &fed, &mut Dense);
    let drop_1 = vec![LayerPlan::Full, LayerPlan::Drop, LayerPlan::Full];
    let (_, dropped) = decode(&engine, &fed, &mut Fixed::new(drop_1));
    assert_eq!(kv_at(&early, 1), kv_at(&dense, 1));
    assert_eq!(kv_at(&early, 2), kv_at(&dropped, 2));
    assert_ne!(kv_at(&early, 2), kv_at(&dense, 2), "x1 is not x2, so the copy differs from dense");
    // The prompt's K/V are untouched by the skipping.
    for layer in 0..N_LAYERS {
        assert_eq!(early.kv(layer).0[..pos * 32], dense.kv(layer).0[..pos * 32], "layer {layer}");
    }
}
