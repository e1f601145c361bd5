//! The report's figures: each task's quality against the realised post-warm-up FFN skip ratio
//! (the paper's trade-off figure), and decode speed-up over dense against the same ratio. Each
//! policy family is one colour; `ffnskip` at several ratios is drawn as a line.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::eval::report::{task_columns, Run};

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PALETTE: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// One point: (realised post-warm-up ratio, value).
type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn family(policy: &str) -> String {
    policy.split(['@', ':']).next().unwrap_or(policy).to_string()
}

fn get(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<f64> {
    row.get(key).and_then(serde_json::Value::as_f64).filter(|v| v.is_finite())
}

/// Points of `metric` per policy family, from one run.
fn series(run: &Run, metric: impl Fn(&serde_json::Map<String, serde_json::Value>) -> Option<f64>) -> Series {
    let mut out = Series::new();
    for row in &run.rows {
        let policy = row["policy"].as_str().unwrap_or("?");
        if let (Some(x), Some(y)) = (get(row, "ffn_skip_ratio_post_warmup"), metric(row)) {
            out.entry(family(policy)).or_default().push((x, y));
        }
    }
    out.values_mut().for_each(|v| v.sort_by(|a, b| a.0.total_cmp(&b.0)));
    out
}

fn draw_err(path: &Path, e: Box<dyn std::error::Error>) -> Error {
    Error::Io(std::io::Error::other(format!("drawing {}: {e}", path.display())))
}

/// The quality number each task is judged by: retention is sharper than accuracy when dense
/// itself answers few questions (DESIGN §5).
fn headline(task: &str) -> &'static str {
    match task {
        "factoid" => "retention",
        "perplexity" => "ppl",
        "chat" => "rougeL_vs_dense",
        "code" => "retention",
        _ => "",
    }
}

/// Quality vs realised ratio, one panel per run (its task's headline metric).
pub fn tradeoff(runs: &[Run], path: &Path) -> Result<()> {
    let panels: Vec<(String, Series)> = runs
        .iter()
        .filter_map(|run| {
            let (key, header, _) = *task_columns(run.task()).iter().find(|c| c.0 == headline(run.task()))?;
            let label = format!("{}: {header}", run.task());
            Some((label, series(run, |row| get(row, key))))
        })
        .collect();
    draw_panels(&panels, "realised FFN skip ratio (post-warm-up)", path).map_err(|e| draw_err(path, e))
}

/// Decode speed-up over dense vs realised ratio, one panel per run.
pub fn speedup(runs: &[Run], path: &Path) -> Result<()> {
    let panels: Vec<(String, Series)> = runs
        .iter()
        .filter_map(|run| {
            let dense = run.rows.iter().find(|r| r["policy"] == "dense").and_then(|r| get(r, "decode_tok_s"))?;
            let label = format!("{}: decode speed-up vs dense", run.task());
            Some((label, series(run, |row| get(row, "decode_tok_s").map(|s| s / dense))))
        })
        .collect();
    draw_panels(&panels, "realised FFN skip ratio (post-warm-up)", path).map_err(|e| draw_err(path, e))
}

fn draw_panels(panels: &[(String, Series)], x_label: &str, path: &Path) -> DrawResult<()> {
    let n = panels.len().max(1);
    let root = BitMapBackend::new(path, (520 * n as u32, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    // One legend for all panels, in a strip above them, so it never hides a point.
    let (legend, root) = root.split_vertically(40);
    let families: Vec<String> = {
        let mut f: Vec<String> = panels.iter().flat_map(|(_, s)| s.keys().cloned()).collect();
        f.sort();
        f.dedup();
        f
    };
    let colour = |fam: &str| PALETTE[families.iter().position(|f| f == fam).unwrap_or(0) % PALETTE.len()];
    for (i, fam) in families.iter().enumerate() {
        let x = 20 + 170 * i as i32;
        legend.draw(&Rectangle::new([(x, 14), (x + 24, 26)], colour(fam).filled()))?;
        legend.draw(&Text::new(fam.clone(), (x + 30, 12), ("sans-serif", 16)))?;
    }
    for ((title, series), area) in panels.iter().zip(root.split_evenly((1, n))) {
        let ys: Vec<f64> = series.values().flatten().map(|p| p.1).collect();
        let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let xmax = series.values().flatten().map(|p| p.0).fold(0.05, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.01..xmax, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for (fam, points) in series {
            let c = colour(fam);
            chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, c.filled())))?;
        }
    }
    root.present()?;
    Ok(())
}
