//! `logprobs` on both completion endpoints: the wire formats, their invariants, streamed against
//! whole, and the first token's log-probabilities against a log-softmax computed here from the
//! library's own forward pass over the same prompt.

use serde_json::{json, Value};

use crate::common::default_engine;
use crate::server::{sse_events, Server};
use ffnskip::chat::Message;
use ffnskip::generate::Session;
use ffnskip::model::BlockCounts;
use ffnskip::skip::Dense;

const QUESTION: &str = "What is the capital of France?";

/// The logits after `prompt`, from a fresh session, and their log-softmax in f64.
fn first_token_logprobs(prompt: &[u32]) -> Vec<f64> {
    let model = &default_engine().model;
    let mut session = Session::new(model, Some(512)).unwrap();
    let mut logits = Vec::new();
    session.prefill(prompt, &mut Dense, &mut BlockCounts::new(model.config.n_layers), &mut logits).unwrap();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_norm = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| l as f64 - log_norm).collect()
}

/// The ids of the `n` largest values, largest first (lower id first on a tie).
fn top_ids(values: &[f64], n: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..values.len() as u32).collect();
    ids.sort_by(|&a, &b| values[b as usize].total_cmp(&values[a as usize]).then(a.cmp(&b)));
    ids.truncate(n);
    ids
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect()
}

/// The invariants of one chat `logprobs.content` entry of a greedy reply with `top` alternatives.
fn check_greedy_entry(e: &Value, top: usize) {
    let lp = f(&e["logprob"]);
    assert!(lp.is_finite() && lp <= 0.0, "{e}");
    assert_eq!(bytes(&e["bytes"]), e["token"].as_str().unwrap().as_bytes(), "{e}");
    let alts = e["top_logprobs"].as_array().unwrap();
    assert_eq!(alts.len(), top, "{e}");
    let lps: Vec<f64> = alts.iter().map(|a| f(&a["logprob"])).collect();
    assert!(lps.iter().all(|l| l.is_finite() && *l <= 0.0), "{e}");
    assert!(lps.windows(2).all(|w| w[0] >= w[1]), "not sorted: {e}");
    assert!(lps.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-4, "{e}");
    // Greedy decoding takes the most likely token.
    assert_eq!(alts[0]["token"], e["token"], "{e}");
    assert_eq!(alts[0]["bytes"], e["bytes"], "{e}");
    assert_eq!(alts[0]["logprob"], e["logprob"], "{e}");
}

#[test]
fn serve_chat_logprobs() {
    let server = Server::start(&["--api-key", "test-key-1234", "--ctx-size", "512"]);
    let ask = json!({"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8, "temperature": 0,
        "logprobs": true, "top_logprobs": 5});
    let whole = server.post_json("/v1/chat/completions", &ask);
    let choice = &whole["choices"][0];
    assert_eq!(choice["finish_reason"], "length", "{whole}");
    let content = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 8, "one entry per generated token: {whole}");
    content.iter().for_each(|e| check_greedy_entry(e, 5));
    let text: Vec<u8> = content.iter().flat_map(|e| bytes(&e["bytes"])).collect();
    assert_eq!(text, choice["message"]["content"].as_str().unwrap().as_bytes());

    // The first token against the library's own forward pass over the same prompt.
    let engine = default_engine();
    let rendered = engine.chat_template.as_ref().unwrap().render(&[Message::new("user", QUESTION)], true).unwrap();
    let expected = first_token_logprobs(&engine.tokenizer.encode(&rendered).unwrap());
    let first = &content[0];
    for (alt, id) in first["top_logprobs"].as_array().unwrap().iter().zip(top_ids(&expected, 5)) {
        assert_eq!(bytes(&alt["bytes"]), engine.tokenizer.bytes(id), "{first}");
        let (served, ours) = (f(&alt["logprob"]), expected[id as usize]);
        assert!((served - ours).abs() < 1e-4, "token {id}: served {served}, computed {ours}");
    }

    // Streamed: each text chunk carries its token's entry; together they are the whole reply's.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let (status, body) = server.post("/v1/chat/completions", &streamed);
    assert_eq!(status, 200, "{body}");
    let mut entries = Vec::new();
    for event in sse_events(&body) {
        let choice = &event["choices"][0];
        if let Some(content) = choice["logprobs"]["content"].as_array() {
            assert!(choice["delta"]["content"].is_string(), "logprobs outside a text chunk: {event}");
            entries.extend(content.iter().cloned());
        }
    }
    assert_eq!(Value::from(entries), choice["logprobs"]["content"]);

    // Without top_logprobs the alternatives are empty; without logprobs there are none.
    let mut plain = ask.clone();
    plain.as_object_mut().unwrap().remove("top_logprobs");
    let reply = server.post_json("/v1/chat/completions", &plain);
    let content = reply["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(content.iter().all(|e| e["top_logprobs"] == json!([])), "{reply}");
    assert_eq!(content[0]["logprob"], first["logprob"]);
    plain.as_object_mut().unwrap().remove("logprobs");
    assert_eq!(server.post_json("/v1/chat/completions", &plain)["choices"][0]["logprobs"], Value::Null);
}

#[test]
fn serve_sampled_logprobs_are_of_the_model_not_the_sampler() {
    let server = Server::start(&["--api-key", "test-key-1234", "--ctx-size", "512"]);
    let ask = json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 24,
        "temperature": 1.5, "top_p": 0.5, "seed": 3, "logprobs": true, "top_logprobs": 20});
    let reply = server.post_json("/v1/chat/completions", &ask);
    for e in reply["choices"][0]["logprobs"]["content"].as_array().unwrap() {
        let alts = e["top_logprobs"].as_array().unwrap();
        assert_eq!(alts.len(), 20);
        let lp = f(&e["logprob"]);
        assert!(lp <= f(&alts[0]["logprob"]), "{e}");
        // The logprob is of the full distribution: where the token is among the top 20, the
        // two agree exactly (temperature and top-p would have changed it).
        if let Some(same) = alts.iter().find(|a| a["bytes"] == e["bytes"]) {
            assert_eq!(same["logprob"], e["logprob"], "{e}");
        }
        assert!(alts.iter().map(|a| f(&a["logprob"]).exp()).sum::<f64>() <= 1.0 + 1e-4, "{e}");
    }
}

#[test]
fn serve_completion_logprobs_in_the_legacy_format() {
    let server = Server::start(&["--api-key", "test-key-1234", "--ctx-size", "512"]);
    let prompt = "The capital of France is";
    let ask = json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 3});
    let whole = server.post_json("/v1/completions", &ask);
    let choice = &whole["choices"][0];
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tokens.len(), 8, "{whole}");
    assert_eq!(tokens.concat(), choice["text"].as_str().unwrap());
    let mut offset = 0;
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(lp["text_offset"][i], offset, "{lp}");
        offset += token.chars().count();
        let chosen = f(&lp["token_logprobs"][i]);
        assert!(chosen.is_finite() && chosen <= 0.0, "{lp}");
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 3, "{lp}");
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top.values().map(f).fold(f64::NEG_INFINITY, f64::max), chosen, "{lp}");
        assert_eq!(f(&top[*token]), chosen, "{lp}");
    }
    let engine = default_engine();
    let expected = first_token_logprobs(&engine.tokenizer.encode(prompt).unwrap());
    let best = top_ids(&expected, 1)[0];
    assert_eq!(tokens[0].as_bytes(), engine.tokenizer.bytes(best));
    assert!((f(&lp["token_logprobs"][0]) - expected[best as usize]).abs() < 1e-4, "{lp}");

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let (status, body) = server.post("/v1/completions", &streamed);
    assert_eq!(status, 200, "{body}");
    let mut joined = json!({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []});
    for event in sse_events(&body) {
        let part = &event["choices"][0]["logprobs"];
        if part.is_null() {
            continue;
        }
        for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
            let items = part[key].as_array().unwrap().clone();
            joined[key].as_array_mut().unwrap().extend(items);
        }
    }
    assert_eq!(&joined, lp);
}

#[test]
fn serve_rejects_bad_logprobs_requests() {
    let server = Server::start(&["--api-key", "test-key-1234", "--ctx-size", "64"]);
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        ("/v1/chat/completions", chat(json!({"logprobs": true, "top_logprobs": 21})), "top_logprobs must be in [0, 20]"),
        ("/v1/chat/completions", chat(json!({"top_logprobs": 2})), "top_logprobs needs logprobs: true"),
        ("/v1/chat/completions", chat(json!({"logprobs": false, "top_logprobs": 0})), "top_logprobs needs logprobs: true"),
        ("/v1/chat/completions", chat(json!({"logprobs": true, "top_logprobs": -1})), "invalid request body"),
        ("/v1/chat/completions", chat(json!({"logprobs": "yes"})), "invalid request body"),
        (
            "/v1/chat/completions",
            chat(json!({"logprobs": true, "ffnskip": {"policy": "speculate:ngram"}})),
            "not available with speculative decoding",
        ),
        ("/v1/completions", json!({"prompt": "Hi", "logprobs": 21}), "logprobs must be in [0, 20]"),
        ("/v1/completions", json!({"prompt": "Hi", "logprobs": true}), "invalid request body"),
    ];
    for (path, body, message) in cases {
        let (status, text) = server.post(path, &body);
        assert_eq!(status, 400, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(message), "{body}: {text}");
    }
}
