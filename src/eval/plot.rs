//! The report's figures: each task's quality against the realised post-warm-up FFN skip ratio
//! (the paper's trade-off figure), and decode speed-up over dense against the same ratio. Each
//! policy family (a policy without its ratio) is one colour; a family at several ratios is drawn
//! as a line.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::eval::report::{task_columns, Run};

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Twelve distinguishable colours: more than the families of a full run (`scripts/eval-all.sh`
/// has ten, with the relabelled `old-random`), so no two families share one.
const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
];

/// One point: (realised post-warm-up ratio, value).
type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// A policy without its ratio: `ffnskip@0.25:tau=per-layer` is family `ffnskip:tau=per-layer`,
/// so a variant gets its own line rather than zigzagging through the plain policy's.
fn family(policy: &str) -> String {
    match policy.split_once('@') {
        Some((name, rest)) => match rest.split_once(':') {
            Some((_, options)) => format!("{name}:{options}"),
            None => name.to_string(),
        },
        None => policy.to_string(),
    }
}

/// A panel's title: the run's directory (which tells two runs of one task apart) and the metric.
fn panel_title(run: &Run, metric: &str) -> String {
    let name = run.dir.file_name().map_or_else(|| run.task().to_string(), |n| n.to_string_lossy().into_owned());
    format!("{name}: {metric}")
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
            let points = series(run, |row| get(row, key));
            // No points (retention when dense solved nothing): no panel, not an empty frame.
            (!points.is_empty()).then(|| (panel_title(run, header), points))
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
            let label = panel_title(run, "decode speed-up vs dense");
            Some((label, series(run, |row| get(row, "decode_tok_s").map(|s| s / dense))))
        })
        .collect();
    draw_panels(&panels, "realised FFN skip ratio (post-warm-up)", path).map_err(|e| draw_err(path, e))
}

fn draw_panels(panels: &[(String, Series)], x_label: &str, path: &Path) -> DrawResult<()> {
    const LEGEND_ENTRY: (u32, u32) = (220, 28);
    let n = panels.len().max(1);
    let width = 520 * n as u32;
    let families: Vec<String> = {
        let mut f: Vec<String> = panels.iter().flat_map(|(_, s)| s.keys().cloned()).collect();
        f.sort();
        f.dedup();
        f
    };
    // One legend for all panels, in rows above them, so it never hides a point.
    let per_row = ((width - 20) / LEGEND_ENTRY.0).max(1) as usize;
    let legend_rows = families.len().div_ceil(per_row).max(1) as u32;
    let root = BitMapBackend::new(path, (width, 480 + LEGEND_ENTRY.1 * legend_rows)).into_drawing_area();
    root.fill(&WHITE)?;
    let (legend, root) = root.split_vertically(12 + LEGEND_ENTRY.1 * legend_rows);
    let colour = |fam: &str| PALETTE[families.iter().position(|f| f == fam).unwrap_or(0) % PALETTE.len()];
    for (i, fam) in families.iter().enumerate() {
        let x = 20 + (LEGEND_ENTRY.0 * (i % per_row) as u32) as i32;
        let y = 10 + (LEGEND_ENTRY.1 * (i / per_row) as u32) as i32;
        legend.draw(&Rectangle::new([(x, y + 2), (x + 24, y + 14)], colour(fam).filled()))?;
        legend.draw(&Text::new(fam.clone(), (x + 30, y), ("sans-serif", 16)))?;
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

#[cfg(test)]
mod tests {
    use super::family;

    #[test]
    fn a_family_is_the_policy_without_its_ratio() {
        assert_eq!(family("ffnskip@0.25"), "ffnskip");
        assert_eq!(family("ffnskip@0.25:tau=per-layer"), "ffnskip:tau=per-layer");
        assert_eq!(family("layer-drop@0.15"), "layer-drop");
        assert_eq!(family("dense"), "dense");
        assert_ne!(family("ffnskip@0.1:tau=per-layer"), family("ffnskip@0.1"));
    }
}
