//! Calibration: the policy settings whose *realised* post-warm-up FFN skip ratio on a text meets
//! a target. The requested ratio is an upper bound the method rarely reaches (runs are cut at the
//! cold end, some tokens never saturate), so it is searched for by measuring, never assumed.
//!
//! Settings are tried from the most faithful to the paper outwards: first the paper's cold
//! regions (~15% each side), then, only if the target is out of their reach, regions narrowed to
//! where the profile's mean cosine already passes `tau`; `tau` is the paper's 0.95, lowered step
//! by step only when the target cannot be reached. For each
//! setting the requested ratio is searched by interpolation inside a bracket `[0, most useful]`.
//!
//! With per-layer thresholds (`quantiles`), `ffnskip` tests each layer against its own cosine
//! distribution instead: `τ_l` is the `q`-quantile of layer `l`'s cosine on the text, so at
//! every layer a token passes when its cosine is among that layer's top `1 − q`. The quantiles
//! are tried in the order given (most selective first), each with the paper's cold regions.

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::profile::{feed_window, Profile, Windowing};
use crate::skip::{default_cold, Calibration, PolicyKind, PolicySpec, ScheduleConfig, DEFAULT_TAU, PER_LAYER};

/// Thresholds tried in turn when the base spec leaves `tau` open.
const TAUS: [f32; 3] = [DEFAULT_TAU, 0.9, 0.8];
/// Requested ratios are rounded to this many decimals, so the spec string stays readable.
const RATIO_DECIMALS: i32 = 4;

#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// The realised post-warm-up ratio to meet.
    pub target: f64,
    /// How far from `target` the realised ratio may be.
    pub tolerance: f64,
    /// The policy and any options to keep fixed; its ratio is ignored.
    pub base: PolicySpec,
    /// Measurements per setting before giving up.
    pub max_measurements: usize,
    /// Per-layer thresholds at these quantiles of each layer's cosine, tried in turn; empty:
    /// one threshold for all layers.
    pub quantiles: Vec<f64>,
}

/// One measured spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub spec: PolicySpec,
    /// The quantile its per-layer thresholds come from, if it has them.
    pub quantile: Option<f64>,
    pub realised: f64,
}

/// A spec to search the ratio of, and the calibration it runs with.
struct Setting {
    spec: PolicySpec,
    quantile: Option<f64>,
    calibration: Calibration,
}

#[derive(Debug, Clone)]
pub struct Calibrated {
    /// The chosen spec and its realised ratio.
    pub chosen: Trial,
    /// The calibration the chosen spec runs with (its per-layer thresholds, if any).
    pub calibration: Calibration,
    /// Every measurement, in order.
    pub trials: Vec<Trial>,
}

/// The realised post-warm-up FFN skip ratio of `spec` on the windows of `text`: skipped FFNs over
/// (decode steps past each window's warm-up × layers). Each window gets a fresh policy, so its
/// warm-up counts from the window's first decoded position (DESIGN §5).
pub fn measure(
    model: &Llama,
    text: &[u32],
    windowing: &Windowing,
    spec: &PolicySpec,
    calibration: Option<&Calibration>,
    progress: &mut dyn FnMut(),
) -> Result<f64> {
    let n_layers = model.config.n_layers;
    let (mut ran, mut steps) = (0u64, 0u64);
    for window in windowing.windows(text)? {
        let mut policy = spec.build(n_layers, calibration)?;
        feed_window(model, window, windowing.prefill, policy.as_mut(), &mut |_, counts, past_warmup| {
            if past_warmup {
                ran += counts.ffn.iter().sum::<u64>();
                steps += 1;
            }
            progress();
        })?;
    }
    if steps == 0 {
        return Err(Error::InvalidArgument(format!(
            "no decode step is past the warm-up of {} tokens: use longer windows or a shorter prefill",
            spec.warmup_steps()
        )));
    }
    let all = steps * n_layers as u64;
    Ok((all - ran) as f64 / all as f64)
}

/// Searches the settings of `opts.base` for one whose realised ratio on `text` is within the
/// tolerance of the target. `on_trial` hears of each measurement as it is made.
pub fn calibrate(
    model: &Llama,
    text: &[u32],
    windowing: &Windowing,
    profile: &Profile,
    opts: &CalibrateOptions,
    on_trial: &mut dyn FnMut(&Trial),
    progress: &mut dyn FnMut(),
) -> Result<Calibrated> {
    if !(opts.target > 0.0 && opts.target < 1.0) {
        return Err(Error::InvalidArgument(format!("the target ratio must be in (0, 1), got {}", opts.target)));
    }
    if opts.base.kind == PolicyKind::Dense {
        return Err(Error::InvalidArgument("dense skips nothing: calibrate a skip policy".into()));
    }
    let n_layers = model.config.n_layers;
    let mut trials = Vec::new();
    let mut run = |setting: &Setting, ratio: f64, trials: &mut Vec<Trial>| -> Result<Trial> {
        let spec = with_ratio(&setting.spec, ratio)?;
        let realised = measure(model, text, windowing, &spec, Some(&setting.calibration), progress)?;
        let trial = Trial { spec, quantile: setting.quantile, realised };
        on_trial(&trial);
        trials.push(trial.clone());
        Ok(trial)
    };
    let within = |t: &Trial| (t.realised - opts.target).abs() <= opts.tolerance;
    let mut most = None::<Trial>;
    for setting in settings(&opts.base, profile, &opts.quantiles, n_layers)? {
        let done = |chosen: Trial, trials: Vec<Trial>| Calibrated { chosen, calibration: setting.calibration.clone(), trials };
        let hi = run(&setting, most_useful_ratio(&setting.spec, n_layers), &mut trials)?;
        if within(&hi) {
            return Ok(done(hi, trials));
        }
        if hi.realised < opts.target {
            if most.as_ref().is_none_or(|m| hi.realised > m.realised) {
                most = Some(hi);
            }
            continue;
        }
        let zero = Trial { spec: with_ratio(&setting.spec, 0.0)?, quantile: setting.quantile, realised: 0.0 };
        let (mut lo, mut hi) = (zero, hi);
        for _ in 1..opts.max_measurements {
            let Some(ratio) = next_ratio(&lo, &hi, opts.target) else { break };
            let trial = run(&setting, ratio, &mut trials)?;
            if within(&trial) {
                return Ok(done(trial, trials));
            }
            if trial.realised < opts.target {
                lo = trial;
            } else {
                hi = trial;
            }
        }
        let closest = [&lo, &hi].into_iter().min_by(|a, b| {
            (a.realised - opts.target).abs().total_cmp(&(b.realised - opts.target).abs())
        });
        let closest = closest.expect("two candidates");
        return Err(Error::InvalidArgument(format!(
            "no requested ratio realises {} ± {} on this text after {} measurements (closest: {:.4} with {}); \
             the realised ratio moves in steps too coarse for the tolerance: measure more tokens",
            opts.target,
            opts.tolerance,
            trials.len(),
            closest.realised,
            closest.spec
        )));
    }
    let most = most.expect("at least one setting is tried");
    Err(Error::InvalidArgument(format!(
        "the target {} cannot be reached on this text: at most {:.4} is realised (by {}); runs are cut at the \
         cold end, every sixth token runs dense and tokens that never pass tau skip nothing",
        opts.target, most.realised, most.spec
    )))
}

/// The settings to try, in order: with `quantiles`, per-layer thresholds at each; else for each
/// `tau` (the base's, or [`TAUS`]), the cold regions of the base or the default ones, then those
/// narrowed to the profile's saturated layers.
fn settings(base: &PolicySpec, profile: &Profile, quantiles: &[f64], n_layers: usize) -> Result<Vec<Setting>> {
    let calibration = profile.calibration();
    if !quantiles.is_empty() {
        return per_layer_settings(base, profile, quantiles);
    }
    Ok(global_tau_settings(base, &calibration, n_layers)?
        .into_iter()
        .map(|spec| Setting { spec, quantile: None, calibration: calibration.clone() })
        .collect())
}

/// Whether `base` can take per-layer thresholds at `quantiles`: checked before any work.
pub fn check_per_layer(base: &PolicySpec, quantiles: &[f64]) -> Result<()> {
    if base.kind != PolicyKind::FfnSkip || base.options.contains_key("signal") || base.options.contains_key("tau") {
        return Err(Error::InvalidArgument(format!(
            "per-layer thresholds are ffnskip's cosine test: give a base of ffnskip without tau or signal, not {base}"
        )));
    }
    if let Some(q) = quantiles.iter().find(|q| !(0.0..1.0).contains(*q)) {
        return Err(Error::InvalidArgument(format!("a quantile must be in [0, 1), got {q}")));
    }
    Ok(())
}

fn per_layer_settings(base: &PolicySpec, profile: &Profile, quantiles: &[f64]) -> Result<Vec<Setting>> {
    check_per_layer(base, quantiles)?;
    let mut spec = base.clone();
    spec.options.insert("tau".into(), PER_LAYER.into());
    spec.validate()?;
    Ok(quantiles
        .iter()
        .map(|&q| Setting {
            spec: spec.clone(),
            quantile: Some(q),
            calibration: Calibration { ffn_cosine_tau: profile.cosine_quantiles(q), ..profile.calibration() },
        })
        .collect())
}

fn global_tau_settings(base: &PolicySpec, calibration: &Calibration, n_layers: usize) -> Result<Vec<PolicySpec>> {
    let tested = base.kind.tests_saturation()
        && base.options.get("signal").is_none_or(|s| s == "cosine");
    let taus: Vec<Option<f32>> = match base.options.get("tau") {
        _ if !tested => vec![None],
        Some(tau) => vec![Some(tau.parse().map_err(|_| Error::InvalidArgument(format!("bad tau {tau}")))?)],
        None => TAUS.map(Some).to_vec(),
    };
    // Early exit tests the whole layer; everything else the FFN.
    let cosine =
        if base.kind == PolicyKind::LayerEarlyExit { &calibration.mean_layer_cosine } else { &calibration.mean_ffn_cosine };
    let mut out: Vec<PolicySpec> = Vec::new();
    for tau in taus {
        let mut spec = base.clone();
        if let Some(tau) = tau {
            spec.options.insert("tau".into(), tau.to_string());
        }
        let default = default_cold(n_layers);
        let (start, end) = saturated_cold(cosine, tau.unwrap_or(DEFAULT_TAU), default);
        for (start, end) in [(default, default), (start, end)] {
            let mut spec = spec.clone();
            spec.options.entry("cold_start".into()).or_insert(start.to_string());
            spec.options.entry("cold_end".into()).or_insert(end.to_string());
            spec.validate()?;
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
    }
    Ok(out)
}

/// Cold regions of at most `default` layers each side, narrowed so the skippable window reaches
/// the first and the last layer whose mean cosine passes `tau`.
pub fn saturated_cold(mean_cosine: &[f32], tau: f32, default: usize) -> (usize, usize) {
    let n = mean_cosine.len();
    match (mean_cosine.iter().position(|&c| c > tau), mean_cosine.iter().rposition(|&c| c > tau)) {
        (Some(first), Some(last)) => (first.min(default), (n - 1 - last).min(default)),
        _ => (default, default),
    }
}

/// The smallest requested ratio at which every budget token's budget fills the skippable window;
/// asking for more changes nothing.
fn most_useful_ratio(spec: &PolicySpec, n_layers: usize) -> f64 {
    let get = |key: &str| spec.options.get(key).and_then(|v| v.parse().ok()).unwrap_or(default_cold(n_layers));
    let config = ScheduleConfig {
        n_layers,
        cold_start: get("cold_start"),
        cold_end: get("cold_end"),
        warmup: 0,
        target_ratio: 1.0,
    };
    let scale = 10f64.powi(RATIO_DECIMALS);
    ((config.window().len() as f64 / config.mean_budget() * scale).ceil() / scale).min(0.99)
}

fn with_ratio(setting: &PolicySpec, ratio: f64) -> Result<PolicySpec> {
    let spec = PolicySpec { ratio, ..setting.clone() };
    spec.validate()?;
    Ok(spec)
}

/// The next requested ratio inside the bracket: linear interpolation of realised against
/// requested, kept a tenth of the bracket from either end so the bracket always shrinks. `None`
/// when the bracket is narrower than the rounding.
pub fn next_ratio(lo: &Trial, hi: &Trial, target: f64) -> Option<f64> {
    let width = hi.spec.ratio - lo.spec.ratio;
    let slope = (hi.realised - lo.realised) / width;
    let guess = if slope > 0.0 { lo.spec.ratio + (target - lo.realised) / slope } else { lo.spec.ratio + width / 2.0 };
    let guess = guess.clamp(lo.spec.ratio + 0.1 * width, hi.spec.ratio - 0.1 * width);
    let scale = 10f64.powi(RATIO_DECIMALS);
    let ratio = (guess * scale).round() / scale;
    (ratio > lo.spec.ratio && ratio < hi.spec.ratio).then_some(ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(ratio: f64, realised: f64) -> Trial {
        Trial { spec: format!("ffnskip@{ratio}").parse().unwrap(), quantile: None, realised }
    }

    #[test]
    fn next_ratio_interpolates_inside_the_bracket() {
        // Realised grows 0.8 per unit requested: 0.25 needs 0.3125.
        assert_eq!(next_ratio(&trial(0.0, 0.0), &trial(0.5, 0.4), 0.25), Some(0.3125));
        // A guess past the bracket is pulled a tenth of the way in.
        assert_eq!(next_ratio(&trial(0.2, 0.1), &trial(0.3, 0.5), 0.49), Some(0.29));
        // A flat bracket bisects.
        assert_eq!(next_ratio(&trial(0.2, 0.3), &trial(0.4, 0.3), 0.25), Some(0.3));
        assert_eq!(next_ratio(&trial(0.2, 0.1), &trial(0.2001, 0.5), 0.3), None);
    }

    #[test]
    fn cold_regions_narrow_to_the_saturated_layers() {
        let mut cosine = vec![0.97; 10];
        cosine[0] = 0.1;
        cosine[9] = 0.7;
        assert_eq!(saturated_cold(&cosine, 0.95, 2), (1, 1));
        assert_eq!(saturated_cold(&cosine, 0.98, 2), (2, 2), "nothing saturated: the defaults");
        cosine[1] = 0.9;
        assert_eq!(saturated_cold(&cosine, 0.95, 1), (1, 1), "never wider than the default");
        assert_eq!(saturated_cold(&cosine, 0.95, 3), (2, 1));
    }

    #[test]
    fn settings_keep_what_the_base_fixes() {
        let calibration = Calibration { mean_ffn_cosine: vec![0.97; 30], mean_layer_cosine: vec![0.5; 30], ..Default::default() };
        let specs = |base: &str| -> Vec<String> {
            global_tau_settings(&base.parse().unwrap(), &calibration, 30).unwrap().iter().map(|s| s.to_string()).collect()
        };
        // The paper's cold regions first, then the narrowed ones, for each tau in turn.
        assert_eq!(
            specs("ffnskip@0"),
            ["ffnskip@0:cold_end=5:cold_start=5:tau=0.95", "ffnskip@0:cold_end=0:cold_start=0:tau=0.95",
             "ffnskip@0:cold_end=5:cold_start=5:tau=0.9", "ffnskip@0:cold_end=0:cold_start=0:tau=0.9",
             "ffnskip@0:cold_end=5:cold_start=5:tau=0.8", "ffnskip@0:cold_end=0:cold_start=0:tau=0.8"]
        );
        assert_eq!(
            specs("ffnskip@0:cold_start=5:tau=0.96"),
            ["ffnskip@0:cold_end=5:cold_start=5:tau=0.96", "ffnskip@0:cold_end=0:cold_start=5:tau=0.96"]
        );
        assert_eq!(specs("random@0"), ["random@0:cold_end=5:cold_start=5", "random@0:cold_end=0:cold_start=0"]);
        // Early exit tests the whole layer, which never passes 0.8 here: the default cold regions.
        assert_eq!(specs("layer-early-exit@0:tau=0.9"), ["layer-early-exit@0:cold_end=5:cold_start=5:tau=0.9"]);
    }

    #[test]
    fn the_most_useful_ratio_fills_the_window() {
        // Window 20 of 30 layers: a budget token's mean budget 6 r 30 / 5 reaches 20 at r = 5/9.
        let spec: PolicySpec = "ffnskip@0:cold_start=5:cold_end=5".parse().unwrap();
        assert_eq!(most_useful_ratio(&spec, 30), 0.5556);
        let spec: PolicySpec = "ffnskip@0:cold_start=0:cold_end=0".parse().unwrap();
        assert_eq!(most_useful_ratio(&spec, 30), 0.8334);
    }
}
