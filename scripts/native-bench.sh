#!/usr/bin/env bash
# ffnskip against natively built llama.cpp (upstream 0c1e570, `-march=native` minus AMX, from
# ../shared/tools/llamacpp-native.sh) on the same model file, thread count and pp/tg sizes,
# llama-bench against `ffnskip bench`, alternated run by run so both see the same machine.
# Prints, per model and thread count, the medians (min-max) of prefill and decode tok/s and the
# median of the per-round ratios ffnskip/llama.cpp; ffnskip rows for every --policies spec.
#
#   scripts/native-bench.sh [--runs N] [--threads "1 2"] [--pp 128] [--tg 64] [--policies P] [--json F] MODEL...
#   scripts/native-bench.sh --runs 5 smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b
#
# MODEL is a catalogue name (fetched on first use) or a GGUF path.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5 threads="1 2" pp=128 tg=64 policies=dense json=
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --pp) pp=$2; shift 2 ;;
        --tg) tg=$2; shift 2 ;;
        --policies) policies=$2; shift 2 ;;
        --json) json=$2; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--runs N] [--threads \"1 2\"] [--pp N] [--tg N] [--policies P] [--json F] MODEL..." >&2; exit 2; }
ffnskip=target/release/ffnskip
[[ -x $ffnskip ]] || cargo build --release
bin=$(../shared/tools/llamacpp-native.sh llama-bench)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for model in "$@"; do
    path=$($ffnskip fetch --model "$model")
    key=$(basename "$path" .gguf)
    for t in $threads; do
        for run in $(seq "$runs"); do
            "$bin/llama-bench" -m "$path" -t "$t" -p "$pp" -n "$tg" -r 1 -o json >"$out/$key.$t.$run.llama.json" 2>/dev/null
            $ffnskip bench --model "$path" --threads "$t" --runs 1 --pp "$pp" --tg "$tg" --policies "$policies" \
                --json "$out/$key.$t.$run.ffnskip.json" >/dev/null 2>&1
        done
    done
done
python3 - "$out" "$runs" "$json" "$(uname -m)" "$(nproc)" <<'EOF'
import glob, json, statistics, sys
out, runs, json_out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def med(xs): return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"
rows = []
groups = sorted({(".".join(f.split("/")[-1].split(".")[:-4]), f.split(".")[-4]) for f in glob.glob(f"{out}/*.llama.json")})
print("| model | threads | engine | prefill tok/s | decode tok/s | decode ratio to llama.cpp | prefill ratio |")
print("|---|---|---|---|---|---|---|")
for key, t in groups:
    llama = {"pp": [], "tg": []}
    ours = {}
    for run in range(1, runs + 1):
        for r in json.load(open(f"{out}/{key}.{t}.{run}.llama.json")):
            kind = "pp" if r["n_prompt"] > 0 else "tg"
            llama[kind].append(r["avg_ts"])
        for r in json.load(open(f"{out}/{key}.{t}.{run}.ffnskip.json")):
            ours.setdefault(r["policy"], []).append((r["pp_tok_s"], r["tg_tok_s"], r))
    print(f"| {key} | {t} | llama.cpp | {med(llama['pp'])} | {med(llama['tg'])} | 1 | 1 |")
    row = {"model": key, "threads": int(t), "llama_pp": llama["pp"], "llama_tg": llama["tg"], "ffnskip": {}}
    for policy, vals in ours.items():
        pp = [v[0] for v in vals]; tg = [v[1] for v in vals]
        tg_ratio = statistics.median(a / b for a, b in zip(tg, llama["tg"]))
        pp_ratio = statistics.median(a / b for a, b in zip(pp, llama["pp"]))
        print(f"| {key} | {t} | ffnskip {policy} | {med(pp)} | {med(tg)} | {tg_ratio:.2f}x | {pp_ratio:.2f}x |")
        row["ffnskip"][policy] = {"pp": pp, "tg": tg, "skip": [v[2].get("ffn_skip_ratio") for v in vals]}
    rows.append(row)
if json_out:
    json.dump(rows, open(json_out, "w"), indent=1)
EOF
