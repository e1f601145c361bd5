//! Dense greedy decoding against llama.cpp's completions on the default model
//! (`../shared/reference/smollm2-135m-q4_1-greedy.jsonl`).
//!
//! Two engines that quantise activations to 8 bits inside every product agree only if they
//! round alike: a one-ulp difference can flip an 8-bit rounding and, layers later, a near-tied
//! token. ffnskip reproduces ggml's arithmetic (`src/kernels`, `src/model/numerics.rs`), so
//! the completions must match, up to the occasional near-tie the issue allows for.

use ffnskip::generate::{generate, GenerateOptions, Session};
use ffnskip::model::{BlockCounts, Step};
use ffnskip::sampling::argmax;
use ffnskip::skip::{Dense, Phase};

use crate::common::default_engine;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/smollm2-135m-q4_1-greedy.jsonl");
/// The largest logit gap accepted where our top-1 differs from the reference: teacher forcing
/// runs the whole text as one batch, whose attention rounds in ggml's matrix-kernel order, not
/// in the one-row order of the reference's decode steps.
const NEAR_TIE: f32 = 0.75;

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    n_predict: usize,
    greedy_completion: String,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(REFERENCE).expect("reference file in ../shared");
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// llama-simple ends its output with one newline of its own.
fn completion(case: &Case) -> &str {
    case.greedy_completion.strip_suffix('\n').unwrap_or(&case.greedy_completion)
}

#[test]
fn teacher_forced_top1_agrees_with_llama_cpp_up_to_near_ties() {
    let engine = default_engine();
    let vocab = engine.model.config.vocab_size;
    let (mut agree, mut total) = (0, 0);
    for case in cases() {
        let prompt = engine.tokenizer.encode(&case.prompt).unwrap();
        // Re-tokenising text cut off mid-word can split the last word differently from the
        // tokens llama.cpp generated, so the comparison stops before the last word.
        let text = completion(&case);
        let whole_words = &text[..text.rfind([' ', '\n']).unwrap_or(text.len())];
        let reference = engine.tokenizer.encode(whole_words).unwrap();
        let all: Vec<u32> = prompt.iter().chain(&reference).copied().collect();
        let mut cache = engine.model.new_cache(all.len());
        let mut counts = BlockCounts::new(engine.model.config.n_layers);
        let step = Step { tokens: &all, pos: 0, phase: Phase::Prefill, all_logits: true };
        let logits = engine.model.forward(step, &mut cache, &mut Dense, &mut counts).unwrap();
        for (j, &want) in reference.iter().enumerate() {
            let row = &logits[(prompt.len() - 1 + j) * vocab..][..vocab];
            let ours = argmax(row);
            total += 1;
            if ours == want {
                agree += 1;
                continue;
            }
            let gap = row[ours as usize] - row[want as usize];
            assert!(
                gap <= NEAR_TIE,
                "{:?} position {j}: llama.cpp's {:?} is {gap:.3} below our {:?}",
                case.prompt,
                engine.tokenizer.id_to_token(want),
                engine.tokenizer.id_to_token(ours)
            );
        }
    }
    let share = agree as f64 / total as f64;
    println!("teacher-forced top-1 agreement with llama.cpp: {agree}/{total} ({:.1}%)", 100.0 * share);
    assert!(share >= 0.95, "top-1 agreement {share:.3}");
}

#[test]
fn free_running_greedy_completions_against_llama_cpp() {
    let engine = default_engine();
    let (mut exact, mut first8) = (0, 0);
    let cases = cases();
    for case in &cases {
        let want = completion(case);
        let prompt = engine.tokenizer.encode(&case.prompt).unwrap();
        let mut session = Session::new(&engine.model, Some(1024)).unwrap();
        let opts = GenerateOptions { max_tokens: case.n_predict, ..Default::default() };
        let gen = generate(&mut session, &engine.tokenizer, &prompt, &opts, &mut Dense, &mut |_| {}).unwrap();
        exact += usize::from(gen.text == want);
        let head = engine.tokenizer.decode(&gen.tokens[..gen.tokens.len().min(8)]);
        first8 += usize::from(want.starts_with(&head));
        if gen.text != want {
            println!("DIFFERS: {:?}\n  ours: {:?}\n  ref:  {:?}", case.prompt, gen.text, want);
        }
    }
    println!("{exact}/{} exact, {first8}/{} agree on the first 8 tokens", cases.len(), cases.len());
    assert!(exact >= 14, "only {exact} of {} completions match llama.cpp's exactly", cases.len());
    assert_eq!(first8, cases.len(), "every completion must match on its first 8 tokens");
}
