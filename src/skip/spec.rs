//! Policy specs: one string names a policy, its target ratio and its options, for the command
//! line and for reports, e.g. `ffnskip@0.25:tau=0.97:warmup=8`.
//!
//! Grammar: `NAME[@RATIO](:KEY=VALUE)*`. `dense` takes no ratio; every other policy needs one in
//! `[0, 1)`. Options, all optional (defaults in brackets):
//!
//! | key | policies | value |
//! |---|---|---|
//! | `cold_start`, `cold_end` | all but `dense` | layers never skipped [`ceil(0.15 L)`] |
//! | `warmup` | all but `dense`, `layer-drop` | dense decode steps [16] |
//! | `tau` | `ffnskip`, `layer-early-exit` | cosine threshold [0.95]; for `ffnskip` also `per-layer`: each layer's own, from the calibration |
//! | `signal` | `ffnskip` | `cosine` [default] or `norm-ratio` (needs `threshold`) |
//! | `threshold` | `ffnskip` | norm-ratio threshold |
//! | `recheck` | `ffnskip`, `layer-early-exit` | test again after a run ends [false] |
//! | `max_run` | `ffnskip`, `layer-early-exit` | blocks per run [the whole budget] |
//! | `seed` | `random`, `no-adaptive` | RNG seed [0] |
//!
//! For `static` and `layer-drop` the ratio means `round(r L)` FFNs (layers) skipped for good.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::skip::schedule::{default_cold, ScheduleConfig, DEFAULT_TAU, DEFAULT_WARMUP};
use crate::skip::random::Placement;
use crate::skip::{
    Dense, FixedStartRun, LayerDrop, PolicyKind, RandomRun, SaturationRun, Signal, SkipPolicy, StaticLayers,
};

/// The `tau` that takes each layer's threshold from the calibration.
pub const PER_LAYER: &str = "per-layer";

/// Option keys of every policy but `dense` (`layer-drop` has no warm-up).
const SCHEDULE_KEYS: &[&str] = &["cold_start", "cold_end", "warmup"];

/// A parsed policy spec; [`fmt::Display`] gives back its canonical string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    #[serde(rename = "name")]
    pub kind: PolicyKind,
    /// The target skip ratio `r` (0 for `dense`).
    pub ratio: f64,
    /// Option values in canonical spelling, by key.
    pub options: BTreeMap<String, String>,
}

/// Per-layer means measured on a calibration set, for the policies that fix their layers once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Mean `cos(h_mid, h_out)` of each layer's FFN.
    pub mean_ffn_cosine: Vec<f32>,
    /// Mean `cos(x, h_out)` of each whole layer.
    pub mean_layer_cosine: Vec<f32>,
    /// Each layer's own cosine threshold, for `ffnskip@R:tau=per-layer` (empty unless
    /// calibrated with `--per-layer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ffn_cosine_tau: Vec<f32>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// The canonical spelling of option `key`'s `value`, or what the key expects.
fn canonical(key: &str, value: &str) -> std::result::Result<String, &'static str> {
    fn parsed<T: FromStr + ToString>(value: &str, ok: impl Fn(&T) -> bool) -> Option<String> {
        value.parse::<T>().ok().filter(ok).map(|v| v.to_string())
    }
    match key {
        "tau" if value == PER_LAYER => Ok(PER_LAYER.to_string()),
        "tau" => parsed(value, |v: &f32| (-1.0..=1.0).contains(v)).ok_or("a cosine in [-1, 1] or per-layer"),
        "threshold" => parsed(value, |v: &f32| v.is_finite() && *v >= 0.0).ok_or("a number >= 0"),
        "cold_start" | "cold_end" | "warmup" => parsed(value, |_: &usize| true).ok_or("a whole number"),
        "max_run" => parsed(value, |v: &usize| *v > 0).ok_or("a whole number >= 1"),
        "seed" => parsed(value, |_: &u64| true).ok_or("a whole number"),
        "recheck" => parsed(value, |_: &bool| true).ok_or("true or false"),
        "signal" => {
            parsed(value, |v: &String| v == "cosine" || v == "norm-ratio").ok_or("cosine or norm-ratio")
        }
        _ => Err("a known key"),
    }
}

impl PolicySpec {
    /// Checks what [`FromStr`] checks, for specs built or deserialised directly.
    pub fn validate(&self) -> Result<()> {
        let kind = self.kind;
        if kind == PolicyKind::Dense {
            if self.ratio != 0.0 || !self.options.is_empty() {
                return Err(invalid("dense takes no ratio and no options"));
            }
            return Ok(());
        }
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(invalid(format!("{kind}: the ratio must be in [0, 1), got {}", self.ratio)));
        }
        for (key, value) in &self.options {
            let known = kind.own_keys().contains(&key.as_str())
                || (SCHEDULE_KEYS.contains(&key.as_str()) && (key != "warmup" || kind.has_warmup()));
            if !known {
                return Err(invalid(format!("{kind} has no option '{key}'")));
            }
            match canonical(key, value) {
                Ok(c) if c == *value => {}
                Ok(c) => return Err(invalid(format!("option {key}={value} is not canonical (write {c})"))),
                Err(expected) => return Err(invalid(format!("option {key}={value}: expected {expected}"))),
            }
        }
        if kind == PolicyKind::LayerEarlyExit && self.options.get("tau").is_some_and(|t| t == PER_LAYER) {
            return Err(invalid("tau=per-layer applies to ffnskip"));
        }
        if kind == PolicyKind::FfnSkip {
            self.signal(None)?;
        }
        Ok(())
    }

    /// Builds the policy for a model of `n_layers` layers. `static` and `layer-drop` choose their
    /// layers from `calibration` and fail without it.
    pub fn build(&self, n_layers: usize, calibration: Option<&Calibration>) -> Result<Box<dyn SkipPolicy>> {
        self.validate()?;
        let config = self.schedule_config(n_layers);
        if self.kind != PolicyKind::Dense && config.window().is_empty() {
            return Err(invalid(format!(
                "{self}: cold regions of {} + {} layers leave no skippable layer of {n_layers}",
                config.cold_start, config.cold_end
            )));
        }
        let tau = self.get("tau").unwrap_or(DEFAULT_TAU);
        let recheck = self.get("recheck").unwrap_or(false);
        let max_run = self.get("max_run").unwrap_or(usize::MAX);
        let (cold_start, cold_end) = (config.cold_start, config.cold_end);
        let seed = self.get("seed").unwrap_or(0);
        Ok(match self.kind {
            PolicyKind::Dense => Box::new(Dense),
            PolicyKind::FfnSkip => {
                let signal = self.signal(Some(self.per_layer_taus(calibration, n_layers)?))?;
                Box::new(SaturationRun::new(config, signal).with_recheck(recheck).with_max_run(max_run))
            }
            PolicyKind::Random => Box::new(RandomRun::new(config, Placement::AnyLayer, seed)),
            PolicyKind::NoAdaptive => Box::new(RandomRun::new(config, Placement::InsideWindow, seed)),
            PolicyKind::FixedStart => Box::new(FixedStartRun::new(config)),
            PolicyKind::Static => {
                let cosine = &self.calibration(calibration, n_layers)?.mean_ffn_cosine;
                let n = self.fixed_count(&config)?;
                Box::new(StaticLayers::new(
                    StaticLayers::choose(cosine, cold_start, cold_end, n),
                    config.warmup,
                ))
            }
            PolicyKind::LayerEarlyExit => {
                Box::new(SaturationRun::layer_early_exit(config, tau).with_recheck(recheck).with_max_run(max_run))
            }
            PolicyKind::LayerDrop => {
                let cosine = &self.calibration(calibration, n_layers)?.mean_layer_cosine;
                let n = self.fixed_count(&config)?;
                Box::new(LayerDrop::new(LayerDrop::choose(cosine, cold_start, cold_end, n)))
            }
        })
    }

    /// The cold regions, warm-up and target ratio for a model of `n_layers` layers.
    fn schedule_config(&self, n_layers: usize) -> ScheduleConfig {
        let cold = default_cold(n_layers);
        ScheduleConfig {
            n_layers,
            cold_start: self.get("cold_start").unwrap_or(cold),
            cold_end: self.get("cold_end").unwrap_or(cold),
            warmup: self.get("warmup").unwrap_or(DEFAULT_WARMUP),
            target_ratio: self.ratio,
        }
    }

    /// The layers this policy never skips on a model of `n_layers` layers, because they lie in
    /// its cold regions: none for `dense` (it skips nothing anywhere) and `random` (the paper's
    /// runs may start in a cold region).
    pub fn cold_layers(&self, n_layers: usize) -> Vec<usize> {
        if matches!(self.kind, PolicyKind::Dense | PolicyKind::Random) {
            return Vec::new();
        }
        let window = self.schedule_config(n_layers).window();
        (0..n_layers).filter(|l| !window.contains(l)).collect()
    }

    /// Decode steps the policy runs dense at the start of each prompt before it may skip (0 for
    /// policies without warm-up).
    pub fn warmup_steps(&self) -> usize {
        if self.kind.has_warmup() {
            self.get("warmup").unwrap_or(DEFAULT_WARMUP)
        } else {
            0
        }
    }

    /// A validated option's value.
    fn get<T: FromStr>(&self, key: &str) -> Option<T> {
        self.options.get(key).and_then(|v| v.parse().ok())
    }

    /// `ffnskip`'s saturation test: `tau` goes with the cosine, `threshold` with the norm ratio.
    /// `taus`: when building, the calibration's per-layer thresholds if it has them; `None`
    /// when only validating.
    fn signal(&self, taus: Option<Option<&[f32]>>) -> Result<Signal> {
        let has = |key: &str| self.options.contains_key(key);
        match self.options.get("signal").map(String::as_str) {
            Some("norm-ratio") if has("tau") => Err(invalid("tau applies to signal=cosine; use threshold")),
            Some("norm-ratio") => match self.get("threshold") {
                Some(threshold) => Ok(Signal::NormRatio { threshold }),
                None => Err(invalid("signal=norm-ratio needs threshold=VALUE")),
            },
            _ if has("threshold") => Err(invalid("threshold applies to signal=norm-ratio")),
            _ => match (self.options.get("tau").map(String::as_str), taus) {
                (Some(PER_LAYER), Some(Some(taus))) => Ok(Signal::CosinePerLayer { taus: taus.to_vec() }),
                (Some(PER_LAYER), Some(None)) => {
                    Err(invalid(format!("{self} needs a calibration with per-layer thresholds (calibrate --per-layer)")))
                }
                (Some(PER_LAYER), None) => Ok(Signal::CosinePerLayer { taus: Vec::new() }),
                _ => Ok(Signal::Cosine { tau: self.get("tau").unwrap_or(DEFAULT_TAU) }),
            },
        }
    }

    /// The calibration's per-layer thresholds, if it has one for each of `n_layers` layers.
    fn per_layer_taus<'a>(&self, calibration: Option<&'a Calibration>, n_layers: usize) -> Result<Option<&'a [f32]>> {
        match calibration.map(|c| c.ffn_cosine_tau.as_slice()) {
            Some(taus) if !taus.is_empty() && taus.len() != n_layers => Err(invalid(format!(
                "the calibration has {} per-layer thresholds for a model of {n_layers} layers",
                taus.len()
            ))),
            Some(taus) if !taus.is_empty() => Ok(Some(taus)),
            _ => Ok(None),
        }
    }

    fn calibration<'a>(
        &self,
        calibration: Option<&'a Calibration>,
        n_layers: usize,
    ) -> Result<&'a Calibration> {
        let c =
            calibration.ok_or_else(|| invalid(format!("{self} needs a calibration to choose its layers")))?;
        if c.mean_ffn_cosine.len() != n_layers || c.mean_layer_cosine.len() != n_layers {
            return Err(invalid(format!(
                "the calibration has {} FFN and {} layer cosines for a model of {n_layers} layers",
                c.mean_ffn_cosine.len(),
                c.mean_layer_cosine.len()
            )));
        }
        Ok(c)
    }

    /// `round(r L)` blocks for the fixed-layer policies; they must fit in the window.
    fn fixed_count(&self, config: &ScheduleConfig) -> Result<usize> {
        let n = (self.ratio * config.n_layers as f64).round() as usize;
        let window = config.window().len();
        if n > window {
            return Err(invalid(format!("{self} needs {n} layers but the window has {window}")));
        }
        Ok(n)
    }
}

impl FromStr for PolicySpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.trim().split(':');
        let head = parts.next().unwrap_or_default();
        let (name, ratio) = match head.split_once('@') {
            Some((name, ratio)) => {
                let r = ratio.parse::<f64>().map_err(|_| invalid(format!("{s}: bad ratio '{ratio}'")))?;
                (name, Some(r))
            }
            None => (head, None),
        };
        let kind: PolicyKind = name.parse()?;
        let ratio = match ratio {
            Some(r) => r,
            None if kind == PolicyKind::Dense => 0.0,
            None => return Err(invalid(format!("{s}: a ratio is needed, e.g. {name}@0.25"))),
        };
        if kind == PolicyKind::Dense && head.contains('@') {
            return Err(invalid("dense takes no ratio"));
        }
        let mut options = BTreeMap::new();
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("{s}: expected KEY=VALUE, got '{part}'")))?;
            let value = canonical(key, value).unwrap_or_else(|_| value.to_string());
            if options.insert(key.to_string(), value).is_some() {
                return Err(invalid(format!("{s}: option '{key}' given twice")));
            }
        }
        let spec = Self { kind, ratio, options };
        spec.validate()?;
        Ok(spec)
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if self.kind != PolicyKind::Dense {
            write!(f, "@{}", self.ratio)?;
        }
        for (key, value) in &self.options {
            write!(f, ":{key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skip::testing::{decode, sat};
    use crate::skip::{LayerPlan, Phase};

    fn parse(s: &str) -> Result<PolicySpec> {
        s.parse()
    }

    fn error(s: &str) -> String {
        match parse(s) {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("{s}: expected InvalidArgument, got {other:?}"),
        }
    }

    fn build_error(s: &str, n_layers: usize, calibration: Option<&Calibration>) -> String {
        match parse(s).unwrap().build(n_layers, calibration) {
            Err(Error::InvalidArgument(message)) => message,
            Err(e) => panic!("{s}: expected InvalidArgument, got {e}"),
            Ok(p) => panic!("{s}: built {}", p.name()),
        }
    }

    #[test]
    fn parses_and_round_trips() {
        for s in [
            "dense",
            "ffnskip@0.25",
            "ffnskip@0.25:cold_start=4:recheck=true:tau=0.97:warmup=8",
            "ffnskip@0.3:signal=norm-ratio:threshold=0.1",
            "random@0.25:seed=3",
            "no-adaptive@0.25",
            "no-adaptive@0.25:seed=2",
            "fixed-start@0.25",
            "static@0.25",
            "layer-early-exit@0.15:max_run=4:recheck=true",
            "layer-drop@0.15:cold_end=2",
        ] {
            let spec = parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<PolicySpec>(&json).unwrap(), spec);
        }
        let spec = parse("ffnskip@0.250:warmup=08:tau=0.970:signal=cosine").unwrap();
        assert_eq!((spec.kind, spec.ratio), (PolicyKind::FfnSkip, 0.25));
        assert_eq!(spec.options["tau"], "0.97");
        assert_eq!(spec.to_string(), "ffnskip@0.25:signal=cosine:tau=0.97:warmup=8");
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(error("ffnskipp@0.25").contains("unknown policy 'ffnskipp'"));
        assert!(error("ffnskipp").contains("unknown policy 'ffnskipp' (known: dense, ffnskip,"));
        assert!(error("ffnskip@1").contains("[0, 1)"));
        assert!(error("ffnskip@-0.1").contains("[0, 1)"));
        assert!(error("ffnskip@NaN").contains("[0, 1)"));
        assert!(error("ffnskip@x").contains("bad ratio"));
        assert!(error("ffnskip").contains("a ratio is needed"));
        assert!(error("dense@0.2").contains("no ratio"));
        assert!(error("dense:warmup=3").contains("no options"));
        assert!(error("ffnskip@0.25:seed=3").contains("no option 'seed'"));
        assert!(error("layer-drop@0.2:warmup=3").contains("no option 'warmup'"));
        assert!(error("ffnskip@0.25:tau=1.5").contains("tau=1.5: expected a cosine"));
        assert!(error("ffnskip@0.25:warmup=-1").contains("expected a whole number"));
        assert!(error("ffnskip@0.25:recheck=yes").contains("true or false"));
        assert!(error("ffnskip@0.25:max_run=0").contains(">= 1"));
        assert!(error("ffnskip@0.25:signal=entropy").contains("cosine or norm-ratio"));
        assert!(error("ffnskip@0.25:tau").contains("KEY=VALUE"));
        assert!(error("ffnskip@0.25:tau=0.9:tau=0.8").contains("twice"));
        assert!(error("ffnskip@0.25:signal=norm-ratio").contains("needs threshold"));
        assert!(error("ffnskip@0.25:threshold=0.1").contains("signal=norm-ratio"));
        assert!(error("ffnskip@0.25:signal=norm-ratio:threshold=0.1:tau=0.9").contains("tau applies"));
    }

    #[test]
    fn deserialised_specs_are_validated_on_build() {
        let spec: PolicySpec =
            serde_json::from_str(r#"{"name":"random","ratio":0.2,"options":{"seed":"x"}}"#).unwrap();
        assert!(matches!(spec.build(30, None), Err(Error::InvalidArgument(m)) if m.contains("seed=x")));
    }

    #[test]
    fn builds_every_policy_by_name() {
        let calibration = Calibration { mean_ffn_cosine: vec![0.9; 30], mean_layer_cosine: vec![0.9; 30], ..Default::default() };
        for (s, name) in [
            ("dense", "dense"),
            ("ffnskip@0.25", "ffnskip"),
            ("random@0.25", "random"),
            ("no-adaptive@0.25", "no-adaptive"),
            ("fixed-start@0.25", "fixed-start"),
            ("static@0.25", "static"),
            ("layer-early-exit@0.15", "layer-early-exit"),
            ("layer-drop@0.15", "layer-drop"),
        ] {
            let policy = parse(s).unwrap().build(30, Some(&calibration)).unwrap();
            assert_eq!(policy.name(), name);
        }
    }

    #[test]
    fn options_reach_the_policy() {
        let mut p =
            parse("ffnskip@0.25:cold_start=2:cold_end=3:warmup=1:tau=0.97").unwrap().build(30, None).unwrap();
        let traces = decode(p.as_mut(), 2, 30, |l| sat(if l == 2 { 0.98 } else { 0.96 }));
        assert!(traces[0].skipped().is_empty(), "warmup=1");
        assert_eq!(traces[1].measured, vec![1, 2], "cold_start=2, tau=0.97");
        assert_eq!(traces[1].skipped(), (3..12).collect::<Vec<_>>());
        let mut p = parse("ffnskip@0.25:cold_end=3:warmup=0").unwrap().build(30, None).unwrap();
        let t = &decode(p.as_mut(), 1, 30, |l| sat(if l == 20 { 0.99 } else { 0.5 }))[0];
        assert_eq!(t.skipped(), (21..27).collect::<Vec<_>>(), "cold_end=3");
    }

    #[test]
    fn fixed_layer_policies_choose_from_the_calibration() {
        let mut calibration =
            Calibration { mean_ffn_cosine: vec![0.5; 10], mean_layer_cosine: vec![0.5; 10], ..Default::default() };
        calibration.mean_ffn_cosine[6] = 0.99;
        calibration.mean_layer_cosine[3] = 0.99;
        calibration.mean_layer_cosine[0] = 1.0; // cold
        let spec = parse("layer-drop@0.1").unwrap(); // round(0.1 · 10) = 1 layer, window 2..8
        let mut p = spec.build(10, Some(&calibration)).unwrap();
        let t = crate::skip::testing::step(p.as_mut(), Phase::Prefill, 10, |_| sat(0.0));
        assert_eq!((t.skipped(), t.plans[3]), (vec![3], LayerPlan::Drop));
        let mut p = parse("static@0.1:warmup=0").unwrap().build(10, Some(&calibration)).unwrap();
        assert_eq!(decode(p.as_mut(), 1, 10, |_| sat(0.0))[0].skipped(), vec![6]);

        assert!(build_error("static@0.1", 10, None).contains("needs a calibration"));
        let short = Calibration { mean_ffn_cosine: vec![0.5; 9], mean_layer_cosine: vec![0.5; 10], ..Default::default() };
        assert!(build_error("layer-drop@0.1", 10, Some(&short)).contains("9 FFN and 10 layer"));
        assert!(build_error("layer-drop@0.7", 10, Some(&calibration)).contains("window has 6"));
    }

    #[test]
    fn rejects_an_empty_window() {
        let err = build_error("ffnskip@0.25:cold_start=15:cold_end=15", 30, None);
        assert!(err.contains("no skippable layer"), "{err}");
    }

    #[test]
    fn cold_layers_are_those_outside_the_window() {
        let cold = |spec: &str| parse(spec).unwrap().cold_layers(10);
        assert_eq!(cold("ffnskip@0.25:cold_start=2:cold_end=3"), vec![0, 1, 7, 8, 9]);
        assert_eq!(cold("layer-early-exit@0.25:cold_start=1:cold_end=0"), vec![0]);
        assert!(cold("dense").is_empty());
        assert!(cold("random@0.25").is_empty(), "random runs may start in a cold region");
    }
}
