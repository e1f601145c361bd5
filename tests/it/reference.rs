//! Dense greedy decoding reproduces llama.cpp's completions on the default model
//! (`../shared/reference/smollm2-135m-q4_1-greedy.jsonl`).

use ffnskip::generate::{generate, GenerateOptions, Session};
use ffnskip::skip::Dense;

use crate::common::default_engine;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/smollm2-135m-q4_1-greedy.jsonl");

#[derive(serde::Deserialize)]
struct Case {
    kind: String,
    prompt: String,
    n_predict: usize,
    greedy_completion: String,
}

#[test]
fn greedy_matches_llama_cpp_reference() {
    let engine = default_engine();
    let text = std::fs::read_to_string(REFERENCE).expect("reference file in ../shared");
    let cases: Vec<Case> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cases.len(), 16);
    let mut exact = 0;
    let mut early_divergence = Vec::new();
    for case in &cases {
        // llama-simple ends its output with one newline of its own.
        let want = case.greedy_completion.strip_suffix('\n').unwrap_or(&case.greedy_completion);
        let prompt = engine.tokenizer.encode(&case.prompt).unwrap();
        let mut session = Session::new(&engine.model, Some(1024)).unwrap();
        let opts = GenerateOptions { max_tokens: case.n_predict, ..Default::default() };
        let gen = generate(&mut session, &engine.tokenizer, &prompt, &opts, &mut Dense, &mut |_| {}).unwrap();
        if gen.text == want {
            exact += 1;
            continue;
        }
        println!("DIFFERS ({}): {:?}\n  ours: {:?}\n  ref:  {:?}", case.kind, case.prompt, gen.text, want);
        let first8 = engine.tokenizer.decode(&gen.tokens[..gen.tokens.len().min(8)]);
        if !want.starts_with(&first8) {
            early_divergence.push(case.prompt.clone());
        }
    }
    println!("{exact}/16 completions match llama.cpp exactly");
    assert!(early_divergence.is_empty(), "diverged within 8 tokens: {early_divergence:?}");
    assert!(exact >= 14, "only {exact}/16 match exactly");
}
