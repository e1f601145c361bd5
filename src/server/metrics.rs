//! Counters the handlers and the engine thread update, rendered as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// Finished requests by HTTP status (the status the response started with).
    by_status: Mutex<Vec<(u16, u64)>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub queue_depth: AtomicU64,
    pub busy_slots: AtomicU64,
    /// Requests whose client went away before they finished.
    pub cancelled: AtomicU64,
    /// Decode throughput over the engine's last measuring window, as f64 bits.
    decode_tok_s: AtomicU64,
    /// Decode FFN blocks run and skipped, over all finished requests.
    pub ffn_blocks: AtomicU64,
    pub ffn_skipped: AtomicU64,
}

impl Metrics {
    pub fn count_status(&self, status: u16) {
        let mut by = self.by_status.lock().unwrap_or_else(|e| e.into_inner());
        match by.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => by.push((status, 1)),
        }
    }

    pub fn set_decode_tok_s(&self, v: f64) {
        self.decode_tok_s.store(v.to_bits(), Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut by = self.by_status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        by.sort();
        out += "# TYPE ffnskip_requests_total counter\n";
        for (status, n) in by {
            let _ = writeln!(out, "ffnskip_requests_total{{status=\"{status}\"}} {n}");
        }
        let counters = [
            ("ffnskip_prompt_tokens_total", &self.prompt_tokens),
            ("ffnskip_generated_tokens_total", &self.generated_tokens),
            ("ffnskip_cancelled_requests_total", &self.cancelled),
        ];
        for (name, v) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        for (name, v) in [("ffnskip_queue_depth", &self.queue_depth), ("ffnskip_busy_slots", &self.busy_slots)] {
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", v.load(Relaxed));
        }
        let tok_s = f64::from_bits(self.decode_tok_s.load(Relaxed));
        let _ = writeln!(out, "# TYPE ffnskip_decode_tokens_per_second gauge\nffnskip_decode_tokens_per_second {tok_s:.3}");
        let (blocks, skipped) = (self.ffn_blocks.load(Relaxed), self.ffn_skipped.load(Relaxed));
        let ratio = if blocks == 0 { 0.0 } else { skipped as f64 / blocks as f64 };
        let _ = writeln!(out, "# TYPE ffnskip_ffn_skip_ratio gauge\nffnskip_ffn_skip_ratio {ratio:.6}");
        out
    }
}
