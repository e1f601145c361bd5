//! Decoding a token allocates nothing: every buffer of the forward pass, the products and
//! attention is reused from step to step. A separate test binary, because it installs a
//! counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ffnskip::generate::Session;
use ffnskip::model::BlockCounts;
use ffnskip::skip::PolicySpec;
use ffnskip::Engine;

/// Counts allocations on every thread (the pool's workers included).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decode_steps_allocate_nothing() {
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

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}
