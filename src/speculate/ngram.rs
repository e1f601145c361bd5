//! Prompt lookup (Saxena 2023; llama.cpp's `lookup` example): the text so far often repeats
//! itself, above all when a reply rewrites or quotes its input, so the tokens that followed the
//! last occurrence of the current suffix are a free guess at what follows now.

/// The longest suffix length tried first; shorter ones are tried down to [`MIN_N`].
pub const MAX_N: usize = 4;
/// A single repeated token predicts too little to be worth a verification row.
pub const MIN_N: usize = 2;

/// A continuation found by [`lookup`]: the length of the matched suffix and what followed it.
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a> {
    pub n: usize,
    pub tokens: &'a [u32],
}

/// Up to `max` tokens that followed the most recent earlier occurrence of the longest suffix of
/// `history` (between [`MAX_N`] and [`MIN_N`] tokens long) that occurs earlier; `None` if none.
pub fn lookup(history: &[u32], max: usize) -> Option<Match<'_>> {
    let len = history.len();
    for n in (MIN_N..=MAX_N.min(len.saturating_sub(1))).rev() {
        let suffix = &history[len - n..];
        // Latest match first: recent text predicts better. A match must end before the suffix
        // starts, so that something follows it.
        if let Some(start) = (0..len - n).rev().find(|&i| &history[i..i + n] == suffix) {
            let from = start + n;
            return Some(Match { n, tokens: &history[from..(from + max).min(len)] });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_the_latest_longest_match() {
        // "1 2 3" occurred twice; the suffix "2 3" last occurred before "9 9".
        let history = [1, 2, 3, 7, 7, 1, 2, 3, 9, 9, 5, 2, 3];
        assert_eq!(lookup(&history, 3), Some(Match { n: 2, tokens: &[9, 9, 5] }));
        assert_eq!(lookup(&history, 1).unwrap().tokens, &[9]);
    }

    #[test]
    fn prefers_longer_suffixes() {
        // "4 2 3" matches at the start (followed by 8); the shorter "2 3" later (followed by 6).
        let history = [4, 2, 3, 8, 0, 2, 3, 6, 4, 2, 3];
        assert_eq!(lookup(&history, 2), Some(Match { n: 3, tokens: &[8, 0] }));
    }

    #[test]
    fn stops_at_the_end_of_the_history_and_finds_nothing_without_a_repeat() {
        let history = [5, 6, 5, 6];
        assert_eq!(lookup(&history, 10), Some(Match { n: 2, tokens: &[5, 6] }));
        assert_eq!(lookup(&[1, 2, 3, 4], 4), None);
        assert_eq!(lookup(&[1], 4), None);
        assert_eq!(lookup(&[], 4), None);
    }
}
