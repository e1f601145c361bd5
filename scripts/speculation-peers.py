#!/usr/bin/env python3
"""Speculation against llama.cpp's own: ffnskip --speculate beside llama-lookup (n-gram drafts)
and llama-speculative-simple (a draft model), on the same prompts, model file and threads, greedy,
run prompt by prompt in alternation so every engine sees the same machine.

    scripts/speculation-peers.py [--threads 2] [--limit 20] [--max-tokens 256]
        [--data data/grounded/prompts.jsonl] [--draft-model NAME] [--json F] MODEL

MODEL (and --draft-model, the small model llama-speculative-simple drafts with) are catalogue
names or GGUF paths. Each prompt is sent as the same raw ChatML text to every engine (the user
turn after a one-line system turn), so all engines decode the same tokens. Per configuration it
prints the generated tokens, decode seconds and tok/s summed over the prompts, and the speed-up
over the same engine's plain decoding in the same harness (ffnskip dense, llama-lookup with no
draft). Needs the binaries of ../shared/tools/llamacpp-native.sh (built on first use).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM = "You are a helpful assistant."


def sh(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def chatml(user):
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def ffnskip(args, model, prompt, spec):
    with tempfile.NamedTemporaryFile(suffix=".json") as stats:
        cmd = ["target/release/ffnskip", "generate", "-m", model, "-t", str(args.threads), "-p", prompt,
               "-n", str(args.max_tokens), "--stats-json", stats.name]
        if spec != "dense":
            cmd += ["--speculate", spec]
        r = sh(cmd)
        if r.returncode != 0:
            sys.exit(f"ffnskip failed: {r.stderr}")
        s = json.load(open(stats.name))
    return s["generated_tokens"], s["decode_secs"], s["decode_steps"]


def llama(binary, args, model, prompt, extra):
    r = sh([binary, "-m", model, "-p", prompt, "-n", str(args.max_tokens), "-t", str(args.threads),
            "--temp", "0", "-c", "4096"] + extra)
    m = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", r.stderr + r.stdout)
    if not m:
        sys.exit(f"{binary} printed no timing: {r.stderr[-2000:]}")
    return int(m.group(1)), float(m.group(2))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--data", default="data/grounded/prompts.jsonl")
    p.add_argument("--draft-model")
    p.add_argument("--ffnskip-drafts", default="ngram")
    p.add_argument("--json")
    args = p.parse_args()
    bins = sh(["../shared/tools/llamacpp-native.sh", "llama-lookup", "llama-speculative-simple"]).stdout.strip()
    path = sh(["target/release/ffnskip", "fetch", "--model", args.model]).stdout.strip()
    draft_path = sh(["target/release/ffnskip", "fetch", "--model", args.draft_model]).stdout.strip() if args.draft_model else None
    prompts = [json.loads(l)["turns"][0] for l in open(os.path.join(ROOT, args.data)) if l.strip()][: args.limit]
    configs = [("ffnskip", "dense")] + [("ffnskip", f"speculate:{d}") for d in args.ffnskip_drafts.split(",")]
    configs += [("llama-lookup", "no draft"), ("llama-lookup", "n-gram, draft ≤ 3"), ("llama-lookup", "n-gram, draft ≤ 8")]
    if draft_path:
        configs.append(("llama-speculative-simple", f"draft model {args.draft_model}, draft ≤ 8"))
    totals = {c: [0, 0.0] for c in configs}
    for i, user in enumerate(prompts):
        prompt = chatml(user)
        for c in configs:
            engine, what = c
            if engine == "ffnskip":
                spec = what.removeprefix("speculate:")
                n, secs, steps = ffnskip(args, path, prompt, spec)
                n = steps  # tokens fed after the prompt, as llama.cpp's "decoded" counts them
            elif engine == "llama-lookup":
                k = {"no draft": 0, "n-gram, draft ≤ 3": 3, "n-gram, draft ≤ 8": 8}[what]
                n, secs = llama(f"{bins}/llama-lookup", args, path, prompt, ["--spec-draft-n-max", str(k)])
            else:
                n, secs = llama(f"{bins}/llama-speculative-simple", args, path, prompt,
                                ["-md", draft_path, "--spec-draft-n-max", "8", "-td", str(args.threads)])
            totals[c][0] += n
            totals[c][1] += secs
        print(f"prompt {i + 1}/{len(prompts)} done", file=sys.stderr)
    base = {"ffnskip": totals[("ffnskip", "dense")], "llama-lookup": totals[("llama-lookup", "no draft")],
            "llama-speculative-simple": totals[("llama-lookup", "no draft")]}
    print(f"model: {args.model}; threads: {args.threads}; {len(prompts)} prompts of {args.data}; max {args.max_tokens} tokens; greedy")
    print("| engine | decoding | tokens | decode s | tok/s | vs same engine's plain decoding |")
    print("|---|---|---|---|---|---|")
    rows = []
    for (engine, what), (n, secs) in totals.items():
        b = base[engine]
        rate, base_rate = n / secs, b[0] / b[1]
        print(f"| {engine} | {what} | {n} | {secs:.1f} | {rate:.1f} | {rate / base_rate:.2f}× |")
        rows.append({"engine": engine, "decoding": what, "tokens": n, "decode_secs": secs, "tok_s": rate, "speedup": rate / base_rate})
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
