//! Code (HumanEval): the model completes each function from its signature and docstring, the
//! completion is run against the problem's tests in a separate, time-limited Python process
//! (`code_check`), and the task reports pass@1 (greedy) and the retention of the problems dense
//! solves.
//!
//! The prompt is the raw function head, not a chat turn: the completion then continues the
//! function body directly, so there is nothing to extract but where the function ends, every
//! model sees the same prompt, and the coder models are trained on exactly this (fill in a
//! function). The body ends at the first line that starts a new top-level statement
//! ([`STOPS`], HumanEval's own stop sequences).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::eval::code_check::check;
use crate::eval::data::load_code_problems;
use crate::eval::metrics::share;
use crate::eval::output::{read_items, ItemCommon, OutputDir};
use crate::eval::{item_common, progress, write_summary, EvalConfig, Tally};

/// Text that ends a function body: a new top-level definition or statement.
pub const STOPS: [&str; 5] = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#"];

#[derive(Debug, Serialize, Deserialize)]
pub struct CodeItem {
    #[serde(flatten)]
    pub common: ItemCommon,
    pub task_id: String,
    pub completion: String,
    pub passed: bool,
    /// Why it failed (`timeout`, or the exception Python printed); empty when it passed.
    pub reason: String,
}

pub struct CodeOptions {
    pub limit: usize,
    pub max_tokens: usize,
    /// Wall-clock limit of one check.
    pub timeout: Duration,
}

pub fn run(cfg: &EvalConfig, data: &Path, opts: &CodeOptions) -> Result<Vec<Map<String, Value>>> {
    let problems: Vec<_> = load_code_problems(data)?.into_iter().take(opts.limit).collect();
    let mut out = OutputDir::open(&cfg.out)?;
    let extra = json!({ "limit": opts.limit, "max_tokens": opts.max_tokens, "timeout_s": opts.timeout.as_secs_f64() });
    cfg.write_meta("code", data, extra)?;
    let bar = progress((cfg.policies.len() * problems.len()) as u64, "code");
    for problem in &problems {
        let pending = out.pending(&cfg.policies, &problem.task_id);
        bar.inc((cfg.policies.len() - pending.len()) as u64);
        if pending.is_empty() {
            continue;
        }
        let prompt = cfg.engine.tokenizer.encode(&problem.prompt)?;
        for (spec, gen) in pending.iter().zip(cfg.generate_each(&pending, &prompt, opts.max_tokens, &STOPS)?) {
            let verdict = check(problem, &gen.text, opts.timeout)?;
            let record = CodeItem {
                common: item_common(spec, &problem.task_id, &cfg.engine.model, &cfg.decode_run(&gen)),
                task_id: problem.task_id.clone(),
                completion: gen.text,
                passed: verdict.passed,
                reason: verdict.reason,
            };
            out.append(&record)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    summarize(&cfg.out, &cfg.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

/// Summary rows from `items.jsonl`: pass@1 and the share of dense-passing problems still passed.
pub fn summarize(dir: &Path, policies: &[String]) -> Result<Vec<Map<String, Value>>> {
    let items: Vec<CodeItem> = read_items(dir)?;
    let dense_passed: HashMap<&str, bool> =
        items.iter().filter(|i| i.common.policy == "dense").map(|i| (i.common.item.as_str(), i.passed)).collect();
    let mut rows = Vec::new();
    for policy in policies {
        let mine: Vec<&CodeItem> = items.iter().filter(|i| &i.common.policy == policy).collect();
        let mut tally = Tally::default();
        mine.iter().for_each(|i| tally.add(&i.common));
        let passed = mine.iter().filter(|i| i.passed).count();
        let dense_ok: Vec<&&CodeItem> =
            mine.iter().filter(|i| dense_passed.get(i.common.item.as_str()) == Some(&true)).collect();
        let kept = dense_ok.iter().filter(|i| i.passed).count();
        let mut row = tally.row(policy);
        row.insert("pass_at_1".into(), json!(share(passed, mine.len())));
        row.insert("retention".into(), json!(share(kept, dense_ok.len())));
        row.insert("dense_passed".into(), json!(dense_ok.len()));
        rows.push(row);
    }
    write_summary(dir, &rows)?;
    Ok(rows)
}
