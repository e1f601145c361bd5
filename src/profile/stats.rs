//! Summary statistics of per-token samples. Kept apart from the profiling loop so the arithmetic
//! can be checked on hand-worked examples.

use serde::Serialize;

/// Mean and spread of one signal over many tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl Summary {
    /// The summary of `samples`, or `None` when there are none (an empty position bucket).
    pub fn of(samples: &[f32]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f32::total_cmp);
        Some(Self {
            mean: mean(samples),
            p10: percentile(&sorted, 0.10),
            p50: percentile(&sorted, 0.50),
            p90: percentile(&sorted, 0.90),
        })
    }
}

/// The arithmetic mean, accumulated in f64 so thousands of cosines near 1 keep their digits.
pub fn mean(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.iter().map(|&x| x as f64).sum::<f64>() / samples.len() as f64
}

/// The `q`-quantile of ascending `sorted` samples, interpolating linearly between the two nearest
/// ranks (`h = q (n − 1)`, numpy's default), so small samples give the same figures as numpy.
pub fn percentile(sorted: &[f32], q: f64) -> f64 {
    assert!(!sorted.is_empty() && (0.0..=1.0).contains(&q), "percentile of {} samples at {q}", sorted.len());
    let h = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    let (a, b) = (sorted[lo] as f64, sorted[hi] as f64);
    a + (h - lo as f64) * (b - a)
}

/// The share of samples strictly above `threshold`: the saturation test is `c > tau`.
pub fn share_above(samples: &[f32], threshold: f32) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.iter().filter(|&&x| x > threshold).count() as f64 / samples.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        // n = 5, h = q · 4: p10 → h 0.4 → 1 + 0.4 · (2 − 1); p50 → h 2 → 3; p90 → h 3.6 → 4 + 0.6 · 6.
        let sorted = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert!(close(percentile(&sorted, 0.1), 1.4));
        assert!(close(percentile(&sorted, 0.5), 3.0));
        assert!(close(percentile(&sorted, 0.9), 7.6));
        assert!(close(percentile(&sorted, 0.0), 1.0));
        assert!(close(percentile(&sorted, 1.0), 10.0));
        // Even count: the median is halfway between the middle two.
        assert!(close(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5));
        assert!(close(percentile(&[7.0], 0.9), 7.0));
    }

    #[test]
    fn summary_sorts_its_samples() {
        let s = Summary::of(&[10.0, 3.0, 1.0, 4.0, 2.0]).unwrap();
        assert!(close(s.mean, 4.0));
        assert!(close(s.p10, 1.4) && close(s.p50, 3.0) && close(s.p90, 7.6), "{s:?}");
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn share_above_is_strict() {
        let cosines = [0.5, 0.9, 0.95, 0.96, 0.995];
        assert!(close(share_above(&cosines, 0.9), 0.6));
        assert!(close(share_above(&cosines, 0.95), 0.4));
        assert!(close(share_above(&cosines, 0.99), 0.2));
        assert!(close(share_above(&cosines, 1.0), 0.0));
        assert!(share_above(&[], 0.9).is_nan());
    }
}
