//! The tokenizer fuzz target's memory growth, outside the fuzzer: resident memory and glibc's
//! count of bytes in use after building a small byte-level BPE tokenizer and encoding one text,
//! N times (`fresh`), against one tokenizer encoding N texts (`one`).
//! `cargo run --release --example tokenizer_rss -- fresh 100000`
use ffnskip::tokenizer::{Tokenizer, Vocabulary};

/// glibc's `struct mallinfo2` (malloc.h): the allocator's own view of the heap, to tell bytes
/// the program still holds from freed memory the allocator keeps resident.
#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

extern "C" {
    fn mallinfo2() -> MallInfo2;
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok()).unwrap_or(0)
}

/// Resident memory, and bytes in use (small blocks plus mmapped blocks), in kB.
fn report(mode: &str, i: u32) {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value (glibc ≥ 2.33).
    let m = unsafe { mallinfo2() };
    println!("{mode}: {i:>7} rss {:>7} kB  in use {:>7} kB", rss_kb(), (m.uordblks + m.hblkhd) / 1024);
}

fn tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = (b'a'..=b'z').map(|c| (c as char).to_string()).collect();
    tokens.extend(["Ġ", "he", "ll", "hell", "<|im_end|>"].map(String::from));
    let n = tokens.len();
    let mut token_types = vec![1; n];
    token_types[n - 1] = 3;
    let merges = ["h e", "l l", "he ll"].map(String::from).to_vec();
    Tokenizer::from_vocabulary(Vocabulary {
        model: "gpt2".into(),
        pre: None,
        tokens,
        token_types,
        scores: vec![0.0; n],
        merges,
        bos: None,
        eos: Some(n as u32 - 1),
        eot: None,
        add_bos: false,
        add_space_prefix: false,
    })
    .expect("a valid vocabulary")
}

fn main() -> ffnskip::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "fresh".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let one = tokenizer();
    report(&mode, 0);
    for i in 1..=n {
        let text = format!("hello world {i}");
        match mode.as_str() {
            "one" => drop(one.encode(&text)?),
            _ => drop(tokenizer().encode(&text)?),
        }
        if i % (n / 10).max(1) == 0 {
            report(&mode, i);
        }
    }
    Ok(())
}
