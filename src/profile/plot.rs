//! The saturation figure: per layer, the FFN cosine `cos(h_mid, h_out)` (mean line, p10–p90 band,
//! the threshold `tau`, the cold regions shaded) above the norm ratio `‖FFN(u)‖/‖h_mid‖`, so the
//! shape DESIGN §1 describes — low first layer, a saturated middle, a turning last layer — reads
//! at a glance.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::profile::{Profile, Summary};

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const BAND: RGBColor = RGBColor(31, 119, 180);
const COLD: RGBColor = RGBColor(150, 150, 150);
const TAU: RGBColor = RGBColor(214, 39, 40);

/// Draws `profile` into a PNG at `path`, with the threshold `tau` and `cold` layers shaded at
/// each end.
pub fn draw(profile: &Profile, tau: f32, cold: usize, path: &Path) -> Result<()> {
    draw_inner(profile, tau, cold, path)
        .map_err(|e| Error::Io(std::io::Error::other(format!("drawing {}: {e}", path.display()))))
}

fn draw_inner(profile: &Profile, tau: f32, cold: usize, path: &Path) -> DrawResult<()> {
    let root = BitMapBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(520);
    let title = format!(
        "FFN saturation per layer: {} decoded tokens, {} windows of {} ({} prefilled)",
        profile.decoded_tokens, profile.windows, profile.window, profile.prefill
    );
    let cosine: Vec<Summary> = profile.layers.iter().map(|l| l.cosine).collect();
    let low = cosine.iter().map(|s| s.p10).fold(0.0, f64::min);
    let linear = Axis { range: low..1.02, to_axis: |v| v, label: |y| format!("{y:.2}") };
    panel(&top, &title, "cos(h_mid, h_out)", &cosine, &linear, Some(tau), cold)?;
    // The first layer's FFN outgrows the stream many times over while the middle ones add a
    // fifth: only a log scale shows both.
    let norm: Vec<Summary> = profile.layers.iter().map(|l| l.norm_ratio).collect();
    let low = norm.iter().map(|s| s.p10).fold(f64::INFINITY, f64::min).max(1e-3) * 0.8;
    let high = norm.iter().map(|s| s.p90).fold(0.0, f64::max).max(low) * 1.25;
    let log = Axis { range: low.log10()..high.log10(), to_axis: f64::log10, label: |y| format!("{:.2}", 10f64.powf(*y)) };
    panel(&bottom, "", "‖FFN(u)‖ / ‖h_mid‖ (log scale)", &norm, &log, None, cold)?;
    root.present()?;
    Ok(())
}

/// A y axis: its range in axis units, how a value maps there, how an axis value is labelled.
struct Axis {
    range: std::ops::Range<f64>,
    to_axis: fn(f64) -> f64,
    label: fn(&f64) -> String,
}

/// One signal against the layer: cold regions, p10–p90 band, mean line, optional threshold.
fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    y_label: &str,
    stats: &[Summary],
    axis: &Axis,
    tau: Option<f32>,
    cold: usize,
) -> DrawResult<()> {
    let n = stats.len();
    let x_range = -0.5..n as f64 - 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range, axis.range.clone())?;
    chart
        .configure_mesh()
        .x_desc("layer")
        .y_desc(y_label)
        .x_labels(n.min(31))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&axis.label)
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;

    let (y0, y1) = (axis.range.start, axis.range.end);
    let y = |v: f64| (axis.to_axis)(v);
    let cold_regions = [(-0.5, cold as f64 - 0.5), ((n - cold) as f64 - 0.5, n as f64 - 0.5)];
    chart
        .draw_series(cold_regions.map(|(a, b)| Rectangle::new([(a, y0), (b, y1)], COLD.mix(0.18).filled())))?
        .label(format!("cold regions ({cold} layers each side, never skipped)"))
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], COLD.mix(0.35).filled()));

    let band: Vec<(f64, f64)> = (0..n)
        .map(|l| (l as f64, y(stats[l].p90)))
        .chain((0..n).rev().map(|l| (l as f64, y(stats[l].p10))))
        .collect();
    chart
        .draw_series(std::iter::once(Polygon::new(band, BAND.mix(0.22).filled())))?
        .label("p10–p90 of tokens")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], BAND.mix(0.3).filled()));

    let mean: Vec<(f64, f64)> = stats.iter().enumerate().map(|(l, s)| (l as f64, y(s.mean))).collect();
    chart
        .draw_series(LineSeries::new(mean.clone(), BAND.stroke_width(3)))?
        .label("mean")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BAND.stroke_width(3)));
    chart.draw_series(mean.iter().map(|&p| Circle::new(p, 4, BAND.filled())))?;

    if let Some(tau) = tau {
        let line = [(-0.5, y(tau as f64)), (n as f64 - 0.5, y(tau as f64))];
        chart
            .draw_series(DashedLineSeries::new(line, 10, 6, TAU.stroke_width(2)))?
            .label(format!("tau = {tau}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], TAU.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(if tau.is_some() { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperMiddle })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}
