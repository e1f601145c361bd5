//! Choosing the next token from the logits: repetition, frequency and presence penalties, then
//! greedy argmax or top-k → top-p → min-p → temperature → a seeded draw (llama.cpp's order).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means off.
    pub top_k: usize,
    /// 1 means off.
    pub top_p: f32,
    /// 0 means off.
    pub min_p: f32,
    /// 1 means off; applied to the last `repeat_last_n` tokens.
    pub repeat_penalty: f32,
    /// The window of the three penalties: this many of the latest tokens (prompt included).
    pub repeat_last_n: usize,
    /// Subtracted from a token's logit once per time it occurs in the window (0: off).
    #[serde(default)]
    pub frequency_penalty: f32,
    /// Subtracted from the logit of every token in the window (0: off).
    #[serde(default)]
    pub presence_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 42,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::InvalidArgument(msg.to_string()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a finite number ≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p must be in [0, 1]");
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad("repeat-penalty must be a finite number > 0");
        }
        for (name, value) in [("frequency penalty", self.frequency_penalty), ("presence penalty", self.presence_penalty)] {
            if !(-MAX_ADDITIVE_PENALTY..=MAX_ADDITIVE_PENALTY).contains(&value) {
                return bad(&format!("{name} must be in [-{MAX_ADDITIVE_PENALTY}, {MAX_ADDITIVE_PENALTY}]"));
            }
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    fn penalises(&self) -> bool {
        self.repeat_penalty != 1.0 || self.frequency_penalty != 0.0 || self.presence_penalty != 0.0
    }
}

/// The largest frequency or presence penalty, either sign (OpenAI's range).
pub const MAX_ADDITIVE_PENALTY: f32 = 2.0;

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    candidates: Vec<(u32, f32)>,
    /// The penalty window's tokens and how often each occurs (reused from call to call).
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng, candidates: Vec::new(), counts: HashMap::new() }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token; `history` is every token so far (prompt and generated).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let dist = self.distribution(logits, history);
        self.draw(&dist)
    }

    /// The distribution [`Sampler::sample`] draws from, after the penalty and every cut-off:
    /// the kept tokens with probabilities summing to 1, most likely first. Greedy decoding puts
    /// all the mass on the argmax.
    pub fn distribution(&mut self, logits: &mut [f32], history: &[u32]) -> Vec<(u32, f32)> {
        let p = &self.params;
        if p.penalises() {
            apply_penalties(logits, history, p, &mut self.counts);
        }
        if p.is_greedy() {
            return vec![(argmax(logits), 1.0)];
        }
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 {
            c.truncate(p.top_k);
        }
        // Probabilities at temperature 1 for the nucleus and min-p cut-offs.
        let max = c[0].1;
        let mut probs: Vec<f32> = c.iter().map(|&(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        let mut keep = c.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, q) in probs.iter().enumerate() {
                cum += q;
                if cum >= p.top_p {
                    keep = keep.min(i + 1);
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = p.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        c.truncate(keep);
        let weights: Vec<f32> = c.iter().map(|&(_, l)| ((l - max) / p.temperature).exp()).collect();
        let total: f32 = weights.iter().sum();
        c.iter().zip(weights).map(|(&(id, _), w)| (id, w / total)).collect()
    }

    /// A token drawn from `dist` (probabilities summing to 1, as [`Sampler::distribution`]
    /// gives); a one-token distribution takes no randomness.
    pub fn draw(&mut self, dist: &[(u32, f32)]) -> u32 {
        if let [(only, _)] = dist {
            return *only;
        }
        let mut r = self.uniform();
        for &(id, q) in dist {
            if r < q {
                return id;
            }
            r -= q;
        }
        dist[dist.len() - 1].0
    }

    /// A uniform draw from [0, 1), from the sampler's seeded generator.
    pub fn uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }
}

/// The index of the largest logit (the first one on a tie).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The penalties on the last `repeat_last_n` tokens, per token as llama.cpp applies them: the
/// CTRL-style repeat penalty (a positive logit divided by it, a negative one multiplied), then
/// `count · frequency_penalty + presence_penalty` subtracted.
fn apply_penalties(logits: &mut [f32], history: &[u32], p: &SamplingParams, counts: &mut HashMap<u32, u32>) {
    counts.clear();
    for &t in &history[history.len().saturating_sub(p.repeat_last_n)..] {
        *counts.entry(t).or_insert(0) += 1;
    }
    for (&t, &count) in counts.iter() {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
            *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams { temperature, ..Default::default() }
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_one_is_greedy() {
        let logits = vec![1.0, 1.1, 0.9, 1.05, 0.2];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..params(1.0) });
            (0..20).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut s = Sampler::new(SamplingParams { top_k: 1, ..params(1.0) });
        assert!((0..20).all(|_| s.sample(&mut logits.clone(), &[]) == 1));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // softmax([5,0,0]) puts 0.987 on token 0: a nucleus of 0.9 keeps only it.
        let mut s = Sampler::new(SamplingParams { top_p: 0.9, ..params(1.0) });
        assert!((0..50).all(|_| s.sample(&mut [5.0, 0.0, 0.0], &[]) == 0));
        let mut s = Sampler::new(SamplingParams { min_p: 0.5, ..params(1.0) });
        assert!((0..50).all(|_| s.sample(&mut [3.0, 2.9, -4.0], &[]) != 2));
    }

    #[test]
    fn repeat_penalty_changes_the_greedy_choice() {
        let mut s = Sampler::new(SamplingParams { repeat_penalty: 2.0, ..params(0.0) });
        assert_eq!(s.sample(&mut [3.0, 2.0], &[0]), 1);
    }

    #[test]
    fn frequency_and_presence_penalties_subtract_per_occurrence_and_once() {
        // Values exact in binary, so the penalised logits compare exactly.
        let greedy = |frequency_penalty, presence_penalty, history: &[u32]| {
            let mut s = Sampler::new(SamplingParams { frequency_penalty, presence_penalty, ..params(0.0) });
            let mut logits = [3.0, 2.0, 1.75];
            let token = s.sample(&mut logits, history);
            (token, logits)
        };
        // Token 0 seen twice: 3 − 2·0.75 = 1.5 falls below token 1's 2.
        assert_eq!(greedy(0.75, 0.0, &[0, 0]), (1, [1.5, 2.0, 1.75]));
        // Seen once, 3 − 0.75 = 2.25 still leads.
        assert_eq!(greedy(0.75, 0.0, &[0]).0, 0);
        // Presence: once per token however often it occurs; tokens 0 and 1 both drop by 1.5.
        assert_eq!(greedy(0.0, 1.5, &[0, 0, 0, 1]), (2, [1.5, 0.5, 1.75]));
        // Negative values encourage repeats.
        assert_eq!(greedy(0.0, -2.0, &[2]).0, 2);
        // The window: a token older than the last `repeat_last_n` is not penalised.
        let mut s = Sampler::new(SamplingParams { presence_penalty: 2.0, repeat_last_n: 2, ..params(0.0) });
        assert_eq!(s.sample(&mut [3.0, 2.0, 1.75], &[0, 2, 2]), 0);
    }

    #[test]
    fn invalid_params_are_rejected() {
        assert!(SamplingParams { frequency_penalty: 2.5, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { presence_penalty: f32::NAN, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { presence_penalty: -2.0, ..Default::default() }.validate().is_ok());
        assert!(SamplingParams { top_p: 0.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams { temperature: -1.0, ..Default::default() }.validate().is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }
}
