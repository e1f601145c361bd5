//! What the chat template's sandbox costs: each render through the worker (the first one forks
//! it) against the same render in this process.
//!
//!     cargo run --release --example template_cost -- [MODEL]
fn main() {
    let engine = ffnskip::Engine::load_named(std::env::args().nth(1).as_deref()).unwrap();
    let t = engine.chat_template.as_ref().unwrap();
    let msgs = [ffnskip::chat::Message::new("user", "hi")];
    for _ in 0..5 {
        let s = std::time::Instant::now();
        t.render(&msgs, true).unwrap();
        let a = s.elapsed();
        let s = std::time::Instant::now();
        t.render_in_process(&msgs, true).unwrap();
        println!("worker {a:>10.1?}   in this process {:>10.1?}", s.elapsed());
    }
}
