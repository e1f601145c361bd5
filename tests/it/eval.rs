//! Smoke test of the evaluation harness on the default model: each task on a handful of items,
//! the output files' schema, and every summary figure recomputed independently of the harness:
//! from the item lines (accuracy, retention, ROUGE-L, identical outputs) or from the model
//! itself (perplexity).

use std::path::Path;
use std::time::Duration;

use ffnskip::eval::chat::ChatOptions;
use ffnskip::eval::code::CodeOptions;
use ffnskip::eval::code_check::check;
use ffnskip::eval::factoid::FactoidOptions;
use ffnskip::eval::perplexity::PerplexityOptions;
use ffnskip::eval::metrics::{answer_is_correct, log_softmax, rouge_l_f1};
use ffnskip::eval::{self, EvalConfig};
use ffnskip::generate::Session;
use ffnskip::model::BlockCounts;
use ffnskip::skip::Dense;
use serde_json::Value;

use crate::common::default_engine;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");

fn config(out: &Path) -> EvalConfig<'static> {
    let policies = vec!["ffnskip@0.25:warmup=4".parse().unwrap()];
    EvalConfig {
        engine: default_engine(),
        policies: eval::with_dense_first(policies),
        calibration: None,
        out: out.to_path_buf(),
        command: "test".into(),
        side_by_side: false,
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The item lines of one policy, in item order.
fn items(out: &Path, policy: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("items.jsonl")).unwrap();
    let mut items: Vec<Value> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["policy"] == policy).collect();
    items.sort_by_key(|v| v["item"].as_str().unwrap().to_string());
    items
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

/// Every row has the common columns plus the task's, and the items file one line per item and policy.
fn check_schema(out: &Path, task_keys: &[&str], items: usize) {
    let rows = read_json(&out.join("summary.json"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["policy"], "dense");
    assert_eq!(rows[1]["policy"], "ffnskip@0.25:warmup=4");
    for row in rows {
        for key in ["n", "ffn_skip_ratio", "ffn_skip_ratio_post_warmup", "decode_tok_s"].iter().chain(task_keys) {
            assert!(row[key].is_number(), "{key} missing in {row}");
        }
        assert_eq!(row["n"], items);
    }
    assert_eq!(rows[0]["ffn_skip_ratio"], 0.0);
    assert!(rows[1]["ffn_skip_ratio_post_warmup"].as_f64().unwrap() > 0.15);
    let lines = std::fs::read_to_string(out.join("items.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 2 * items);
    assert!(read_json(&out.join("meta.json"))["machine"].is_string());
}

#[test]
fn factoid_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let data = Path::new(DATA).join("freebaseqa/dev.txt");
    let opts = FactoidOptions { limit: 3, max_tokens: 16 };
    let rows = eval::factoid::run(&cfg, &data, &opts).unwrap();
    check_schema(dir.path(), &["accuracy"], 3);
    // Each item's verdict follows from its own answer and output, and the rows from the verdicts.
    let (dense, skip) = (items(dir.path(), "dense"), items(dir.path(), "ffnskip@0.25:warmup=4"));
    for item in dense.iter().chain(&skip) {
        let verdict = answer_is_correct(item["answer"].as_str().unwrap(), item["output"].as_str().unwrap());
        assert_eq!(item["correct"].as_bool().unwrap(), verdict, "{item}");
    }
    let right = |v: &Value| v["correct"].as_bool().unwrap();
    let dense_right = dense.iter().filter(|v| right(v)).count();
    let kept = dense.iter().zip(&skip).filter(|(d, s)| right(d) && right(s)).count();
    assert_eq!(rows[0]["dense_correct"], dense_right);
    assert!(close(rows[1]["accuracy"].as_f64().unwrap(), skip.iter().filter(|v| right(v)).count() as f64 / 3.0));
    // Retention is a share of what dense got right; with nothing to retain it is undefined.
    if dense_right > 0 {
        assert_eq!(rows[0]["retention"], 1.0);
        assert!(close(rows[1]["retention"].as_f64().unwrap(), kept as f64 / dense_right as f64));
    } else {
        assert!(rows.iter().all(|row| row["retention"].is_null()), "{rows:?}");
    }
    // A second run resumes: nothing is redone.
    eval::factoid::run(&cfg, &data, &opts).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap().lines().count(), 6);
}

#[test]
fn perplexity_smoke_matches_a_perplexity_computed_here() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PerplexityOptions { windows: 1, window: 96, prefill: 32 };
    let data = Path::new(DATA).join("text/wikitext2-valid.tokens.txt");
    let rows = eval::perplexity::run(&config(dir.path()), &data, &opts).unwrap();
    check_schema(dir.path(), &["ppl", "kl_vs_dense", "top1_agreement"], 1);

    // Dense perplexity of the first window, computed with the model directly: prefill 32
    // tokens, then score each next token of the window and feed it.
    let engine = default_engine();
    let text = eval::data::load_text(&data).unwrap();
    let window = &engine.tokenizer.encode(&text).unwrap()[..96];
    let mut session = Session::new(&engine.model, Some(96)).unwrap();
    let (mut counts, mut logits) = (BlockCounts::new(engine.model.config.n_layers), Vec::new());
    session.prefill(&window[..32], &mut Dense, &mut counts, &mut logits).unwrap();
    let mut nll = 0.0;
    for (i, &token) in window.iter().enumerate().skip(32) {
        nll -= log_softmax(&logits)[token as usize];
        if i + 1 < window.len() {
            session.decode(token, &mut Dense, &mut counts, &mut logits).unwrap();
        }
    }
    let ppl = (nll / 64.0).exp();
    let dense_ppl = rows[0]["ppl"].as_f64().unwrap();
    assert!((dense_ppl - ppl).abs() <= 1e-6 * ppl, "harness {dense_ppl}, direct {ppl}");
    assert!(ppl > 1.0 && ppl < 200.0, "dense PPL {ppl}");
    // Skipping a quarter of the FFNs moves the distribution on this small model.
    let skip_ppl = rows[1]["ppl"].as_f64().unwrap();
    assert!(rows[1]["kl_vs_dense"].as_f64().unwrap() > 0.0 && skip_ppl != dense_ppl);
    assert!(rows[1]["top1_agreement"].as_f64().unwrap() < 1.0);
}

/// Policies decoding side by side, a row each per forward step, score exactly as each decoding
/// alone: every item's sums and counts are equal to the bit; only the timed run has speeds.
#[test]
fn perplexity_of_policies_decoded_together_equals_each_alone() {
    let specs = ["ffnskip@0.25:warmup=4", "ffnskip@0.1:warmup=4", "random@0.25", "fixed-start@0.25", "layer-early-exit@0.15"];
    let data = Path::new(DATA).join("text/wikitext2-valid.tokens.txt");
    let run = |side_by_side: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.policies = eval::with_dense_first(specs.iter().map(|s| s.parse().unwrap()).collect());
        cfg.side_by_side = side_by_side;
        let opts = PerplexityOptions { windows: 2, window: 80, prefill: 16 };
        let rows = eval::perplexity::run(&cfg, &data, &opts).unwrap();
        (dir, rows)
    };
    let ((alone, alone_rows), (together, together_rows)) = (run(false), run(true));
    for policy in std::iter::once("dense").chain(specs) {
        let (a, t) = (items(alone.path(), policy), items(together.path(), policy));
        assert_eq!(a.len(), 2);
        assert_eq!(t.len(), 2);
        for (a, t) in a.iter().zip(&t) {
            for key in ["item", "tokens", "nll", "kl", "top1_agree", "decode_steps", "post_warmup_steps", "ffn_skipped", "ffn_skipped_post_warmup"] {
                assert_eq!(a[key], t[key], "{policy} {key}");
            }
            assert!(a["decode_secs"].as_f64().unwrap() > 0.0, "{a}");
            assert!(t["decode_secs"].is_null(), "{t}");
        }
    }
    assert_eq!(alone_rows.len(), together_rows.len());
    for (a, t) in alone_rows.iter().zip(&together_rows) {
        assert!(a["decode_tok_s"].as_f64().unwrap() > 0.0);
        assert!(t.get("decode_tok_s").is_none(), "{t:?}");
        assert_eq!(a["ppl"], t["ppl"]);
    }
    // Skipping moved something, so equal rows are not trivially equal.
    assert!(together_rows[1]["kl_vs_dense"].as_f64().unwrap() > 0.0);
    assert_eq!(together_rows[0]["kl_vs_dense"], 0.0);
}

/// Generations side by side, a row each per forward step, give each policy exactly its output
/// alone, stochastic and speculative decoders included (speculation's draft lengths follow its
/// timings, so only its output and steps are compared).
#[test]
fn chat_side_by_side_equals_each_alone() {
    let specs = ["ffnskip@0.25:warmup=4", "random@0.25", "layer-early-exit@0.15", "speculate:ngram", "speculate:ffnskip@0.5:warmup=0"];
    let data = Path::new(DATA).join("mtbench/question.jsonl");
    let run = |side_by_side: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.policies = eval::with_dense_first(specs.iter().map(|s| s.parse().unwrap()).collect());
        cfg.side_by_side = side_by_side;
        let rows = eval::chat::run(&cfg, &data, &ChatOptions { limit: 3, max_tokens: 48 }).unwrap();
        (dir, rows)
    };
    let ((alone, alone_rows), (together, together_rows)) = (run(false), run(true));
    for policy in std::iter::once("dense").chain(specs) {
        let (a, t) = (items(alone.path(), policy), items(together.path(), policy));
        assert_eq!((a.len(), t.len()), (3, 3), "{policy}");
        let keys: &[&str] = if policy.starts_with("speculate:") {
            &["item", "output", "decode_steps"]
        } else {
            &["item", "output", "decode_steps", "post_warmup_steps", "ffn_skipped", "ffn_skipped_post_warmup"]
        };
        for (a, t) in a.iter().zip(&t) {
            keys.iter().for_each(|&key| assert_eq!(a[key], t[key], "{policy} {key}"));
            assert!(a["decode_secs"].as_f64().unwrap() > 0.0, "{a}");
            assert!(t["decode_secs"].is_null(), "{t}");
        }
    }
    for (a, t) in alone_rows.iter().zip(&together_rows) {
        assert!(a["decode_tok_s"].as_f64().unwrap() > 0.0);
        assert!(t.get("decode_tok_s").is_none() && t.get("draft_secs_share").is_none(), "{t:?}");
        assert_eq!(a["rougeL_vs_dense"], t["rougeL_vs_dense"]);
    }
    // The skip policies changed some output, so equal outputs are not all dense's.
    assert!(together_rows.iter().any(|r| r["identical_to_dense"].as_f64().unwrap() < 1.0));
}

#[test]
fn chat_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(DATA).join("mtbench/question.jsonl");
    let rows = eval::chat::run(&config(dir.path()), &data, &ChatOptions { limit: 2, max_tokens: 32 }).unwrap();
    check_schema(dir.path(), &["rougeL_vs_dense", "identical_to_dense", "collapse_rate"], 2);
    // The skip row's similarity figures, recomputed from the outputs in the item lines.
    let (dense, skip) = (items(dir.path(), "dense"), items(dir.path(), "ffnskip@0.25:warmup=4"));
    let pairs: Vec<(&str, &str)> =
        dense.iter().zip(&skip).map(|(d, s)| (d["output"].as_str().unwrap(), s["output"].as_str().unwrap())).collect();
    let rouge = pairs.iter().map(|(d, s)| rouge_l_f1(s, d)).sum::<f64>() / 2.0;
    let identical = pairs.iter().filter(|(d, s)| d == s).count() as f64 / 2.0;
    assert!(close(rows[1]["rougeL_vs_dense"].as_f64().unwrap(), rouge));
    assert!(close(rows[1]["identical_to_dense"].as_f64().unwrap(), identical));
    assert!(rouge < 1.0, "a quarter of the FFNs skipped left both replies unchanged");

    // The report turns the run into a table and two figures.
    let report = dir.path().join("docs/RESULTS.md");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    let out = crate::common::ffnskip(&["report", dir.path().to_str().unwrap(), "--out", report.to_str().unwrap()]);
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains("| ffnskip@0.25:warmup=4 | 2 |"), "{text}");
    for png in ["results-tradeoff.png", "results-speedup.png"] {
        let bytes = std::fs::read(report.parent().unwrap().join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{png}");
    }
}

#[test]
fn code_smoke_verdicts_come_from_running_the_completions() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(DATA).join("humaneval/dev.jsonl");
    let opts = CodeOptions { limit: 2, max_tokens: 48, timeout: Duration::from_secs(10) };
    let rows = eval::code::run(&config(dir.path()), &data, &opts).unwrap();
    assert_eq!(rows.len(), 2);
    let problems = eval::data::load_code_problems(&data).unwrap();
    for (row, policy) in rows.iter().zip(["dense", "ffnskip@0.25:warmup=4"]) {
        assert_eq!(row["policy"], policy);
        let items = items(dir.path(), policy);
        assert_eq!(items.len(), 2);
        let mut passed = 0;
        for (item, problem) in items.iter().zip(&problems) {
            assert_eq!(item["task_id"], problem.task_id.as_str());
            // Run the recorded completion again, here: the same verdict.
            let verdict = check(problem, item["completion"].as_str().unwrap(), Duration::from_secs(10)).unwrap();
            assert_eq!(item["passed"].as_bool().unwrap(), verdict.passed, "{item}");
            passed += usize::from(verdict.passed);
            // The completion is a function body: no new top-level statement survives.
            assert!(eval::code::STOPS.iter().all(|s| !item["completion"].as_str().unwrap().contains(s)), "{item}");
        }
        assert!(close(row["pass_at_1"].as_f64().unwrap(), passed as f64 / 2.0), "{row:?}");
    }
}
