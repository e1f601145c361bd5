//! Lossless speculation: drafts verified by the full model give exactly the dense tokens, the
//! cache ends up as a dense run leaves it, and speculative sampling keeps the dense
//! distribution.

use ffnskip::generate::{generate, DecodeSpec, Decoder, GenerateOptions, Generation, Session};
use ffnskip::model::{BlockCounts, Llama};
use ffnskip::sampling::{Sampler, SamplingParams};
use ffnskip::skip::Dense;
use ffnskip::speculate::{DraftSpec, Speculator};
use ffnskip::Engine;

use crate::common::tiny_model_file;
use crate::reference::{qwen, smollm2, Reference, QWEN_1_5B, SMOLLM2};
use crate::tiny_model::TinyModel;

/// One draft of each kind: FFN skipping, whole layers skipped (attention included), n-gram
/// lookup, and n-gram lookup with a skip draft where it finds nothing.
const DRAFTS: [&str; 4] = ["ffnskip@0.5", "layer-early-exit@0.5", "ngram", "ngram+ffnskip@0.5"];

/// Drafts of one fixed length. The default controller times the machine to choose lengths, so
/// which drafts run (and whether any is rejected) would depend on the machine's load; a fixed
/// length drafts, accepts and rejects the same tokens on every machine.
const DRAFT_LENGTH: usize = 3;

fn decoder(engine: &Engine, spec: &str) -> Decoder {
    let n_layers = engine.model.config.n_layers;
    match spec.parse::<DecodeSpec>().unwrap() {
        DecodeSpec::Speculate(draft) => {
            Decoder::Speculative(Box::new(Speculator::new(draft, n_layers, None).unwrap().with_fixed_length(DRAFT_LENGTH)))
        }
        policy => policy.build(n_layers, None).unwrap(),
    }
}

fn greedy(engine: &Engine, prompt: &[u32], max_tokens: usize, spec: &str) -> Generation {
    let mut decoder = decoder(engine, spec);
    let mut session = Session::new(&engine.model, Some(prompt.len() + max_tokens + 32)).unwrap();
    let opts = GenerateOptions { max_tokens, ..Default::default() };
    generate(&mut session, &engine.tokenizer, prompt, &opts, &mut decoder, &mut |_| {}).unwrap()
}

/// Every draft kind reproduces dense greedy decoding token for token on `prompts`, and the
/// drafts were not all rejected (so verification did keep drafted tokens).
fn assert_speculation_is_dense(engine: &Engine, prompts: &[Vec<u32>], max_tokens: usize, what: &str) {
    let dense: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(engine, p, max_tokens, "dense").tokens).collect();
    for draft in DRAFTS {
        let (mut drafted, mut accepted) = (0, 0);
        for (prompt, want) in prompts.iter().zip(&dense) {
            let gen = greedy(engine, prompt, max_tokens, &format!("speculate:{draft}"));
            assert_eq!(&gen.tokens, want, "{what}, draft {draft}: speculation changed the output");
            let s = gen.speculation.expect("speculation statistics");
            (drafted, accepted) = (drafted + s.drafted, accepted + s.accepted);
        }
        println!("{what}, draft {draft}: {accepted}/{drafted} drafted tokens accepted");
        assert!(accepted > 0, "{what}, draft {draft}: no draft was ever accepted");
    }
}

fn reference_prompts(reference: &Reference, engine: &Engine) -> (Vec<Vec<u32>>, usize) {
    let cases = reference.cases();
    let prompts = cases.iter().map(|c| engine.tokenizer.encode(&c.prompt).unwrap()).collect();
    (prompts, cases.iter().map(|c| c.n_predict).max().unwrap())
}

#[test]
fn smollm2_speculation_equals_dense_on_the_reference_prompts() {
    let (prompts, n) = reference_prompts(&SMOLLM2, smollm2());
    assert_speculation_is_dense(smollm2(), &prompts, n, "smollm2 reference");
}

#[test]
fn qwen_speculation_equals_dense_on_the_reference_prompts() {
    let (prompts, n) = reference_prompts(&QWEN_1_5B, qwen());
    assert_speculation_is_dense(qwen(), &prompts, n, "qwen reference");
}

/// The first 20 MT-Bench first turns, 256 tokens each, in the chat template.
#[test]
fn smollm2_speculation_equals_dense_on_20_mt_bench_turns() {
    let engine = smollm2();
    let path = format!("{}/../shared/data/mtbench/question.jsonl", env!("CARGO_MANIFEST_DIR"));
    let turns = ffnskip::eval::data::load_first_turns(path.as_ref()).unwrap();
    let template = engine.chat_template.as_ref().unwrap();
    let prompts: Vec<Vec<u32>> = turns[..20]
        .iter()
        .map(|(_, q)| {
            let text = template.render(&[ffnskip::chat::Message::new("user", q)], true).unwrap();
            engine.tokenizer.encode(&text).unwrap()
        })
        .collect();
    assert_speculation_is_dense(engine, &prompts, 256, "smollm2 mt-bench");
}

/// Feeding tokens in one verifying forward gives the bits of feeding them one decode step at
/// a time: every row's logits and every position's K/V, for 1 to 9 rows (across the batch
/// sizes where the peer engine's batched products change their rounding).
fn assert_verify_equals_decode(model: &Llama, prompt: &[u32], fed: &[u32]) {
    let vocab = model.config.vocab_size;
    let n_layers = model.config.n_layers;
    let mut counts = BlockCounts::new(n_layers);
    let mut logits = Vec::new();
    for rows in 1..=fed.len() {
        let mut stepwise = Session::new(model, Some(64)).unwrap();
        stepwise.prefill(prompt, &mut Dense, &mut counts, &mut logits).unwrap();
        let mut want = Vec::new();
        for &t in &fed[..rows] {
            stepwise.decode(t, &mut Dense, &mut counts, &mut logits).unwrap();
            want.extend_from_slice(&logits);
        }
        let mut verified = Session::new(model, Some(64)).unwrap();
        verified.prefill(prompt, &mut Dense, &mut counts, &mut logits).unwrap();
        verified.verify(&fed[..rows], &mut Dense, &mut counts, &mut logits).unwrap();
        assert_eq!(logits.len(), rows * vocab);
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        for r in 0..rows {
            assert!(same(&logits[r * vocab..][..vocab], &want[r * vocab..][..vocab]), "{rows} rows: row {r}'s logits differ");
        }
        for l in 0..n_layers {
            let (a, b) = (stepwise.kv(l), verified.kv(l));
            assert!(same(&a.0, &b.0) && same(&a.1, &b.1), "{rows} rows: layer {l}'s K/V differ");
        }
    }
}

#[test]
fn verifying_rows_equals_decoding_them_on_both_models() {
    for engine in [smollm2(), qwen()] {
        let prompt = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog because").unwrap();
        let fed = engine.tokenizer.encode(" it wanted to see what was on the other side of").unwrap();
        assert!(fed.len() >= 9);
        assert_verify_equals_decode(&engine.model, &prompt, &fed[..9]);
    }
}

#[test]
fn verifying_rows_equals_decoding_them_on_a_tiny_model() {
    let (_dir, path) = tiny_model_file(TinyModel::default());
    let engine = Engine::load(&path).unwrap();
    assert_verify_equals_decode(&engine.model, &[5, 17, 99, 3], &[40, 41, 7, 200, 13, 2, 250, 60, 61]);
}

/// After a generation whose drafts were partly rejected, the cache holds, position for
/// position, exactly what a dense run of the same tokens leaves: rejected drafts' K/V are gone
/// from every position the session holds.
#[test]
fn cache_after_rejections_equals_a_dense_runs() {
    let engine = smollm2();
    let prompt = engine.tokenizer.encode("<|im_start|>user\nName three rivers in Europe and describe each.<|im_end|>\n<|im_start|>assistant\n").unwrap();
    let n_layers = engine.model.config.n_layers;
    let mut decoder = decoder(engine, "speculate:ffnskip@0.5");
    let mut spec_session = Session::new(&engine.model, Some(256)).unwrap();
    let opts = GenerateOptions { max_tokens: 96, ..Default::default() };
    let gen = generate(&mut spec_session, &engine.tokenizer, &prompt, &opts, &mut decoder, &mut |_| {}).unwrap();
    let s = gen.speculation.unwrap();
    assert!(s.accepted < s.drafted && s.accepted > 0, "the run needs both accepted and rejected drafts: {s:?}");

    let mut dense = Session::new(&engine.model, Some(256)).unwrap();
    let (mut counts, mut logits) = (BlockCounts::new(n_layers), Vec::new());
    dense.prefill(&prompt, &mut Dense, &mut counts, &mut logits).unwrap();
    for &t in &spec_session.tokens()[prompt.len()..] {
        dense.decode(t, &mut Dense, &mut counts, &mut logits).unwrap();
    }
    assert_eq!(dense.tokens(), spec_session.tokens());
    for l in 0..n_layers {
        let (a, b) = (dense.kv(l), spec_session.kv(l));
        assert!(a.0.iter().zip(&b.0).all(|(x, y)| x.to_bits() == y.to_bits()), "layer {l} keys");
        assert!(a.1.iter().zip(&b.1).all(|(x, y)| x.to_bits() == y.to_bits()), "layer {l} values");
    }
}

/// Speculative sampling keeps the dense distribution. At a fixed position (the token after a
/// fixed prefix and a fixed fed token), 10 000 seeded cycles with a skip draft that the full
/// model partly rejects emit their first token with frequencies that a chi-square test cannot
/// tell from the dense probabilities (categories under 5 expected counts pooled; the bound is
/// the 0.999 quantile for the degrees of freedom).
#[test]
fn speculative_sampling_keeps_the_dense_next_token_distribution() {
    let (_dir, path) = tiny_model_file(TinyModel { seed: 5, ..TinyModel::default() });
    let engine = Engine::load(&path).unwrap();
    let model = &engine.model;
    let n_layers = model.config.n_layers;
    let params = |seed| SamplingParams { temperature: 0.5, seed, ..Default::default() };
    let (prefix, fed) = (vec![3u32, 70, 71, 72], 40u32);

    // The dense distribution at that position.
    let mut session = Session::new(model, Some(32)).unwrap();
    let (mut counts, mut logits) = (BlockCounts::new(n_layers), Vec::new());
    session.prefill(&prefix, &mut Dense, &mut counts, &mut logits).unwrap();
    session.decode(fed, &mut Dense, &mut counts, &mut logits).unwrap();
    let p = Sampler::new(params(0)).distribution(&mut logits, session.tokens());

    let draft: DraftSpec = "no-adaptive@0.5:cold_start=0:cold_end=0".parse().unwrap();
    let mut speculator = Speculator::new(draft, n_layers, None).unwrap().with_fixed_length(2);
    let trials = 10_000;
    let mut freq = vec![0usize; model.config.vocab_size];
    let mut base = Session::new(model, Some(32)).unwrap();
    base.prefill(&prefix, &mut Dense, &mut counts, &mut logits).unwrap();
    for seed in 0..trials {
        base.rewind(prefix.len());
        let mut sampler = Sampler::new(params(seed as u64 + 1));
        let out = speculator.cycle(&mut base, &mut sampler, fed, &mut counts).unwrap();
        freq[out[0] as usize] += 1;
    }
    let stats = speculator.stats();
    assert!(
        stats.acceptance_rate > 0.05 && stats.acceptance_rate < 0.95,
        "the test needs both accepted and rejected drafts: {stats:?}"
    );
    let (mut chi2, mut pooled_p, mut pooled_n, mut cells) = (0.0, 0.0, 0usize, 0);
    let mut seen = 0;
    for &(t, pt) in &p {
        let expected = trials as f64 * pt as f64;
        seen += freq[t as usize];
        if expected < 5.0 {
            (pooled_p, pooled_n) = (pooled_p + pt as f64, pooled_n + freq[t as usize]);
            continue;
        }
        chi2 += (freq[t as usize] as f64 - expected).powi(2) / expected;
        cells += 1;
    }
    assert_eq!(seen, trials, "a token outside the dense distribution's support was emitted");
    if pooled_p * trials as f64 >= 5.0 {
        let expected = pooled_p * trials as f64;
        chi2 += (pooled_n as f64 - expected).powi(2) / expected;
        cells += 1;
    }
    let dof = cells - 1;
    // Wilson–Hilferty approximation of the chi-square 0.999 quantile.
    let z = 3.09;
    let k = dof as f64;
    let bound = k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3);
    println!("chi2 {chi2:.1} over {dof} dof (bound {bound:.1}); acceptance {:.3}", stats.acceptance_rate);
    assert!(dof >= 3, "too few cells for the test: {dof}");
    assert!(chi2 < bound, "chi2 {chi2:.1} exceeds {bound:.1} ({dof} dof)");
}

/// A speculative generation counts the full model's blocks for every verified row (nothing
/// skipped), and the draft's skipping apart.
#[test]
fn speculation_reports_dense_blocks_and_its_own_draft_statistics() {
    let engine = smollm2();
    let prompt = engine.tokenizer.encode("Once upon a time, in a small village by the sea,").unwrap();
    let gen = greedy(engine, &prompt, 64, "speculate:ngram+ffnskip@0.5");
    let stats = ffnskip::generate::SkipStats::of(&gen, &engine.model);
    assert_eq!(stats.ffn_skip_ratio, 0.0, "every verified row runs every block");
    let s = gen.speculation.unwrap();
    assert_eq!(gen.decode_rows, s.verified_rows);
    assert!(gen.decode_rows >= gen.decode_steps);
    assert!(s.draft_ffn_skip_ratio > 0.3 && s.draft_ffn_skip_ratio < 0.7, "{s:?}");
}
