//! The batched decode step on the default model: sequences with different prompts, lengths
//! and skip policies, joining and leaving, get bit for bit the logits and exactly the block
//! counts of decoding each alone.

use ffnskip::model::{BlockCounts, Step};
use ffnskip::sampling::argmax;
use ffnskip::generate::{Feed, Session};
use ffnskip::skip::{PolicySpec, SkipPolicy};

use crate::common::default_engine;

const PROMPTS: [&str; 4] = [
    "The capital of France is",
    "<|im_start|>user\nWrite a long, detailed story about a dragon who learns to bake bread.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
];
const POLICIES: [&str; 4] =
    ["dense", "ffnskip@0.25:warmup=2", "layer-early-exit@0.15:warmup=2:tau=0.5", "random@0.3:warmup=2:seed=5"];
const STEPS: usize = 24;

struct Seq<'m> {
    alone: Session<'m>,
    batched: Session<'m>,
    alone_policy: Box<dyn SkipPolicy>,
    batched_policy: Box<dyn SkipPolicy>,
    alone_counts: BlockCounts,
    batched_counts: BlockCounts,
    next: u32,
    /// Decode steps in which it takes part: it joins and leaves the batch at its own times.
    steps: std::ops::Range<usize>,
}

#[test]
fn a_batched_step_equals_each_sequence_decoded_alone() {
    let engine = default_engine();
    let (model, n_layers, vocab) = (&engine.model, engine.model.config.n_layers, engine.model.config.vocab_size);
    let mut logits = Vec::new();
    let mut seqs: Vec<Seq> = PROMPTS
        .iter()
        .zip(POLICIES)
        .enumerate()
        .map(|(i, (prompt, spec))| {
            let spec: PolicySpec = spec.parse().unwrap();
            let prompt = engine.tokenizer.encode(prompt).unwrap();
            let mut alone = Session::new(model, Some(256)).unwrap();
            let mut batched = Session::new(model, Some(256)).unwrap();
            let (mut alone_policy, mut batched_policy) =
                (spec.build(n_layers, None).unwrap(), spec.build(n_layers, None).unwrap());
            let mut counts = BlockCounts::new(n_layers);
            batched.prefill(&prompt, batched_policy.as_mut(), &mut counts, &mut logits).unwrap();
            alone.prefill(&prompt, alone_policy.as_mut(), &mut counts, &mut logits).unwrap();
            let next = argmax(&logits);
            let steps = [0..STEPS, 3..STEPS, 0..STEPS - 5, 7..STEPS - 2][i].clone();
            let (alone_counts, batched_counts) = (BlockCounts::new(n_layers), BlockCounts::new(n_layers));
            Seq { alone, batched, alone_policy, batched_policy, alone_counts, batched_counts, next, steps }
        })
        .collect();
    let mut mixed_plans = false;
    for t in 0..STEPS {
        let mut want = Vec::new();
        for s in seqs.iter_mut().filter(|s| s.steps.contains(&t)) {
            s.alone.decode(s.next, s.alone_policy.as_mut(), &mut s.alone_counts, &mut logits).unwrap();
            want.push(logits.clone());
        }
        let skipped_before: Vec<u64> = seqs.iter().map(|s| s.batched_counts.ffn.iter().sum()).collect();
        let mut rows: Vec<Feed> = seqs
            .iter_mut()
            .filter(|s| s.steps.contains(&t))
            .map(|s| Feed {
                session: &mut s.batched,
                tokens: std::slice::from_ref(&s.next),
                policy: s.batched_policy.as_mut(),
                counts: &mut s.batched_counts,
            })
            .collect();
        Session::feed_batch(model, &mut rows, &mut logits).unwrap();
        drop(rows);
        let batch: Vec<&mut Seq> = seqs.iter_mut().filter(|s| s.steps.contains(&t)).collect();
        let ffn_runs: Vec<u64> = batch
            .iter()
            .zip(skipped_before.iter())
            .map(|(s, before)| s.batched_counts.ffn.iter().sum::<u64>() - before)
            .collect();
        mixed_plans |= ffn_runs.iter().any(|&r| r != ffn_runs[0]);
        for ((s, want), got) in batch.into_iter().zip(&want).zip(logits.chunks_exact(vocab)) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(want) == bits(got), "step {t}, {}: batched logits differ from alone", s.alone_policy.name());
            s.next = argmax(want);
        }
    }
    assert!(mixed_plans, "some step ran the FFN for some rows and not others");
    for s in &seqs {
        assert_eq!(s.alone_counts, s.batched_counts, "{}", s.alone_policy.name());
        assert_eq!(s.alone.tokens(), s.batched.tokens());
    }
    let dense_ffn: u64 = seqs[0].batched_counts.ffn.iter().sum();
    let skipping_ffn: u64 = seqs[1].batched_counts.ffn.iter().sum();
    assert!(skipping_ffn < dense_ffn, "ffnskip skipped some FFN blocks in the batch");
}

#[test]
fn a_multi_row_batch_rounded_step_cannot_share_a_forward() {
    let engine = default_engine();
    let model = &engine.model;
    let n_layers = model.config.n_layers;
    let (mut a, mut b) = (model.new_cache(16), model.new_cache(16));
    let (mut pa, mut pb) = (ffnskip::skip::Dense, ffnskip::skip::Dense);
    let (mut ca, mut cb) = (BlockCounts::new(n_layers), BlockCounts::new(n_layers));
    let mut seqs = [
        ffnskip::model::SeqStep { step: Step::prefill(&[1, 2, 3], 0), cache: &mut a, policy: &mut pa, counts: &mut ca },
        ffnskip::model::SeqStep { step: Step::decode(&4, 0), cache: &mut b, policy: &mut pb, counts: &mut cb },
    ];
    let err = model.forward_batch(&mut seqs, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("round its rows as decode steps"), "{err}");
    let err = model.forward_batch(&mut [], &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("at least one sequence"), "{err}");
}

/// A speculative draft's rows verified in a batch beside other sequences' decode steps get the
/// logits of `Session::verify` alone, bit for bit, and the same tokens in the cache.
#[test]
fn a_verify_feed_in_a_batch_equals_verifying_alone() {
    let engine = default_engine();
    let model = &engine.model;
    let (n_layers, vocab) = (model.config.n_layers, model.config.vocab_size);
    let prompt = engine.tokenizer.encode(PROMPTS[3]).unwrap();
    let other = engine.tokenizer.encode(PROMPTS[0]).unwrap();
    let draft = engine.tokenizer.encode(" named Tom who loved the sea").unwrap();
    let mut counts = BlockCounts::new(n_layers);
    let (mut logits, mut alone_logits) = (Vec::new(), Vec::new());
    let mut prefilled = |p: &[u32]| {
        let mut s = Session::new(model, Some(128)).unwrap();
        s.prefill(p, &mut ffnskip::skip::Dense, &mut counts, &mut logits).unwrap();
        s
    };
    let (mut alone, mut batched, mut neighbour) = (prefilled(&prompt), prefilled(&prompt), prefilled(&other));
    alone.verify(&draft, &mut ffnskip::skip::Dense, &mut BlockCounts::new(n_layers), &mut alone_logits).unwrap();
    let (mut p0, mut p1) = (ffnskip::skip::Dense, ffnskip::skip::Dense);
    let (mut c0, mut c1) = (BlockCounts::new(n_layers), BlockCounts::new(n_layers));
    let next = argmax(&logits);
    let mut feeds = [
        Feed { session: &mut neighbour, tokens: std::slice::from_ref(&next), policy: &mut p0, counts: &mut c0 },
        Feed { session: &mut batched, tokens: &draft, policy: &mut p1, counts: &mut c1 },
    ];
    Session::feed_batch(model, &mut feeds, &mut logits).unwrap();
    assert_eq!(logits.len(), (1 + draft.len()) * vocab, "one row for the decode feed, one per verified token");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&logits[vocab..]) == bits(&alone_logits), "batched verify logits differ from verifying alone");
    assert_eq!(batched.tokens(), alone.tokens());
    assert_eq!(c1.ffn.iter().sum::<u64>(), (draft.len() * n_layers) as u64);
}
