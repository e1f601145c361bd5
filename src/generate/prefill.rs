//! A prompt prefilled a piece at a time, so that the server can run the other sequences'
//! decode steps between the pieces of a long prompt.
//!
//! Prefill runs in llama.cpp's micro-batches of [`PREFILL_CHUNK`] rows because a product's
//! rounding depends on its row count. The pieces cut those micro-batches further without
//! changing a single bit, because in a batch-rounded forward a row's bits depend on the other
//! rows only through three facts about their count, and the pieces keep all three:
//! - attention sums in the tiled order for more than one row, the vector order for one (its
//!   KV padding changes nothing once the order is tiled, and a row reads only positions up to
//!   its own, all in the cache once the pieces before it have run);
//! - Q4_K products take complete groups of 4 rows, counted from the first, through the batched
//!   kernel: pieces hold a multiple of 4 rows and start at the micro-batch's start;
//! - Q6_K products use the tiled kernel from [`Q6_K_TILED_MIN_ROWS`] rows: a tail shorter than
//!   that is joined to the piece before it, so a piece is that long exactly when its
//!   micro-batch is.
//!
//! Everything else (activation quantisation, our other kernels) gives each row the bits of its
//! own product. candle's products (float and some k-quant weights) promise no such thing, so
//! a model that has any keeps whole micro-batches ([`piece_rows`]).

use std::ops::Range;
use std::time::Instant;

use super::session::PREFILL_CHUNK;
use super::{Decoder, GenerateOptions, Session};
use crate::error::{Error, Result};
use crate::kernels::Q6_K_TILED_MIN_ROWS;
use crate::model::{BlockCounts, Llama};
use crate::skip::{Dense, SkipPolicy};

/// Pieces must hold a multiple of this many rows (the Q4_K groups).
pub const PIECE_ALIGN: usize = 4;

/// Checks a piece size asked for: a multiple of [`PIECE_ALIGN`], from
/// [`Q6_K_TILED_MIN_ROWS`] to [`PREFILL_CHUNK`].
pub fn check_piece(rows: usize) -> Result<()> {
    if !rows.is_multiple_of(PIECE_ALIGN) || !(Q6_K_TILED_MIN_ROWS..=PREFILL_CHUNK).contains(&rows) {
        return Err(Error::InvalidArgument(format!(
            "the prefill piece must be a multiple of {PIECE_ALIGN} from {Q6_K_TILED_MIN_ROWS} to {PREFILL_CHUNK} rows (got {rows})"
        )));
    }
    Ok(())
}

/// The piece size `model` can use exactly: `rows`, or whole micro-batches when some product
/// runs on candle.
pub fn piece_rows(model: &Llama, rows: usize) -> usize {
    if model.all_own_kernels() {
        rows
    } else {
        PREFILL_CHUNK
    }
}

/// The positions `start..end` in forwards: micro-batches of [`PREFILL_CHUNK`] from `start`,
/// each cut into pieces of `piece` rows, a short tail joined to the piece before it.
pub fn pieces(start: usize, end: usize, piece: usize) -> impl Iterator<Item = Range<usize>> {
    (start..end).step_by(PREFILL_CHUNK).flat_map(move |batch| {
        let batch_end = (batch + PREFILL_CHUNK).min(end);
        let len = batch_end - batch;
        let mut count = len.div_ceil(piece);
        if count > 1 && len - (count - 1) * piece < Q6_K_TILED_MIN_ROWS {
            count -= 1;
        }
        (0..count).map(move |i| {
            let from = batch + i * piece;
            from..if i + 1 == count { batch_end } else { from + piece }
        })
    })
}

/// A generation's prompt being prefilled: [`Prefill::step`] runs one piece; once it returns
/// true, [`super::Generator::prefilled`] samples the first token from the logits.
pub struct Prefill {
    pub(super) prompt: Vec<u32>,
    pub(super) opts: GenerateOptions,
    pieces: std::vec::IntoIter<Range<usize>>,
    pub(super) counts: BlockCounts,
    pub(super) logits: Vec<f32>,
    /// Where the prefill starts: the prompt tokens before it were already in the cache.
    pub(super) start: usize,
    pub(super) secs: f64,
}

impl Prefill {
    /// Keeps what the session's cache already holds of `prompt` and plans the rest in pieces of
    /// `piece` rows (see [`pieces`]; [`PREFILL_CHUNK`] for the whole micro-batches).
    pub fn begin(session: &mut Session, prompt: &[u32], opts: &GenerateOptions, decoder: &Decoder, piece: usize) -> Result<Self> {
        check_piece(piece)?;
        if opts.logprobs.is_some() && matches!(decoder, Decoder::Speculative(_)) {
            // Accepted drafts are sampled inside the speculator, whose logits are not kept.
            return Err(Error::InvalidArgument("log-probabilities are not available with speculative decoding".into()));
        }
        let start = session.begin_prefill(prompt)?;
        Ok(Self {
            prompt: prompt.to_vec(),
            opts: opts.clone(),
            pieces: pieces(start, prompt.len(), piece).collect::<Vec<_>>().into_iter(),
            counts: BlockCounts::new(session.model().config.n_layers),
            logits: Vec::new(),
            start,
            secs: 0.0,
        })
    }

    /// Runs the next piece; returns whether the prompt is done. The prefill runs dense for a
    /// speculative decoder, under the policy otherwise.
    pub fn step(&mut self, session: &mut Session, decoder: &mut Decoder) -> Result<bool> {
        let Some(range) = self.pieces.next() else {
            return Ok(true);
        };
        let t0 = Instant::now();
        let policy: &mut dyn SkipPolicy = match decoder {
            Decoder::Stepwise(policy) => policy.as_mut(),
            Decoder::Speculative(_) => &mut Dense,
        };
        session.prefill_piece(&self.prompt, range, policy, &mut self.counts, &mut self.logits)?;
        self.secs += t0.elapsed().as_secs_f64();
        Ok(self.pieces.len() == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(start: usize, end: usize, piece: usize) -> Vec<usize> {
        let ranges: Vec<_> = pieces(start, end, piece).collect();
        // Contiguous, covering start..end, never across a micro-batch boundary.
        assert_eq!(ranges.first().map(|r| r.start), Some(start));
        assert_eq!(ranges.last().map(|r| r.end), Some(end));
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert!(ranges.iter().all(|r| (r.start - start) / PREFILL_CHUNK == (r.end - 1 - start) / PREFILL_CHUNK));
        ranges.iter().map(|r| r.len()).collect()
    }

    #[test]
    fn pieces_cut_micro_batches_without_changing_their_row_classes() {
        assert_eq!(lens(0, 5, 64), [5]);
        assert_eq!(lens(0, 64, 64), [64]);
        assert_eq!(lens(0, 70, 64), [70]);
        assert_eq!(lens(0, 72, 64), [64, 8]);
        assert_eq!(lens(0, 1500, 128), [128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 92]);
        assert_eq!(lens(0, 513, 64), [64, 64, 64, 64, 64, 64, 64, 64, 1]);
        assert_eq!(lens(3, 1030, PREFILL_CHUNK), [512, 512, 3]);
        assert_eq!(lens(0, 1030, 256), [256, 256, 256, 256, 6]);
        assert_eq!(lens(0, 500, 96), [96, 96, 96, 96, 96, 20]);
    }

    #[test]
    fn piece_sizes_are_checked() {
        assert!(check_piece(64).is_ok() && check_piece(8).is_ok() && check_piece(PREFILL_CHUNK).is_ok());
        for bad in [0, 4, 66, 1024] {
            assert!(check_piece(bad).is_err(), "{bad}");
        }
    }
}
