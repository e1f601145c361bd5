//! Smoke test of the evaluation harness on the default model: each task on a handful of items,
//! the output files' schema, and dense measured against itself.

use std::path::Path;

use ffnskip::eval::chat::ChatOptions;
use ffnskip::eval::factoid::FactoidOptions;
use ffnskip::eval::perplexity::PerplexityOptions;
use ffnskip::eval::{self, EvalConfig};
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
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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
    check_schema(dir.path(), &["accuracy", "retention"], 3);
    // Dense keeps every answer it got right.
    if rows[0]["dense_correct"].as_u64().unwrap() > 0 {
        assert_eq!(rows[0]["retention"], 1.0);
    }
    // A second run resumes: nothing is redone.
    eval::factoid::run(&cfg, &data, &opts).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap().lines().count(), 6);
}

#[test]
fn perplexity_smoke_dense_is_its_own_reference() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PerplexityOptions { windows: 1, window: 96, prefill: 32 };
    let data = Path::new(DATA).join("text/wikitext2-valid.tokens.txt");
    let rows = eval::perplexity::run(&config(dir.path()), &data, &opts).unwrap();
    check_schema(dir.path(), &["ppl", "kl_vs_dense", "top1_agreement"], 1);
    assert_eq!(rows[0]["kl_vs_dense"], 0.0);
    assert_eq!(rows[0]["top1_agreement"], 1.0);
    let (dense_ppl, skip_ppl) = (rows[0]["ppl"].as_f64().unwrap(), rows[1]["ppl"].as_f64().unwrap());
    assert!(dense_ppl > 1.0 && dense_ppl < 200.0, "dense PPL {dense_ppl}");
    assert!(rows[1]["kl_vs_dense"].as_f64().unwrap() > 0.0 && skip_ppl != dense_ppl);
}

#[test]
fn chat_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(DATA).join("mtbench/question.jsonl");
    let rows = eval::chat::run(&config(dir.path()), &data, &ChatOptions { limit: 2, max_tokens: 32 }).unwrap();
    check_schema(dir.path(), &["rougeL_vs_dense", "identical_to_dense", "collapse_rate"], 2);
    assert_eq!(rows[0]["rougeL_vs_dense"], 1.0);
    assert_eq!(rows[0]["identical_to_dense"], 1.0);

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
