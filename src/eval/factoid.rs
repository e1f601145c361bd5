//! Factoid QA (FreebaseQA): the chat template around `"{question} Answer with a few words."`,
//! greedy, 32 new tokens; correct when the normalised gold answer is in the normalised output.
//! Reports accuracy and retention: of the questions dense gets right, the share still right.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::eval::data::load_factoids;
use crate::eval::metrics::{answer_is_correct, share};
use crate::eval::output::{read_items, ItemCommon, OutputDir};
use crate::eval::{item_common, progress, write_summary, EvalConfig, Tally};

#[derive(Debug, Serialize, Deserialize)]
pub struct FactoidItem {
    #[serde(flatten)]
    pub common: ItemCommon,
    pub question: String,
    pub answer: String,
    pub output: String,
    pub correct: bool,
}

pub struct FactoidOptions {
    pub limit: usize,
    pub max_tokens: usize,
}

pub fn run(cfg: &EvalConfig, data: &Path, opts: &FactoidOptions) -> Result<Vec<Map<String, Value>>> {
    let items: Vec<_> = load_factoids(data)?.into_iter().take(opts.limit).collect();
    let mut out = OutputDir::open(&cfg.out)?;
    cfg.write_meta("factoid", data, json!({ "limit": opts.limit, "max_tokens": opts.max_tokens }))?;
    let bar = progress((cfg.policies.len() * items.len()) as u64, "factoid");
    for (i, item) in items.iter().enumerate() {
        let id = i.to_string();
        let pending = out.pending(&cfg.policies, &id);
        bar.inc((cfg.policies.len() - pending.len()) as u64);
        if pending.is_empty() {
            continue;
        }
        let prompt = cfg.chat_prompt(&format!("{} Answer with a few words.", item.question))?;
        for (spec, gen) in pending.iter().zip(cfg.generate_each(&pending, &prompt, opts.max_tokens, &[])?) {
            let record = FactoidItem {
                common: item_common(spec, &id, &cfg.engine.model, &cfg.decode_run(&gen)),
                question: item.question.clone(),
                answer: item.answer.clone(),
                correct: answer_is_correct(&item.answer, &gen.text),
                output: gen.text,
            };
            out.append(&record)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    summarize(cfg.out.as_path(), &cfg.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

/// Summary rows from `items.jsonl`: accuracy and retention against dense.
pub fn summarize(dir: &Path, policies: &[String]) -> Result<Vec<Map<String, Value>>> {
    let items: Vec<FactoidItem> = read_items(dir)?;
    let dense_right: HashMap<&str, bool> =
        items.iter().filter(|i| i.common.policy == "dense").map(|i| (i.common.item.as_str(), i.correct)).collect();
    let mut rows = Vec::new();
    for policy in policies {
        let mine: Vec<&FactoidItem> = items.iter().filter(|i| &i.common.policy == policy).collect();
        let mut tally = Tally::default();
        mine.iter().for_each(|i| tally.add(&i.common));
        let right = mine.iter().filter(|i| i.correct).count();
        let dense_ok: Vec<&&FactoidItem> =
            mine.iter().filter(|i| dense_right.get(i.common.item.as_str()) == Some(&true)).collect();
        let kept = dense_ok.iter().filter(|i| i.correct).count();
        let mut row = tally.row(policy);
        row.insert("accuracy".into(), json!(share(right, mine.len())));
        row.insert("retention".into(), json!(share(kept, dense_ok.len())));
        row.insert("dense_correct".into(), json!(dense_ok.len()));
        rows.push(row);
    }
    write_summary(dir, &rows)?;
    Ok(rows)
}
