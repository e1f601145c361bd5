//! `ffnskip report`: markdown tables (one per task, policies as rows) from run directories,
//! with the commands and machine recorded. Text below the end-of-generated-part marker of an
//! existing report is kept, so a written discussion survives regeneration.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const END_MARKER: &str = "<!-- end of generated part: write below this line -->";

/// One run directory: its `meta.json` and `summary.json`.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub meta: Value,
    pub rows: Vec<Map<String, Value>>,
}

impl Run {
    pub fn task(&self) -> &str {
        self.meta["task"].as_str().unwrap_or("?")
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

/// `root` itself if it holds a run, else every sub-directory that does, sorted by name. Each
/// run's summary is recomputed from its items, so a run that was interrupted reports what it has.
pub fn load_runs(root: &Path) -> Result<Vec<Run>> {
    let is_run = |p: &Path| p.join("meta.json").exists() && p.join("items.jsonl").exists();
    let mut dirs = vec![root.to_path_buf()];
    if !is_run(root) {
        let entries = std::fs::read_dir(root).map_err(|e| Error::InvalidArgument(format!("{}: {e}", root.display())))?;
        dirs = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_run(p)).collect();
        dirs.sort();
    }
    if dirs.is_empty() {
        return Err(Error::InvalidArgument(format!("no runs (meta.json and items.jsonl) under {}", root.display())));
    }
    dirs.into_iter()
        .map(|dir| {
            let meta = read_json(&dir.join("meta.json"))?;
            let policies: Vec<String> = meta["policies"]
                .as_array()
                .map(|p| p.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let rows = match meta["task"].as_str() {
                Some("factoid") => crate::eval::factoid::summarize(&dir, &policies)?,
                Some("perplexity") => crate::eval::perplexity::summarize(&dir, &policies)?,
                Some("chat") => crate::eval::chat::summarize(&dir, &policies)?,
                Some("code") => crate::eval::code::summarize(&dir, &policies)?,
                other => return Err(Error::InvalidArgument(format!("{}: unknown task {other:?}", dir.display()))),
            };
            Ok(Run { dir, meta, rows })
        })
        .collect()
}

/// The task's quality columns: (key, header, digits).
pub fn task_columns(task: &str) -> &'static [(&'static str, &'static str, usize)] {
    match task {
        "factoid" => &[("accuracy", "accuracy", 3), ("retention", "retention", 3)],
        "perplexity" => &[("ppl", "PPL", 2), ("kl_vs_dense", "KL vs dense", 4), ("top1_agreement", "top-1 agreement", 3)],
        "chat" => &[("rougeL_vs_dense", "ROUGE-L vs dense", 3), ("identical_to_dense", "identical to dense", 3), ("collapse_rate", "collapse rate", 3)],
        "code" => &[("pass_at_1", "pass@1", 3), ("retention", "retention", 3)],
        _ => &[],
    }
}

fn num(row: &Map<String, Value>, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The markdown of one run.
pub fn run_section(run: &Run) -> String {
    let meta = &run.meta;
    let mut s = format!(
        "## {} — `{}`\n\n- command: `{}`\n- machine: {}\n- run directory: `{}`\n\n",
        run.task(),
        meta["data"].as_str().unwrap_or("?"),
        meta["command"].as_str().unwrap_or("?"),
        meta["machine"].as_str().unwrap_or("?"),
        run.dir.display()
    );
    let cols = task_columns(run.task());
    s.push_str("| policy | n | FFN skip (all) | FFN skip (post-warm-up) | decode tok/s | vs dense |");
    cols.iter().for_each(|(_, h, _)| s.push_str(&format!(" {h} |")));
    s.push_str("\n|---|---|---|---|---|---|");
    cols.iter().for_each(|_| s.push_str("---|"));
    s.push('\n');
    // A run whose policies shared forward steps (batched perplexity) has no speeds.
    let speed = |row: &Map<String, Value>| row.get("decode_tok_s").and_then(Value::as_f64);
    let dense_speed = run.rows.iter().find(|r| r["policy"] == "dense").and_then(speed);
    for row in &run.rows {
        let (tok_s, vs_dense) = match (speed(row), dense_speed) {
            (Some(s), Some(d)) => (format!("{s:.1}"), format!("{:.3}×", s / d)),
            (Some(s), None) => (format!("{s:.1}"), "–".to_string()),
            (None, _) => ("–".to_string(), "–".to_string()),
        };
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {tok_s} | {vs_dense} |",
            row["policy"].as_str().unwrap_or("?"),
            row["n"],
            num(row, "ffn_skip_ratio"),
            num(row, "ffn_skip_ratio_post_warmup"),
        ));
        for (key, _, digits) in cols {
            // A metric with nothing to measure (retention when dense solved nothing) is null.
            match row.get(*key).and_then(Value::as_f64) {
                Some(v) => s.push_str(&format!(" {v:.*} |", *digits)),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

/// The whole report; `previous` is the existing file, whose text after [`END_MARKER`] is kept.
pub fn render(runs: &[Run], command: &str, plots: &[String], previous: Option<&str>) -> String {
    let mut s = format!(
        "# Results\n\nGenerated by `{command}` from the runs below; every number comes from a run's \
         `summary.json`. Skip ratios are realised, not targets.\n\n"
    );
    runs.iter().for_each(|r| s.push_str(&run_section(r)));
    for plot in plots {
        s.push_str(&format!("![{plot}]({plot})\n\n"));
    }
    s.push_str(END_MARKER);
    s.push('\n');
    if let Some(rest) = previous.and_then(|p| p.split_once(END_MARKER)).map(|(_, rest)| rest) {
        s.push_str(rest.trim_start_matches('\n'));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run() -> Run {
        let rows = vec![
            json!({"policy": "dense", "n": 2, "ffn_skip_ratio": 0.0, "ffn_skip_ratio_post_warmup": 0.0, "decode_tok_s": 100.0, "accuracy": 0.5, "retention": 1.0}),
            json!({"policy": "ffnskip@0.25", "n": 2, "ffn_skip_ratio": 0.2, "ffn_skip_ratio_post_warmup": 0.25, "decode_tok_s": 120.0, "accuracy": 0.0, "retention": 0.0}),
        ];
        Run {
            dir: "runs/f".into(),
            meta: json!({"task": "factoid", "data": "qa.txt", "command": "ffnskip eval factoid", "machine": "cpu"}),
            rows: rows.into_iter().map(|r| r.as_object().unwrap().clone()).collect(),
        }
    }

    #[test]
    fn table_has_a_row_per_policy_with_speedup() {
        let s = run_section(&run());
        assert!(s.contains("| dense | 2 | 0.000 | 0.000 | 100.0 | 1.000× | 0.500 | 1.000 |"), "{s}");
        assert!(s.contains("| ffnskip@0.25 | 2 | 0.200 | 0.250 | 120.0 | 1.200× | 0.000 | 0.000 |"), "{s}");
    }

    #[test]
    fn rows_without_a_speed_show_none() {
        let mut run = run();
        run.rows.iter_mut().for_each(|r| {
            r.remove("decode_tok_s");
        });
        let s = run_section(&run);
        assert!(s.contains("| dense | 2 | 0.000 | 0.000 | – | – | 0.500 | 1.000 |"), "{s}");
        assert!(!s.contains("NaN"), "{s}");
    }

    #[test]
    fn an_undefined_metric_shows_none() {
        let mut run = run();
        run.rows.iter_mut().for_each(|r| {
            r.insert("retention".into(), Value::Null);
        });
        let s = run_section(&run);
        assert!(s.contains("| ffnskip@0.25 | 2 | 0.200 | 0.250 | 120.0 | 1.200× | 0.000 | – |"), "{s}");
        assert!(!s.contains("NaN"), "{s}");
    }

    #[test]
    fn discussion_below_the_marker_survives() {
        let old = format!("# Results\nold numbers\n{END_MARKER}\n\nOur discussion.\n");
        let new = render(&[run()], "ffnskip report", &[], Some(&old));
        assert!(!new.contains("old numbers"));
        assert!(new.ends_with("Our discussion.\n"), "{new}");
    }
}
