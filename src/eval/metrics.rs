//! The evaluation metrics, each implemented once (DESIGN §5).

/// Lower-case, punctuation and the articles a/an/the removed, white space collapsed.
pub fn normalize_answer(text: &str) -> String {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' })
        .collect();
    lowered.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Factoid correctness: the normalised gold answer is a substring of the normalised output.
pub fn answer_is_correct(gold: &str, output: &str) -> bool {
    let gold = normalize_answer(gold);
    !gold.is_empty() && normalize_answer(output).contains(&gold)
}

/// ROUGE-L F1 between two texts over white-space tokens: `2·P·R / (P + R)` with `P = LCS/|c|`,
/// `R = LCS/|r|`. Two empty texts score 1.
pub fn rouge_l_f1(candidate: &str, reference: &str) -> f64 {
    let c: Vec<&str> = candidate.split_whitespace().collect();
    let r: Vec<&str> = reference.split_whitespace().collect();
    if c.is_empty() && r.is_empty() {
        return 1.0;
    }
    let lcs = lcs_len(&c, &r) as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (p, rec) = (lcs / c.len() as f64, lcs / r.len() as f64);
    2.0 * p * rec / (p + rec)
}

fn lcs_len(a: &[&str], b: &[&str]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { row[j + 1].max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// `log softmax(logits)`, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&l| l as f64 - log_z).collect()
}

/// `KL(p ‖ q) = Σ p·(log p − log q)` from log-probabilities.
pub fn kl_divergence(log_p: &[f64], log_q: &[f64]) -> f64 {
    log_p.iter().zip(log_q).map(|(&lp, &lq)| if lp.is_finite() { lp.exp() * (lp - lq) } else { 0.0 }).sum()
}

/// Collapse: the text ends in a loop, the same n-gram of words (n = 1..=16) repeated at least
/// three times in a row, covering at least 6 words.
pub fn ends_in_loop(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    (1..=16).any(|n| {
        let reps = (6usize.div_ceil(n)).max(3);
        if words.len() < n * reps {
            return false;
        }
        let tail = &words[words.len() - n * reps..];
        tail.chunks(n).all(|chunk| chunk == &tail[..n])
    })
}

/// `part / whole`, or `None` for an empty whole: the retention of nothing (a model whose dense
/// run solves no problem) is undefined, and 0 would read as "lost everything".
pub fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The median of `xs` (0 for none).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_of_nothing_is_undefined() {
        assert_eq!(share(3, 4), Some(0.75));
        assert_eq!(share(0, 0), None);
    }

    #[test]
    fn answer_normalisation() {
        assert_eq!(normalize_answer("The  Beatles!"), "beatles");
        assert_eq!(normalize_answer("An apple, a day."), "apple day");
        assert!(answer_is_correct("the beatles", "It was The Beatles."));
        assert!(!answer_is_correct("beatles", "The Rolling Stones"));
        assert!(!answer_is_correct("", "anything"));
        // Articles are removed as words, not inside words.
        assert_eq!(normalize_answer("Athena"), "athena");
    }

    #[test]
    fn rouge_l_hand_worked() {
        // LCS of "the cat sat on the mat" and "the cat is on the mat" is 5 words:
        // P = 5/6, R = 5/6, F1 = 5/6.
        let f = rouge_l_f1("the cat sat on the mat", "the cat is on the mat");
        assert!((f - 5.0 / 6.0).abs() < 1e-12);
        // LCS("a b c d", "b d") = 2: P = 2/4, R = 2/2, F1 = 2/3.
        assert!((rouge_l_f1("a b c d", "b d") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(rouge_l_f1("x y", "z"), 0.0);
        assert_eq!(rouge_l_f1("", ""), 1.0);
    }

    #[test]
    fn kl_hand_worked() {
        // p = (1/2, 1/2), q = (1/4, 3/4): KL = ½ln2 + ½ln(2/3).
        let lp = [0.5f64.ln(), 0.5f64.ln()];
        let lq = [0.25f64.ln(), 0.75f64.ln()];
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((kl_divergence(&lp, &lq) - want).abs() < 1e-12);
        assert_eq!(kl_divergence(&lp, &lp), 0.0);
        let ls = log_softmax(&[0.0, 0.0]);
        assert!((ls[0] - 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn loop_detection() {
        assert!(ends_in_loop("It is good. I am here I am here I am here"));
        assert!(ends_in_loop("no no no no no no"));
        assert!(!ends_in_loop("no no no"), "shorter than six words");
        assert!(!ends_in_loop("A rainbow forms when sunlight is refracted by droplets of water."));
        assert!(!ends_in_loop("I am here I am here I am there"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
