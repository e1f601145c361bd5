//! The fuzz targets' bodies (`fuzz/bodies/`, shared with the cargo-fuzz targets) in the normal
//! test build: every input under `fuzz/corpus/<target>/` (the committed seeds and regression
//! inputs, plus whatever libFuzzer added locally) is replayed, then seeded random mutations of
//! them (bit flips, byte changes, inserts, deletions, truncations, splices) run for a time
//! budget per target. No panic (the bodies assert the targets' own invariants) and no input
//! over `HANG`.
//!
//! This is not libFuzzer: no coverage guidance, no sanitizer, no memory limit. It is what CI
//! can afford (the instrumented fuzz build takes about 28 minutes cold): the bodies keep
//! compiling and the committed inputs keep passing. `FFNSKIP_FUZZ_SMOKE_SECS` sets the budget
//! per target (default 15), `FFNSKIP_FUZZ_SMOKE_SEED` the mutations' seed (default 1).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../../fuzz/bodies/chat_template.rs"]
mod chat_template;
#[path = "../../fuzz/bodies/gguf.rs"]
mod gguf;
#[path = "../../fuzz/bodies/policy_spec.rs"]
mod policy_spec;
#[path = "../../fuzz/bodies/server_request.rs"]
mod server_request;
#[path = "../../fuzz/bodies/tokenizer.rs"]
mod tokenizer;

/// libFuzzer's limit is 1 s under AddressSanitizer; this build has no sanitizer but shares a
/// loaded CI machine with the other tests, so an input is a hang only well past that.
const HANG: Duration = Duration::from_secs(5);

/// libFuzzer's `-max_len` in scripts/fuzz.sh.
const MAX_LEN: usize = 65536;

#[test]
fn fuzz_smoke_gguf() {
    smoke("gguf", gguf::run);
}

#[test]
fn fuzz_smoke_tokenizer() {
    smoke("tokenizer", tokenizer::run);
}

#[test]
fn fuzz_smoke_chat_template() {
    smoke("chat_template", chat_template::run);
}

#[test]
fn fuzz_smoke_policy_spec() {
    smoke("policy_spec", policy_spec::run);
}

#[test]
fn fuzz_smoke_server_request() {
    smoke("server_request", server_request::run);
}

fn smoke(target: &str, run: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(!inputs.is_empty(), "fuzz/corpus/{target}/ holds no inputs");
    for (path, input) in &inputs {
        execute(target, &path.display().to_string(), input, run);
    }
    let seed: u64 = env_or("FFNSKIP_FUZZ_SMOKE_SEED", 1);
    let budget = Duration::from_secs(env_or("FFNSKIP_FUZZ_SMOKE_SECS", 15));
    // Each target its own sequence, so targets do not all try the same mutations.
    let mut rng = StdRng::seed_from_u64(seed ^ target.bytes().fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b)));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        let input = mutate(&mut rng, &inputs);
        execute(target, &format!("mutation {n} of seed {seed}"), &input, run);
        n += 1;
    }
    eprintln!("fuzz smoke {target}: {} inputs replayed, {n} mutations in {:.1?}", inputs.len(), start.elapsed());
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// Every file of `fuzz/corpus/<target>/`, in name order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("a corpus file"))).collect()
}

/// Runs one input; a panic or a hang fails the test, with the input saved for replay under
/// the fuzzer.
fn execute(target: &str, what: &str, input: &[u8], run: fn(&[u8])) {
    let start = Instant::now();
    let panicked = std::panic::catch_unwind(|| run(input)).is_err();
    let elapsed = start.elapsed();
    if panicked || elapsed > HANG {
        let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-smoke-{target}-{}", input.len()));
        std::fs::write(&saved, input).expect("save the failing input");
        let failure = if panicked { "panicked".to_string() } else { format!("took {elapsed:.1?}") };
        panic!(
            "fuzz smoke {target}: {what} {failure}; the input is at {0} \
             (replay: cd fuzz && cargo +nightly fuzz run {target} {0})",
            saved.display()
        );
    }
}

/// One to eight random edits of a random corpus input.
fn mutate(rng: &mut StdRng, inputs: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b' ', b'"', b'{', b'}', b'%', b'<', b'\n'];
    let mut data = inputs[rng.random_range(0..inputs.len())].1.clone();
    for _ in 0..rng.random_range(1..=8) {
        let at = rng.random_range(0..=data.len());
        match rng.random_range(0..6) {
            0 if at < data.len() => data[at] ^= 1 << rng.random_range(0..8),
            1 if at < data.len() => data[at] = INTERESTING[rng.random_range(0..INTERESTING.len())],
            2 => {
                let bytes: Vec<u8> = (0..rng.random_range(1..=16)).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            3 => {
                let end = rng.random_range(at..=data.len().min(at + 64));
                data.drain(at..end);
            }
            4 => data.truncate(at),
            _ => {
                let other = &inputs[rng.random_range(0..inputs.len())].1;
                let from = rng.random_range(0..=other.len());
                let to = rng.random_range(from..=other.len());
                data.splice(at..at, other[from..to].iter().copied());
            }
        }
    }
    data.truncate(MAX_LEN);
    data
}
