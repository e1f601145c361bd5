//! A prompt prefilled in the server's pieces leaves the same bits as the CLI's whole
//! micro-batches: the logits after it and every layer's keys and values. On SmolLM2 (Q4_1 and
//! Q8_0 products, with the KV padding of 32 of its reference) and on Qwen2.5-Coder-1.5B (Q4_K
//! and Q6_K products, whose kernels round differently from 4 and from 8 rows).

use ffnskip::generate::{pieces, Session, PREFILL_CHUNK};
use ffnskip::model::BlockCounts;
use ffnskip::skip::Dense;
use ffnskip::Engine;

use crate::reference;

type State = (Vec<u32>, Vec<(Vec<f32>, Vec<f32>)>);

/// The logits after `prompt` (as bits) and the cache's keys and values, prefilled in pieces
/// of `piece`.
fn prefill(engine: &Engine, prompt: &[u32], piece: usize) -> State {
    prefill_ranges(engine, prompt, pieces(0, prompt.len(), piece))
}

fn prefill_ranges(engine: &Engine, prompt: &[u32], ranges: impl Iterator<Item = std::ops::Range<usize>>) -> State {
    let model = &engine.model;
    let mut session = Session::new(model, Some(1024)).unwrap();
    let (mut counts, mut logits) = (BlockCounts::new(model.config.n_layers), Vec::new());
    assert_eq!(session.begin_prefill(prompt).unwrap(), 0);
    for range in ranges {
        session.prefill_piece(prompt, range, &mut Dense, &mut counts, &mut logits).unwrap();
    }
    let kv = (0..model.config.n_layers).map(|l| session.kv(l)).collect();
    (logits.iter().map(|l| l.to_bits()).collect(), kv)
}

fn long_prompt(engine: &Engine) -> Vec<u32> {
    let text = (0..40).map(|i| format!("Item {i}: a short line of text about nothing in particular. ")).collect::<String>();
    engine.tokenizer.encode(&text).unwrap()[..PREFILL_CHUNK + 18].to_vec()
}

fn pieces_round_as_micro_batches(engine: &Engine) {
    let prompt = &long_prompt(engine);
    // A full micro-batch and a second one of 18 rows (pieces of 60 leave a 32-row tail in the
    // first; pieces of 8 cut the second into 8 + 10).
    let whole = prefill(engine, prompt, PREFILL_CHUNK);
    for piece in [60, 8] {
        let (logits, kv) = prefill(engine, prompt, piece);
        assert!(logits == whole.0, "logits differ with pieces of {piece}");
        for (l, (a, b)) in kv.iter().zip(&whole.1).enumerate() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&a.0) == bits(&b.0) && bits(&a.1) == bits(&b.1), "layer {l} K/V differ with pieces of {piece}");
        }
    }
}

#[test]
fn prefill_pieces_round_as_micro_batches_smollm2() {
    // Here even a one-row piece happens to leave the bits unchanged: the Qwen test is the one
    // whose rounding depends on the cut.
    pieces_round_as_micro_batches(reference::smollm2());
}

#[test]
fn prefill_pieces_round_as_micro_batches_qwen_k_quants() {
    let engine = reference::qwen();
    pieces_round_as_micro_batches(engine);
    // The control: a cut that leaves a micro-batch's last 2 rows out of its Q4_K groups of 4
    // changes bits, so the comparison above can fail.
    let prompt = &long_prompt(engine);
    let n = PREFILL_CHUNK;
    let cut = prefill_ranges(engine, prompt, [0..n - 2, n - 2..n, n..prompt.len()].into_iter());
    assert!(cut != prefill(engine, prompt, n), "a cut out of the Q4_K groups left every bit unchanged");
}
