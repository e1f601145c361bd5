//! Speculative sampling's accept/reject rule (Leviathan et al. 2023, arXiv 2211.17192): a draft
//! token drawn from the draft's distribution `q` is kept with probability `min(1, p(t)/q(t))`
//! under the full model's distribution `p`; on rejection the token is drawn from
//! `norm(max(0, p − q))` instead. Every emitted token is then distributed exactly as `p`.
//!
//! Greedy decoding is the special case where both distributions are one token with
//! probability 1: the draft is kept iff it is the full model's argmax, else replaced by it, and
//! no randomness is used.

use std::collections::HashMap;

use crate::sampling::Sampler;

/// A sparse distribution: tokens and their probabilities, summing to 1.
pub type Dist = [(u32, f32)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// The draft is rejected; this token takes its place.
    Replace(u32),
}

fn prob(dist: &Dist, token: u32) -> f32 {
    dist.iter().find(|&&(t, _)| t == token).map_or(0.0, |&(_, p)| p)
}

/// Judges draft `token`, drawn from `q`, against the full model's `p`.
pub fn judge(p: &Dist, q: &Dist, token: u32, sampler: &mut Sampler) -> Verdict {
    let (pt, qt) = (prob(p, token), prob(q, token));
    let ratio = if qt > 0.0 { pt / qt } else { 0.0 };
    // Certain outcomes take no draw, so greedy verification consumes no randomness.
    if ratio >= 1.0 || (ratio > 0.0 && sampler.uniform() < ratio) {
        return Verdict::Accept;
    }
    Verdict::Replace(sampler.draw(&residual(p, q)))
}

/// `norm(max(0, p − q))`, or `p` itself when that is empty (rounding can leave `p ≤ q`
/// everywhere even though both sum to 1).
fn residual(p: &Dist, q: &Dist) -> Vec<(u32, f32)> {
    let q: HashMap<u32, f32> = q.iter().copied().collect();
    let mut r: Vec<(u32, f32)> = p
        .iter()
        .map(|&(t, pt)| (t, (pt - q.get(&t).copied().unwrap_or(0.0)).max(0.0)))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    let total: f32 = r.iter().map(|&(_, w)| w).sum();
    if total <= 0.0 {
        return p.to_vec();
    }
    r.iter_mut().for_each(|(_, w)| *w /= total);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

    fn sampler(seed: u64) -> Sampler {
        Sampler::new(SamplingParams { temperature: 1.0, seed, ..Default::default() })
    }

    #[test]
    fn greedy_keeps_the_argmax_and_replaces_anything_else() {
        let mut s = sampler(1);
        assert_eq!(judge(&[(7, 1.0)], &[(7, 1.0)], 7, &mut s), Verdict::Accept);
        assert_eq!(judge(&[(7, 1.0)], &[(3, 1.0)], 3, &mut s), Verdict::Replace(7));
    }

    /// The emitted token follows `p` whatever `q` is: draw from `q`, judge, and compare the
    /// frequencies of 200 000 outcomes with `p` by a chi-square test over 4 categories (3
    /// degrees of freedom; 16.27 is the 0.999 quantile, so a correct rule fails one seed in
    /// a thousand, and this seed is fixed).
    #[test]
    fn emitted_tokens_follow_the_target_distribution() {
        let p: Vec<(u32, f32)> = vec![(0, 0.5), (1, 0.3), (2, 0.15), (3, 0.05)];
        let drafts: [Vec<(u32, f32)>; 3] = [
            vec![(3, 0.7), (2, 0.2), (0, 0.1)],
            vec![(1, 1.0)],
            vec![(0, 0.25), (1, 0.25), (2, 0.25), (3, 0.25)],
        ];
        for q in drafts {
            let mut s = sampler(9);
            let n = 200_000;
            let mut counts = [0usize; 4];
            for _ in 0..n {
                let token = s.draw(&q);
                let out = match judge(&p, &q, token, &mut s) {
                    Verdict::Accept => token,
                    Verdict::Replace(t) => t,
                };
                counts[out as usize] += 1;
            }
            let chi2: f64 = p
                .iter()
                .map(|&(t, pt)| {
                    let expected = n as f64 * pt as f64;
                    (counts[t as usize] as f64 - expected).powi(2) / expected
                })
                .sum();
            assert!(chi2 < 16.27, "q = {q:?}: counts {counts:?}, chi2 {chi2}");
        }
    }
}
