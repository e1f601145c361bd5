//! `ffnskip generate` and `ffnskip chat` on the default model, as a user runs them.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{default_model_path, ffnskip, stderr, stdout};

#[test]
fn generate_streams_text_and_writes_stats_json() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let out = ffnskip(&[
        "generate", "--prompt", "The capital of France is", "--max-tokens", "12",
        "--stats-json", stats.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(" Paris."), "{}", stdout(&out));
    assert!(stderr(&out).contains("decode"), "summary on stderr: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(json["prompt_tokens"], 5);
    assert_eq!(json["generated_tokens"], 12);
    assert!(json["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert!(json["decode_tok_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn chat_flag_applies_the_template_and_stops_at_end_of_turn() {
    let out = ffnskip(&["generate", "--chat", "--prompt", "What is the capital of Japan?", "--max-tokens", "64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Tokyo"), "{text}");
    assert!(!text.contains("<|im_end|>") && !text.contains("<|im_start|>"), "{text}");
    assert!(stderr(&out).contains("(Stop)"), "{}", stderr(&out));
}

#[test]
fn same_seed_same_sample_and_stop_strings_cut_output() {
    let run = |seed: &str| {
        let out = ffnskip(&["generate", "--prompt", "Once upon a time", "-n", "24", "--temperature", "1.0", "--seed", seed]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
    let out = ffnskip(&["generate", "--prompt", "The capital of France is", "-n", "40", "--stop", "United"]);
    assert_eq!(stdout(&out), " Paris.\n\nThe \n");
}

#[test]
fn chat_reuses_the_kv_cache_across_turns() {
    let home = default_model_path().parent().unwrap().to_path_buf();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ffnskip"))
        .args(["chat", "--temperature", "0", "-n", "32"])
        .env("FFNSKIP_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello! Who are you?\nWhat is 2+2?\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let reused: Vec<usize> = err
        .lines()
        .filter_map(|l| l.split(" reused from cache").next()?.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(reused.len(), 2, "two turns: {err}");
    assert!(reused[1] > 20, "second turn reuses the first turn's tokens: {err}");
    assert!(!stdout(&out).trim().is_empty());
}
