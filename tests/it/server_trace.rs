//! The `ffnskip.trace` extension of `ffnskip serve`: which blocks computed each generated
//! token, streamed and whole. The trace is checked against the block counts the model kept
//! (the response's skip ratio), against the policy's cold layers, and streamed against whole.

use serde_json::{json, Value};

use crate::server::{sse_events, Server};

const N_LAYERS: usize = 30;

fn request(spec: &str, stream: bool) -> Value {
    json!({
        "prompt": "The history of the printing press begins",
        "max_tokens": 40, "temperature": 0, "stream": stream,
        "stream_options": {"include_usage": true},
        "ffnskip": {"policy": spec, "trace": true},
    })
}

fn letters(tokens: &[Value]) -> Vec<String> {
    tokens.iter().map(|t| t["layers"].as_str().unwrap().to_string()).collect()
}

#[test]
fn trace_reports_each_tokens_blocks_as_the_model_counted_them() {
    let server = Server::start(&[]);
    for spec in ["dense", "ffnskip@0.25:warmup=4", "layer-early-exit@0.25:warmup=4"] {
        let whole = server.post_json("/v1/completions", &request(spec, false));
        let trace = &whole["ffnskip"];
        assert_eq!(trace["policy"], spec);
        assert_eq!(trace["n_layers"], N_LAYERS);
        let tokens = trace["tokens"].as_array().unwrap();
        assert_eq!(whole["choices"][0]["finish_reason"], "length", "{spec}: the test needs every token decoded");
        assert_eq!(tokens.len() as u64, whole["usage"]["completion_tokens"].as_u64().unwrap(), "{spec}");
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(t["index"], i, "{spec}");
            assert_eq!(t["source"], if i == 0 { "prefill" } else { "decode" }, "{spec}");
        }
        let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
        assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap(), "{spec}: the tokens' texts make the reply");

        // The decode steps produced tokens 1.. (the last token is never fed back), so the
        // trace's skipped blocks over those tokens are the skip ratio the model counted.
        let layers = letters(tokens);
        assert!(layers.iter().all(|l| l.len() == N_LAYERS && l.chars().all(|c| "Fskd".contains(c))), "{spec}: {layers:?}");
        let skipped: usize = layers[1..].iter().map(|l| l.chars().filter(|&c| c != 'F').count()).sum();
        let ratio = skipped as f64 / ((tokens.len() - 1) * N_LAYERS) as f64;
        let counted = whole["usage"]["ffnskip"]["ffn_skip_ratio"].as_f64().unwrap();
        assert!((ratio - counted).abs() < 1e-9, "{spec}: trace {ratio} vs counts {counted}");
        let warm: Vec<bool> = tokens[1..].iter().map(|t| t["warmup"].as_bool().unwrap()).collect();
        for (l, w) in layers[1..].iter().zip(&warm) {
            assert!(!w || !l.contains(['s', 'k', 'd']), "{spec}: a warm-up step skipped: {l}");
        }
        let cold: Vec<usize> = trace["cold_layers"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
        for l in &layers {
            assert!(cold.iter().all(|&c| l.as_bytes()[c] == b'F'), "{spec}: a cold layer was skipped: {l}");
        }
        if spec == "dense" {
            assert!(cold.is_empty() && skipped == 0, "dense: {cold:?}, {skipped} skipped");
            assert!(warm.iter().all(|w| !w), "dense has no warm-up");
        } else {
            assert_eq!(cold.len(), 10, "{spec}: ceil(0.15 · 30) cold layers at each end");
            assert!(skipped > 0, "{spec} skipped nothing");
            assert_eq!(warm.iter().filter(|&&w| w).count(), 4, "{spec}: warmup=4");
        }
        let letter = if spec.starts_with("layer-") { 'k' } else { 's' };
        assert!(skipped == 0 || layers.iter().any(|l| l.contains(letter)), "{spec}: expected '{letter}' cells");

        // Streamed: a header chunk, then each token's trace after its text; the same trace.
        let (status, body) = server.post("/v1/completions", &request(spec, true));
        assert_eq!(status, 200, "{body}");
        let events = sse_events(&body);
        assert_eq!(events[0]["ffnskip"]["n_layers"], N_LAYERS, "{spec}: the header comes first");
        assert_eq!(events[0]["ffnskip"]["cold_layers"], trace["cold_layers"], "{spec}");
        let streamed: Vec<Value> = events.iter().filter_map(|e| e["ffnskip"].get("token").cloned()).collect();
        assert_eq!(streamed, *tokens, "{spec}: streamed and whole traces agree");
    }
    // Speculation's tokens all come from the full model, whatever the draft skipped.
    let whole = server.post_json("/v1/completions", &request("speculate:ngram+ffnskip@0.5:warmup=0", false));
    let tokens = whole["ffnskip"]["tokens"].as_array().unwrap();
    assert_eq!(tokens.len() as u64, whole["usage"]["completion_tokens"].as_u64().unwrap());
    assert!(whole["ffnskip"]["cold_layers"].as_array().unwrap().is_empty());
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t["source"], if i == 0 { "prefill" } else { "speculative" }, "{t}");
        assert_eq!(t["layers"].as_str().unwrap(), "F".repeat(N_LAYERS), "{t}");
    }
    // Without the flag, no trace.
    let plain = server.post_json("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert!(plain.get("ffnskip").is_none(), "{plain}");
    let (status, body) = server.post("/v1/completions", &json!({"prompt": "Hi", "ffnskip": {"trace": "yes"}}));
    assert_eq!(status, 400, "a trace flag that is not a boolean: {body}");
}
