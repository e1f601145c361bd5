#!/usr/bin/env bash
# Decode and prefill speed of `ffnskip generate` on the default model, policies interleaved in one
# run so their ratio is fair on a noisy machine. Prints the median (min–max) of N runs and the
# realised skip ratios.
#
#   scripts/bench-generate.sh [--threads T] [--runs N] [--tokens K] [POLICY_SPEC ...]
#   scripts/bench-generate.sh --threads 2 --runs 5 dense ffnskip@0.25 ffnskip@0.3
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 runs=5 tokens=128
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --tokens) tokens=$2; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
policies=("$@")
[[ ${#policies[@]} -gt 0 ]] || policies=(dense ffnskip@0.25 ffnskip@0.3)
cargo build --release --quiet
bin=target/release/ffnskip
# A ~128-token prompt for prefill, raw text so the model keeps writing.
prompt="$(head -c 2000 ../shared/data/text/wikitext2-valid.tokens.txt | tr -s ' \n' ' ' | cut -c1-560)"
out=$(mktemp -d)
for run in $(seq "$runs"); do
    for p in "${policies[@]}"; do
        "$bin" generate --threads "$threads" --prompt "$prompt" --max-tokens "$tokens" --policy "$p" \
            --stats-json "$out/$p.$run.json" >/dev/null 2>&1
    done
done
python3 - "$out" "$threads" "$runs" "${policies[@]}" <<'PY'
import json, statistics, sys, glob
out, threads, runs, policies = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
print(f"threads={threads} runs={runs}")
print(f"{'policy':<16} {'prompt':>6} {'pp tok/s median (min-max)':>28} {'tg tok/s median (min-max)':>28} {'skip all':>8} {'skip post':>9} {'tg/dense':>8}")
dense_tg = None
for p in policies:
    rows = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{p}.*.json"))]
    pp = [r["prefill_tok_s"] for r in rows]; tg = [r["decode_tok_s"] for r in rows]
    med = statistics.median(tg)
    if dense_tg is None: dense_tg = med
    print(f"{p:<16} {rows[0]['prompt_tokens']:>6} {statistics.median(pp):>10.1f} ({min(pp):.1f}-{max(pp):.1f}) {med:>12.1f} ({min(tg):.1f}-{max(tg):.1f}) "
          f"{rows[0].get('ffn_skip_ratio', 0):>8.3f} {rows[0].get('ffn_skip_ratio_post_warmup', 0):>9.3f} {med/dense_tg:>8.3f}")
PY
