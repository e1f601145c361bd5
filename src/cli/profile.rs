//! `ffnskip profile`: each layer's FFN saturation while decoding a text, as JSON, CSV, a figure
//! and a table on stdout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ffnskip::profile::{self, plot, Profile, SHARE_THRESHOLDS};
use ffnskip::skip::{default_cold, DEFAULT_TAU};
use serde_json::json;

use super::common::ModelArgs;
use super::text::{command_line, model_name, token_bar, TextArgs};

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub text: TextArgs,
    /// Decoded tokens to profile.
    #[arg(long, default_value_t = 4096)]
    pub tokens: usize,
    /// Output directory for profile.json, profile.csv and saturation.png.
    #[arg(long, default_value = "profile")]
    pub out: PathBuf,
}

pub fn run(args: ProfileArgs) -> Result<()> {
    let windowing = args.text.windowing(args.tokens)?;
    let text = args.text.read()?;
    let engine = args.model.load()?;
    let tokens = engine.tokenizer.encode(&text)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;

    let bar = token_bar(args.tokens, "profile");
    let profile = profile::profile(&engine.model, &tokens, &windowing, &mut || bar.inc(1))?;
    bar.finish_and_clear();

    let n_layers = engine.model.config.n_layers;
    let mut report = json!({
        "command": command_line(),
        "model": model_name(args.model.model.as_deref())?,
        "text": args.text.text.display().to_string(),
        "tokens": profile.decoded_tokens,
        "tau": DEFAULT_TAU,
        "cold_layers_each_side": default_cold(n_layers),
        "cosine_share_thresholds": SHARE_THRESHOLDS,
    });
    if let (Some(obj), serde_json::Value::Object(fields)) = (report.as_object_mut(), serde_json::to_value(&profile)?) {
        obj.extend(fields);
    }
    let write = |name: &str, contents: String| {
        let path = args.out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    write("profile.json", serde_json::to_string_pretty(&report)? + "\n")?;
    write("profile.csv", profile.to_csv())?;
    plot::draw(&profile, DEFAULT_TAU, default_cold(n_layers), &args.out.join("saturation.png"))?;
    print!("{}", table(&profile));
    eprintln!("wrote profile.json, profile.csv and saturation.png to {}", args.out.display());
    Ok(())
}

/// The per-layer figures as a Markdown table.
fn table(profile: &Profile) -> String {
    let mut out = String::from(
        "| layer | cos mean | cos p10 | cos p50 | cos p90 | >0.9 | >0.95 | >0.99 | norm ratio mean | layer cos mean |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in &profile.layers {
        let [a, b, c] = l.cosine_share_above;
        out += &format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} |\n",
            l.layer, l.cosine.mean, l.cosine.p10, l.cosine.p50, l.cosine.p90, a, b, c, l.norm_ratio.mean,
            l.mean_layer_cosine
        );
    }
    out
}
