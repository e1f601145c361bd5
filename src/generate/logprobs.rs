//! Log-probabilities of the generated tokens, as OpenAI's `logprobs` report them: the
//! log-softmax of the model's logits over the whole vocabulary, before the sampler's penalty,
//! temperature and cut-offs (what llama-server reports too), so they describe the model, not
//! the sampling settings. Only generations that ask for them pay for them.

use crate::sampling::Sampler;

/// The largest number of alternatives a token may come with (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A generated token's log-probability and the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The `top_n` most likely tokens with their log-probabilities, most likely first; on a
    /// tie the lower id first, as greedy decoding's argmax picks it.
    pub top: Vec<(u32, f32)>,
}

/// Records the log-probabilities of a stepwise generation's tokens: a copy of the logits from
/// before sampling (the sampler may change them in place), the entry of the sampled token until
/// it is emitted, and that of the latest emitted token.
#[derive(Debug)]
pub struct LogprobRecorder {
    top_n: usize,
    logits: Vec<f32>,
    queued: Option<TokenLogprob>,
    last: Option<TokenLogprob>,
}

impl LogprobRecorder {
    pub fn new(top_n: usize) -> Self {
        Self { top_n: top_n.min(MAX_TOP_LOGPROBS), logits: Vec::new(), queued: None, last: None }
    }

    /// Samples the next token from `logits`, recording its entry when there is a `recorder`.
    pub fn sample_with(recorder: Option<&mut Self>, sampler: &mut Sampler, logits: &mut [f32], history: &[u32]) -> u32 {
        match recorder {
            Some(recorder) => recorder.sample(sampler, logits, history),
            None => sampler.sample(logits, history),
        }
    }

    /// Samples the next token from `logits` and records its entry.
    fn sample(&mut self, sampler: &mut Sampler, logits: &mut [f32], history: &[u32]) -> u32 {
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        let token = sampler.sample(logits, history);
        self.queued = Some(self.entry(token));
        token
    }

    /// The sampled token has been emitted: its entry becomes [`LogprobRecorder::last`].
    pub fn emitted(&mut self) {
        self.last = self.queued.take();
    }

    /// The entry of the latest emitted token.
    pub fn last(&self) -> Option<&TokenLogprob> {
        self.last.as_ref()
    }

    fn entry(&self, token: u32) -> TokenLogprob {
        let log_norm = log_sum_exp(&self.logits);
        let logprob = |id: u32| (f64::from(self.logits[id as usize]) - log_norm) as f32;
        let top = top_ids(&self.logits, self.top_n).into_iter().map(|id| (id, logprob(id))).collect();
        TokenLogprob { token, logprob: logprob(token), top }
    }
}

/// `ln Σ exp(l)`, in f64 and shifted by the maximum so that nothing overflows.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(max) + sum.ln()
}

/// The ids of the `n` largest logits, largest first (lower id first on a tie), in one pass
/// that keeps a sorted list of at most `n`.
fn top_ids(logits: &[f32], n: usize) -> Vec<u32> {
    let mut top: Vec<u32> = Vec::with_capacity(n + 1);
    if n == 0 {
        return top;
    }
    for (id, &l) in logits.iter().enumerate() {
        if top.len() == n && l <= logits[top[n - 1] as usize] {
            continue;
        }
        // Strictly greater only: an equal logit seen later has a higher id, so goes after.
        let at = top.partition_point(|&t| logits[t as usize] >= l);
        top.insert(at, id as u32);
        top.truncate(n);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

    fn entry(logits: &[f32], top_n: usize) -> TokenLogprob {
        let mut recorder = LogprobRecorder::new(top_n);
        let mut greedy = Sampler::new(SamplingParams::default());
        recorder.sample(&mut greedy, &mut logits.to_vec(), &[]);
        recorder.emitted();
        recorder.last().unwrap().clone()
    }

    #[test]
    fn log_softmax_of_the_chosen_and_the_top_tokens() {
        let logits = [1.0f32, 3.0, 3.0, -2.0, 0.5];
        let e = entry(&logits, 3);
        let norm: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum::<f64>().ln();
        assert_eq!(e.token, 1);
        assert!((f64::from(e.logprob) - (3.0 - norm)).abs() < 1e-6);
        // The tie between ids 1 and 2 keeps the lower id first, as argmax does.
        assert_eq!(e.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!((e.top[0].1, e.top[1].1), (e.logprob, e.logprob));
        assert!((f64::from(e.top[2].1) - (1.0 - norm)).abs() < 1e-6);
        assert!(entry(&logits, 0).top.is_empty());
    }

    #[test]
    fn large_logits_do_not_overflow_and_top_n_is_capped() {
        let e = entry(&[1000.0, 999.0], MAX_TOP_LOGPROBS + 5);
        assert!(e.logprob.is_finite() && e.logprob < 0.0);
        assert_eq!(e.top.len(), 2);
        let many: Vec<f32> = (0..100).map(|i| i as f32 / 10.0).collect();
        assert_eq!(entry(&many, 50).top.len(), MAX_TOP_LOGPROBS);
    }

    #[test]
    fn logprobs_ignore_the_sampler_penalty() {
        // The repeat penalty halves token 0's logit before the draw; its log-probability is
        // still that of the model's logits.
        let mut recorder = LogprobRecorder::new(1);
        let mut sampler = Sampler::new(SamplingParams { repeat_penalty: 2.0, ..SamplingParams::default() });
        let logits = [3.0f32, 2.0];
        assert_eq!(recorder.sample(&mut sampler, &mut logits.to_vec(), &[0]), 1);
        recorder.emitted();
        let e = recorder.last().unwrap();
        assert_eq!(e.top[0].0, 0);
        assert!(e.logprob < e.top[0].1);
    }
}
