//! Decoding a token allocates nothing: every buffer of the forward pass, the products and
//! attention is reused from step to step. Building, using and dropping a tokenizer leaves
//! nothing behind. A separate test binary, because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ffnskip::generate::Session;
use ffnskip::model::BlockCounts;
use ffnskip::skip::PolicySpec;
use ffnskip::tokenizer::{Tokenizer, Vocabulary};
use ffnskip::Engine;

/// Counts allocations on every thread but the test harness's main one (the pool's workers
/// included), and the bytes each thread holds (allocated minus freed on that thread, so tests
/// running beside each other do not mix).
///
/// The harness's main thread reports each finished test, which allocates, and the two tests
/// run one at a time ([`ONE_AT_A_TIME`]): neither can add to the other's count.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

thread_local! {
    // `const`: no lazy initialisation, which could itself allocate inside the allocator.
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// Whether this thread is the process's main thread: 0 not yet known, 1 yes, 2 no.
    static MAIN: Cell<u8> = const { Cell::new(0) };
}

fn count(delta: isize) {
    HELD.with(|h| h.set(h.get() + delta));
    let main = MAIN.with(|m| {
        if m.get() == 0 {
            // SAFETY: plain system calls without arguments; the main thread's id is the process id.
            let main = unsafe { libc::syscall(libc::SYS_gettid) == libc::c_long::from(libc::getpid()) };
            m.set(if main { 1 } else { 2 });
        }
        m.get() == 1
    });
    if !main {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.with(|h| h.set(h.get() - layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// On a loaded machine this failed about every second run (3 allocations) until each pool
/// thread's attention scratch was sized with the cache: a worker descheduled during the
/// warm-up steps took its first attention head inside the measured ones.
#[test]
fn decode_steps_allocate_nothing() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    ffnskip::kernels::pool::set_threads(2);
    let engine = Engine::load(&ffnskip::fetch::default_model().expect("default model")).expect("load");
    let model = &engine.model;
    let n_layers = model.config.n_layers;
    let prompt = engine.tokenizer.encode("The history of the city begins").expect("encode");
    for spec in ["dense", "ffnskip@0.3:warmup=2"] {
        let spec: PolicySpec = spec.parse().expect("policy spec");
        let mut policy = spec.build(n_layers, None).expect("policy");
        let mut session = Session::new(model, Some(64)).expect("session");
        let mut counts = BlockCounts::new(n_layers);
        let mut logits = Vec::new();
        session.prefill(&prompt, policy.as_mut(), &mut counts, &mut logits).expect("prefill");
        // The first steps size the buffers (and pass the policy's warm-up).
        let mut token = 0;
        for _ in 0..4 {
            token = argmax(&logits);
            session.decode(token, policy.as_mut(), &mut counts, &mut logits).expect("decode");
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..16 {
            token = argmax(&logits);
            session.decode(token, policy.as_mut(), &mut counts, &mut logits).expect("decode");
        }
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(allocated, 0, "{spec}: {allocated} allocations in 16 decode steps (last token {token})");
        assert!(counts.ffn.iter().sum::<u64>() > 0);
    }
}

/// tokenizers 0.23 kept every BPE's cached words in a thread-local map that outlives the BPE
/// (about 1 KB per tokenizer built and used; src/tokenizer.rs): the fuzz target's memory grew
/// without bound. Both BPE kinds, byte-level and SentencePiece.
#[test]
fn tokenizers_built_and_dropped_leave_nothing_behind() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for model in ["gpt2", "llama"] {
        let cycle = |i: usize| {
            let tok = Tokenizer::from_vocabulary(vocabulary(model)).expect("a valid vocabulary");
            let ids = tok.encode(&format!("hello world {i} <|im_end|>")).expect("encode");
            assert!(!ids.is_empty());
        };
        // The first cycles fill tokenizers' lazily built statics (regexes, byte tables).
        (0..10).for_each(cycle);
        let before = HELD.with(Cell::get);
        (0..1000).for_each(cycle);
        let grown = HELD.with(Cell::get) - before;
        assert!(grown < 4096, "{model}: 1000 tokenizers built, used and dropped left {grown} bytes behind");
    }
}

/// A small vocabulary of either tokenizer model: letters, a few merged pieces, a control token.
fn vocabulary(model: &str) -> Vocabulary {
    let space = if model == "gpt2" { "Ġ" } else { "▁" };
    let mut tokens: Vec<String> = (b'a'..=b'z').map(|c| (c as char).to_string()).collect();
    tokens.extend([space, "he", "ll", "hell", "<|im_end|>"].map(String::from));
    let n = tokens.len();
    let mut token_types = vec![1; n];
    token_types[n - 1] = 3;
    Vocabulary {
        model: model.into(),
        pre: None,
        tokens,
        token_types,
        scores: (0..n).map(|i| i as f32).collect(),
        merges: ["h e", "l l", "he ll"].map(String::from).to_vec(),
        bos: None,
        eos: Some(n as u32 - 1),
        eot: None,
        add_bos: false,
        add_space_prefix: true,
    }
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}
