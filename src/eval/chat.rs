//! Chat (MT-Bench first turns): greedy, 256 new tokens. Reports ROUGE-L F1 against the dense
//! output, the share of outputs identical to dense, and the collapse rate (outputs ending in a
//! repeated n-gram loop).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::Result;
use crate::eval::data::load_first_turns;
use crate::eval::metrics::{ends_in_loop, rouge_l_f1};
use crate::eval::output::{read_items, ItemCommon, OutputDir};
use crate::eval::{item_common, progress, write_summary, EvalConfig, Tally};

#[derive(Debug, Serialize, Deserialize)]
pub struct ChatItem {
    #[serde(flatten)]
    pub common: ItemCommon,
    pub question_id: String,
    pub output: String,
    pub collapsed: bool,
}

pub struct ChatOptions {
    pub limit: usize,
    pub max_tokens: usize,
}

pub fn run(cfg: &EvalConfig, data: &Path, opts: &ChatOptions) -> Result<Vec<Map<String, Value>>> {
    let turns: Vec<_> = load_first_turns(data)?.into_iter().take(opts.limit).collect();
    let mut out = OutputDir::open(&cfg.out)?;
    cfg.write_meta("chat", data, json!({ "limit": opts.limit, "max_tokens": opts.max_tokens }))?;
    let total = cfg.policies.len() * turns.len();
    let bar = progress(total as u64, "chat");
    for (id, turn) in &turns {
        let pending = out.pending(&cfg.policies, id);
        bar.inc((cfg.policies.len() - pending.len()) as u64);
        if pending.is_empty() {
            continue;
        }
        let prompt = cfg.chat_prompt(turn)?;
        for (spec, gen) in pending.iter().zip(cfg.generate_each(&pending, &prompt, opts.max_tokens, &[])?) {
            let record = ChatItem {
                common: item_common(spec, id, &cfg.engine.model, &cfg.decode_run(&gen)),
                question_id: id.clone(),
                collapsed: ends_in_loop(&gen.text),
                output: gen.text,
            };
            out.append(&record)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    summarize(&cfg.out, &cfg.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

pub fn summarize(dir: &Path, policies: &[String]) -> Result<Vec<Map<String, Value>>> {
    let items: Vec<ChatItem> = read_items(dir)?;
    let dense: HashMap<&str, &str> = items
        .iter()
        .filter(|i| i.common.policy == "dense")
        .map(|i| (i.common.item.as_str(), i.output.as_str()))
        .collect();
    let mut rows = Vec::new();
    for policy in policies {
        let mine: Vec<&ChatItem> = items.iter().filter(|i| &i.common.policy == policy).collect();
        let mut tally = Tally::default();
        mine.iter().for_each(|i| tally.add(&i.common));
        let paired: Vec<(&str, &str)> =
            mine.iter().filter_map(|i| dense.get(i.common.item.as_str()).map(|d| (i.output.as_str(), *d))).collect();
        let n = paired.len().max(1) as f64;
        let mut row = tally.row(policy);
        row.insert("rougeL_vs_dense".into(), json!(paired.iter().map(|(o, d)| rouge_l_f1(o, d)).sum::<f64>() / n));
        row.insert("identical_to_dense".into(), json!(paired.iter().filter(|(o, d)| o == d).count() as f64 / n));
        row.insert(
            "collapse_rate".into(),
            json!(mine.iter().filter(|i| i.collapsed).count() as f64 / mine.len().max(1) as f64),
        );
        rows.push(row);
    }
    write_summary(dir, &rows)?;
    Ok(rows)
}
