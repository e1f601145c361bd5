//! `ffnskip calibrate`: a skip policy whose realised post-warm-up ratio on a text meets a target,
//! written as a skip config for `ffnskip generate --skip-config`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ffnskip::profile::{self, CalibrateOptions, Measured, SkipConfig};
use ffnskip::skip::{PolicyKind, PolicySpec};

use super::common::ModelArgs;
use super::text::{token_bar, TextArgs};

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub text: TextArgs,
    /// The realised post-warm-up FFN skip ratio to meet.
    #[arg(long)]
    pub target_ratio: f64,
    /// How far the realised ratio may be from the target.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
    /// The skip config to write (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Decoded tokens per measurement.
    #[arg(long, default_value_t = 1024)]
    pub tokens: usize,
    /// The policy and the options to keep fixed, e.g. `ffnskip` or `ffnskip:warmup=8:tau=0.97`;
    /// cold regions and tau left open are chosen.
    #[arg(long, default_value = "ffnskip")]
    pub policy_base: String,
    /// Per-layer thresholds (`ffnskip` only): layer l's threshold is the QUANTILE of its own
    /// cosine on the text (a token passes where it is in that layer's top 1 − QUANTILE).
    #[arg(long)]
    pub per_layer: bool,
    /// With --per-layer: the quantiles to try in turn, comma-separated, most selective first.
    #[arg(long, value_delimiter = ',', default_values_t = [0.75, 0.5, 0.25], requires = "per_layer")]
    pub quantiles: Vec<f64>,
}

/// Measurements per setting before the search gives up.
const MAX_MEASUREMENTS: usize = 8;

pub fn run(args: CalibrateArgs) -> Result<()> {
    if args.target_ratio.is_nan() || args.target_ratio <= 0.0 || args.target_ratio >= 1.0 {
        bail!("--target-ratio must be in (0, 1), got {}", args.target_ratio);
    }
    if args.tolerance.is_nan() || args.tolerance <= 0.0 {
        bail!("--tolerance must be above 0, got {}", args.tolerance);
    }
    let base = base_spec(&args.policy_base)?;
    if args.per_layer {
        profile::check_per_layer(&base, &args.quantiles)?;
    }
    let windowing = args.text.windowing(args.tokens)?;
    let text = args.text.read()?;
    let engine = args.model.load()?;
    let tokens = engine.tokenizer.encode(&text)?;
    let model = &engine.model;

    let bar = token_bar(args.tokens, "profile (dense)");
    let profile = profile::profile(model, &tokens, &windowing, &mut || bar.inc(1))?;
    bar.reset();
    bar.set_message("measure");
    let opts = CalibrateOptions {
        target: args.target_ratio,
        tolerance: args.tolerance,
        base,
        max_measurements: MAX_MEASUREMENTS,
        quantiles: if args.per_layer { args.quantiles.clone() } else { Vec::new() },
    };
    let on_trial = &mut |t: &profile::Trial| {
        // Each measurement is a result, so it goes to stdout; stderr keeps only the bar and errors.
        let quantile = t.quantile.map(|q| format!(" (quantile {q})")).unwrap_or_default();
        bar.suspend(|| println!("  {:<48} realised {:.4}{quantile}", t.spec.to_string(), t.realised));
        bar.reset();
    };
    let result = profile::calibrate(model, &tokens, &windowing, &profile, &opts, on_trial, &mut || bar.inc(1));
    bar.finish_and_clear();
    let calibrated = result?;
    let chosen = calibrated.chosen;

    let config = SkipConfig {
        policy: chosen.spec.to_string(),
        calibration: calibrated.calibration,
        measured: Measured {
            realised_post_warmup: chosen.realised,
            tokens: windowing.tokens,
            text: args.text.text.display().to_string(),
        },
    };
    config.save(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "chose {} : realised post-warm-up FFN skip ratio {:.4} (target {} ± {}) on {} tokens; wrote {}",
        config.policy,
        chosen.realised,
        args.target_ratio,
        args.tolerance,
        windowing.tokens,
        args.out.display()
    );
    Ok(())
}

/// `--policy-base` as a spec; a ratio is optional there because the search sets it.
fn base_spec(text: &str) -> Result<PolicySpec> {
    let (head, options) = text.split_once(':').map_or((text, ""), |(h, o)| (h, o));
    let with_ratio = if head.contains('@') || head == "dense" {
        text.to_string()
    } else if options.is_empty() {
        format!("{head}@0")
    } else {
        format!("{head}@0:{options}")
    };
    let spec: PolicySpec = with_ratio.parse().with_context(|| format!("--policy-base {text}"))?;
    if spec.kind == PolicyKind::Dense {
        bail!("--policy-base dense skips nothing: give a skip policy, e.g. ffnskip");
    }
    Ok(spec)
}
