//! What a speculative verification costs: the time of one forward that feeds `r` tokens with
//! every row rounded as a decode step (`Session::verify`), over the time of one decode step,
//! for r = 1..=16. A draft of k tokens pays off only if its accepted tokens outweigh this
//! cost at r = k + 1 plus the drafting.
//!
//!     cargo run --release --example verify_cost -- [MODEL] [THREADS] [REPEATS]
//!
//! MODEL is a GGUF path or a catalogue name (default: the default model); THREADS defaults to
//! 2; each cost is the median of REPEATS (default 15) timings, taken after a 256-token prompt.

use std::time::Instant;

use ffnskip::generate::Session;
use ffnskip::model::BlockCounts;
use ffnskip::skip::Dense;
use ffnskip::Engine;

fn main() -> ffnskip::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next();
    let threads: usize = args.next().map_or(2, |a| a.parse().expect("THREADS: a whole number"));
    let repeats: usize = args.next().map_or(15, |a| a.parse().expect("REPEATS: a whole number"));
    ffnskip::kernels::pool::set_threads(threads);
    let engine = Engine::load_named(model.as_deref())?;
    let text = "The history of the city begins with a small settlement on the river, where traders met to exchange grain, salt and cloth. ".repeat(16);
    let tokens = engine.tokenizer.encode(&text)?;
    let (prompt, fed) = (&tokens[..256], &tokens[256..272]);
    let mut session = Session::new(&engine.model, Some(512))?;
    let (mut counts, mut logits) = (BlockCounts::new(engine.model.config.n_layers), Vec::new());
    session.prefill(prompt, &mut Dense, &mut counts, &mut logits)?;
    let mut time = |rows: usize| -> ffnskip::Result<f64> {
        let mut secs = Vec::with_capacity(repeats);
        for _ in 0..=repeats {
            session.rewind(prompt.len());
            let start = Instant::now();
            session.verify(&fed[..rows], &mut Dense, &mut counts, &mut logits)?;
            secs.push(start.elapsed().as_secs_f64());
        }
        // The first timing warms the caches up and is dropped.
        let mut secs = secs.split_off(1);
        secs.sort_by(f64::total_cmp);
        Ok(secs[secs.len() / 2])
    };
    let one = time(1)?;
    println!("model: {}; threads: {threads}; median of {repeats}", model.as_deref().unwrap_or("default"));
    println!("| rows | ms | × one decode step | ms per row |\n|---|---|---|---|");
    for rows in 1..=fed.len() {
        let t = time(rows)?;
        println!("| {rows} | {:.2} | {:.2} | {:.2} |", 1e3 * t, t / one, 1e3 * t / rows as f64);
    }
    Ok(())
}
