//! `peer-bench`: llama.cpp (through the `llama-cpp-2` crate, built from source) and ffnskip timed
//! side by side on the same GGUF, the same prompt token ids and the same thread count, in the
//! style of llama-bench (pp: one batched prefill of the prompt; tg: greedy decode one token at a
//! time, end-of-sequence ignored). Runs are interleaved engine by engine so that a noisy machine
//! affects all of them alike.
//!
//! `--greedy-check N` instead compares greedy completions of llama.cpp and ffnskip (dense) with
//! the reference file made by llama.cpp c392e50 (`shared/reference/`).

use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde_json::{json, Map, Value};

use ffnskip::eval::bench::{bench_once, BenchSample};
use ffnskip::eval::EvalConfig;
use ffnskip::generate::{generate, GenerateOptions, Session};
use ffnskip::sampling::argmax;
use ffnskip::skip::{Dense, PolicySpec};
use ffnskip::Engine;

/// The ffnskip policies timed next to llama.cpp: (JSON key, policy spec).
const POLICIES: [(&str, &str); 3] =
    [("ffnskip_dense", "dense"), ("ffnskip_skip25", "ffnskip@0.25"), ("ffnskip_skip30", "ffnskip@0.3")];

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FlashAttn {
    Auto,
    On,
    Off,
}

impl FlashAttn {
    /// llama.cpp's `llama_flash_attn_type`: -1 auto, 0 disabled, 1 enabled.
    fn raw(self) -> i32 {
        match self {
            FlashAttn::Auto => -1,
            FlashAttn::Off => 0,
            FlashAttn::On => 1,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "peer-bench", about = "Time llama.cpp and ffnskip side by side (pp/tg, llama-bench style)")]
struct Args {
    /// GGUF model (default: ffnskip's default model, fetched into $FFNSKIP_HOME on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads for both engines (llama.cpp n_threads and n_threads_batch; ffnskip's pool and CANDLE_NUM_THREADS).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Timed runs per engine/policy (interleaved), after one untimed warm-up round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Prompt tokens to prefill.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pp: u32,
    /// Tokens to decode greedily (end-of-sequence ignored).
    #[arg(long, default_value_t = 128)]
    tg: u32,
    /// Text the prompt is taken from (its first `pp` tokens, ffnskip's tokenizer).
    #[arg(long, default_value = "../shared/data/text/wikitext2-valid.tokens.txt")]
    text: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the untimed warm-up round.
    #[arg(long)]
    no_warmup: bool,
    /// Idle pause between engines, in ms, so that one engine's spinning worker threads
    /// (OpenMP in llama.cpp, candle's barrier pool in ffnskip) are parked before the next starts.
    #[arg(long, default_value_t = 1500)]
    pause_ms: u64,
    /// llama.cpp flash attention.
    #[arg(long, value_enum, default_value_t = FlashAttn::Auto)]
    flash_attn: FlashAttn,
    /// Instead of timing: greedy-decode N tokens with llama.cpp and ffnskip (dense) on the
    /// prompts of --reference and count exact matches.
    #[arg(long, value_name = "N")]
    greedy_check: Option<usize>,
    /// Reference greedy completions (JSON lines: prompt, n_predict, greedy_completion).
    #[arg(long, default_value = "../shared/reference/smollm2-135m-q4_1-greedy.jsonl")]
    reference: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // ffnskip (candle) reads its thread settings from the environment on first use: set them
    // before anything is loaded, as its own CLI does.
    let threads = args.threads.to_string();
    std::env::set_var("CANDLE_NUM_THREADS", &threads);
    ffnskip::kernels::pool::set_threads(args.threads as usize);
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "100000000");
    }

    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => ffnskip::fetch::default_model().context("the default model")?,
    };
    eprintln!("model: {}", model_path.display());
    let engine = Engine::load(&model_path).context("ffnskip: loading the model")?;

    let mut backend = LlamaBackend::init().context("llama.cpp backend")?;
    backend.void_logs();
    let lparams = LlamaModelParams::default().with_n_gpu_layers(0);
    let lmodel = LlamaModel::load_from_file(&backend, &model_path, &lparams).context("llama.cpp: loading the model")?;

    let meta = json!({
        "machine": ffnskip::eval::machine(),
        "threads": args.threads,
        "commit": commit(),
        "model": model_path.display().to_string(),
        "llama_cpp_2": "0.1.160",
        "flash_attn": format!("{:?}", args.flash_attn).to_lowercase(),
        "candle_barrier_pool_spin_limit": std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").unwrap_or_default(),
    });

    let mut out = Map::new();
    out.insert("meta".into(), meta.clone());
    if let Some(n) = args.greedy_check {
        let check = greedy_check(&args, &engine, &backend, &lmodel, n)?;
        out.insert("greedy_check".into(), check);
    } else {
        let rows = bench(&args, &engine, &backend, &lmodel)?;
        println!("{}", table(&rows, &meta, &args));
        for r in &rows {
            out.insert(r.key.to_string(), r.to_json());
        }
    }
    if let Some(path) = &args.json {
        let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string_pretty(&Value::Object(out))?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The first `n` tokens of the text file, by ffnskip's tokenizer.
fn prompt_tokens(engine: &Engine, path: &Path, n: usize) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut len = (n * 8).max(1024);
    loop {
        let mut end = len.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let ids = engine.tokenizer.encode(&text[..end])?;
        if ids.len() > n {
            return Ok(ids[..n].to_vec());
        }
        if end == text.len() {
            bail!("{} has only {} tokens, {n} needed", path.display(), ids.len());
        }
        len *= 2;
    }
}

fn context_params(args: &Args, n_ctx: usize, n_batch: usize) -> LlamaContextParams {
    let t = i32::from(args.threads);
    let n_batch = n_batch.max(512) as u32;
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx as u32))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_threads(t)
        .with_n_threads_batch(t)
        .with_flash_attention_policy(args.flash_attn.raw())
}

/// One llama.cpp run in a fresh context: (pp tok/s, tg tok/s).
fn llama_once(args: &Args, backend: &LlamaBackend, model: &LlamaModel, prompt: &[u32], tg: usize) -> Result<(f64, f64)> {
    let ctx_params = context_params(args, prompt.len() + tg + 1, prompt.len());
    let mut ctx = model.new_context(backend, ctx_params).context("llama.cpp: new context")?;
    let mut batch = LlamaBatch::new(prompt.len().max(1), 1);
    for (i, &t) in prompt.iter().enumerate() {
        batch.add(LlamaToken::new(t as i32), i as i32, &[0], i + 1 == prompt.len())?;
    }
    let t0 = Instant::now();
    ctx.decode(&mut batch).context("llama.cpp: prefill")?;
    let mut next = argmax(ctx.get_logits_ith(batch.n_tokens() - 1));
    let pp_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for step in 0..tg {
        batch.clear();
        batch.add(LlamaToken::new(next as i32), (prompt.len() + step) as i32, &[0], true)?;
        ctx.decode(&mut batch).context("llama.cpp: decode")?;
        next = argmax(ctx.get_logits_ith(0));
    }
    let tg_secs = t1.elapsed().as_secs_f64();
    Ok((prompt.len() as f64 / pp_secs, if tg == 0 { 0.0 } else { tg as f64 / tg_secs }))
}

/// Medians and ranges over the runs of one engine/policy.
struct Row {
    key: &'static str,
    label: String,
    samples: Vec<BenchSample>,
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n == 0 { f64::NAN } else if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    (med, s.first().copied().unwrap_or(f64::NAN), s.last().copied().unwrap_or(f64::NAN))
}

impl Row {
    fn pp(&self) -> (f64, f64, f64) {
        stats(&self.samples.iter().map(|s| s.pp_tok_s).collect::<Vec<_>>())
    }
    fn tg(&self) -> (f64, f64, f64) {
        stats(&self.samples.iter().map(|s| s.tg_tok_s).collect::<Vec<_>>())
    }
    fn skip(&self) -> (f64, f64) {
        let all = stats(&self.samples.iter().map(|s| s.ffn_skip_ratio).collect::<Vec<_>>()).0;
        let post = stats(&self.samples.iter().map(|s| s.ffn_skip_ratio_post_warmup).collect::<Vec<_>>()).0;
        (all, post)
    }
    fn to_json(&self) -> Value {
        let (pp, pp_min, pp_max) = self.pp();
        let (tg, tg_min, tg_max) = self.tg();
        let mut v = json!({
            "label": self.label,
            "runs": self.samples.len(),
            "pp_tok_s": pp, "pp_min": pp_min, "pp_max": pp_max,
            "tg_tok_s": tg, "tg_min": tg_min, "tg_max": tg_max,
            "pp_samples": self.samples.iter().map(|s| s.pp_tok_s).collect::<Vec<_>>(),
            "tg_samples": self.samples.iter().map(|s| s.tg_tok_s).collect::<Vec<_>>(),
        });
        if self.key != "llamacpp" {
            let (all, post) = self.skip();
            v["ffn_skip_ratio"] = json!(all);
            v["ffn_skip_ratio_post_warmup"] = json!(post);
        }
        v
    }
}

fn bench(args: &Args, engine: &Engine, backend: &LlamaBackend, lmodel: &LlamaModel) -> Result<Vec<Row>> {
    let (pp, tg) = (args.pp as usize, args.tg as usize);
    let prompt = prompt_tokens(engine, &args.text, pp)?;
    let specs: Vec<PolicySpec> = POLICIES.iter().map(|(_, s)| s.parse()).collect::<ffnskip::Result<_>>()?;
    let cfg = EvalConfig {
        engine,
        policies: specs.clone(),
        calibration: None,
        out: std::env::temp_dir(),
        command: "peer-bench".into(),
    };
    let mut rows = vec![Row { key: "llamacpp", label: "llama.cpp (llama-cpp-2 0.1.160)".into(), samples: Vec::new() }];
    for ((key, _), spec) in POLICIES.iter().zip(&specs) {
        rows.push(Row { key, label: format!("ffnskip {spec}"), samples: Vec::new() });
    }
    let pause = Duration::from_millis(args.pause_ms);
    let rounds = args.runs as usize + usize::from(!args.no_warmup);
    for round in 0..rounds {
        let timed = args.no_warmup || round > 0;
        let tag = if timed { format!("run {}/{}", round + usize::from(args.no_warmup), args.runs) } else { "warm-up".into() };
        std::thread::sleep(pause);
        let (pp_r, tg_r) = llama_once(args, backend, lmodel, &prompt, tg)?;
        eprintln!("{tag}: llama.cpp pp {pp_r:.1} tg {tg_r:.1} tok/s");
        if timed {
            rows[0].samples.push(BenchSample {
                pp_tok_s: pp_r,
                tg_tok_s: tg_r,
                ffn_skip_ratio: 0.0,
                ffn_skip_ratio_post_warmup: 0.0,
            });
        }
        for (i, spec) in specs.iter().enumerate() {
            std::thread::sleep(pause);
            let s = bench_once(&cfg, spec, &prompt, tg)?;
            eprintln!(
                "{tag}: ffnskip {spec} pp {:.1} tg {:.1} tok/s, FFN skip {:.3} (post-warm-up {:.3})",
                s.pp_tok_s, s.tg_tok_s, s.ffn_skip_ratio, s.ffn_skip_ratio_post_warmup
            );
            if timed {
                rows[i + 1].samples.push(s);
            }
        }
    }
    Ok(rows)
}

fn table(rows: &[Row], meta: &Value, args: &Args) -> String {
    let llama_tg = rows[0].tg().0;
    let llama_pp = rows[0].pp().0;
    let mut out = format!(
        "machine: {} · threads: {} · commit: {} · pp{} / tg{} · {} runs (interleaved, +1 warm-up: {}) · llama.cpp flash-attn: {}\n\n",
        meta["machine"].as_str().unwrap_or("?"),
        args.threads,
        meta["commit"].as_str().unwrap_or("?"),
        args.pp,
        args.tg,
        args.runs,
        !args.no_warmup,
        meta["flash_attn"].as_str().unwrap_or("?"),
    );
    out.push_str(
        "| engine / policy | pp tok/s median (min–max) | pp vs llama.cpp | tg tok/s median (min–max) | tg vs llama.cpp | FFN skip post-warm-up (all steps) |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (pp, pp_min, pp_max) = r.pp();
        let (tg, tg_min, tg_max) = r.tg();
        let skip = if r.key == "llamacpp" || r.key == "ffnskip_dense" {
            "–".to_string()
        } else {
            let (all, post) = r.skip();
            format!("{post:.3} ({all:.3})")
        };
        out.push_str(&format!(
            "| {} | {pp:.1} ({pp_min:.1}–{pp_max:.1}) | {:.2}× | {tg:.1} ({tg_min:.1}–{tg_max:.1}) | {:.2}× | {skip} |\n",
            r.label,
            pp / llama_pp,
            tg / llama_tg,
        ));
    }
    out
}

/// Greedy decode of up to `n` tokens with llama.cpp, stopping at end-of-generation tokens like
/// `llama-simple`; returns the generated token ids and their text (special tokens rendered).
fn llama_greedy(
    args: &Args,
    backend: &LlamaBackend,
    model: &LlamaModel,
    prompt: &[LlamaToken],
    n: usize,
) -> Result<(Vec<u32>, String)> {
    let vocab = model.vocab();
    let ctx_params = context_params(args, prompt.len() + n + 1, prompt.len());
    let mut ctx: LlamaContext = model.new_context(backend, ctx_params).context("llama.cpp: new context")?;
    let mut batch = LlamaBatch::new(prompt.len().max(1), 1);
    for (i, &t) in prompt.iter().enumerate() {
        batch.add(t, i as i32, &[0], i + 1 == prompt.len())?;
    }
    ctx.decode(&mut batch).context("llama.cpp: prefill")?;
    let mut logits_index = batch.n_tokens() - 1;
    let (mut ids, mut bytes) = (Vec::new(), Vec::new());
    for step in 0..n {
        let next = LlamaToken::new(argmax(ctx.get_logits_ith(logits_index)) as i32);
        if vocab.is_eog(next) {
            break;
        }
        ids.push(next.0 as u32);
        bytes.extend(vocab.token_to_piece(next, true, None));
        if step + 1 == n {
            break;
        }
        batch.clear();
        batch.add(next, (prompt.len() + step) as i32, &[0], true)?;
        ctx.decode(&mut batch).context("llama.cpp: decode")?;
        logits_index = 0;
    }
    Ok((ids, String::from_utf8_lossy(&bytes).into_owned()))
}

fn greedy_check(args: &Args, engine: &Engine, backend: &LlamaBackend, lmodel: &LlamaModel, n: usize) -> Result<Value> {
    let text = std::fs::read_to_string(&args.reference).with_context(|| format!("reading {}", args.reference.display()))?;
    let vocab = lmodel.vocab();
    let (mut llama_ref, mut llama_ffn, mut ffn_ref, mut same_prompt_ids) = (0, 0, 0, 0);
    let mut items = Vec::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    println!("greedy check: {} prompts, {n} tokens, llama.cpp flash-attn {:?}, f16 KV cache", lines.len(), args.flash_attn);
    println!("| # | kind | prompt ids equal | llama.cpp = ref | llama.cpp = ffnskip | ffnskip = ref | first differing token (llama.cpp vs ffnskip) |");
    println!("|---|---|---|---|---|---|---|");
    let parsed: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("reference line {}", i + 1)))
        .collect::<Result<_>>()?;
    // All llama.cpp generations first, then all ffnskip ones: interleaving them on 2 cores lets
    // one engine's spinning worker threads (candle's barrier pool, OpenMP) stall the other's.
    let mut llama_out = Vec::new();
    for item in &parsed {
        let prompt = item["prompt"].as_str().context("prompt")?;
        // Raw text with chat special tokens written in it: parse specials, add no BOS.
        let lprompt = vocab.tokenize(prompt.as_bytes(), false, true);
        let (lids, ltext) = llama_greedy(args, backend, lmodel, &lprompt, n)?;
        llama_out.push((lprompt, lids, ltext));
    }
    std::thread::sleep(Duration::from_millis(args.pause_ms));
    for (i, (item, (lprompt, lids, ltext))) in parsed.iter().zip(llama_out).enumerate() {
        let prompt = item["prompt"].as_str().context("prompt")?;
        let n_predict = item["n_predict"].as_u64().unwrap_or(0) as usize;
        let reference = item["greedy_completion"].as_str().context("greedy_completion")?;
        let reference = reference.strip_suffix('\n').unwrap_or(reference);

        let fprompt = engine.tokenizer.encode(prompt)?;
        let mut session = Session::new(&engine.model, Some(fprompt.len() + n + 1))?;
        let opts = GenerateOptions { max_tokens: n, ..Default::default() };
        let gen = generate(&mut session, &engine.tokenizer, &fprompt, &opts, &mut Dense, &mut |_| {})?;

        let ids_equal = lprompt.iter().map(|t| t.0 as u32).eq(fprompt.iter().copied());
        let first_diff = lids.iter().zip(&gen.tokens).position(|(a, b)| a != b).or_else(|| {
            (lids.len() != gen.tokens.len()).then_some(lids.len().min(gen.tokens.len()))
        });
        let (lr, lf, fr) = (ltext == reference, ltext == gen.text, gen.text == reference);
        llama_ref += usize::from(lr);
        llama_ffn += usize::from(lf);
        ffn_ref += usize::from(fr);
        same_prompt_ids += usize::from(ids_equal);
        let yn = |b: bool| if b { "yes" } else { "NO" };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            item["kind"].as_str().unwrap_or("?"),
            yn(ids_equal),
            yn(lr),
            yn(lf),
            yn(fr),
            first_diff.map_or("–".to_string(), |p| p.to_string())
        );
        items.push(json!({
            "index": i + 1,
            "kind": item["kind"],
            "n_predict_reference": n_predict,
            "prompt_ids_equal": ids_equal,
            "llamacpp_matches_reference": lr,
            "llamacpp_matches_ffnskip": lf,
            "ffnskip_matches_reference": fr,
            "first_differing_token": first_diff,
            "llamacpp_text": ltext,
            "ffnskip_text": gen.text,
            "reference_text": reference,
        }));
    }
    let total = lines.len();
    println!(
        "\nllama.cpp (built here) = reference: {llama_ref}/{total} · llama.cpp = ffnskip dense: {llama_ffn}/{total} · ffnskip dense = reference: {ffn_ref}/{total} · prompt token ids equal: {same_prompt_ids}/{total}"
    );
    if lines.iter().any(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v["n_predict"].as_u64()) != Some(n as u64)) {
        println!("note: N = {n} differs from some reference n_predict; matches against the reference are then not meaningful");
    }
    Ok(json!({
        "n": n,
        "prompts": total,
        "llamacpp_matches_reference": llama_ref,
        "llamacpp_matches_ffnskip": llama_ffn,
        "ffnskip_matches_reference": ffn_ref,
        "prompt_ids_equal": same_prompt_ids,
        "items": items,
    }))
}
