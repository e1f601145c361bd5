#!/usr/bin/env bash
# Where decode time goes: samples `ffnskip bench` (dense, 3 runs of a 16-token WikiText prompt and
# 384 greedy tokens, so prefill is a few percent of the samples) with perf and groups the sampled
# functions by op class. Needs `perf` (linux-perf).
#
#   scripts/profile-decode.sh [--threads T] [--binary PATH]
#
# Prints one line per class with its share of all samples (all threads). Functions the compiler
# inlined into iterator adapters (activation quantisation, RMSNorm, residual adds, RoPE) show up
# as `core::iter` symbols and are counted as "element-wise (quantisation, norms, RoPE, adds)".
set -euo pipefail
cd "$(dirname "$0")/.."
threads=1 bin=target/release/ffnskip
while [[ $# -gt 0 ]]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --binary) bin=$2; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
[[ $bin != target/release/ffnskip ]] || cargo build --release --quiet
data=$(mktemp)
trap 'rm -f "$data"' EXIT
perf record -q -o "$data" -F 2000 "$bin" bench --threads "$threads" --policies dense --runs 3 \
    --pp 16 --tg 384 >/dev/null 2>&1
echo "binary: $bin; threads: $threads; $(nproc) cores"
perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null |
    awk '/^ +[0-9.]+%/ {
        pct = $1; sub(/%/, "", pct); $1 = ""; sym = $0
        if (sym ~ /tile_q4_1/) c = "mat-vec Q4_1 (all layer products)"
        else if (sym ~ /tile_q8_0/) c = "mat-vec Q8_0 (the LM head)"
        else if (sym ~ /tile_q4_0|tile_q4_k|tile_q6_k/) c = "mat-vec other types"
        else if (sym ~ /kernels::product|kernels::matvec|Tiles/) c = "product set-up and tile loops"
        else if (sym ~ /numerics|attention/) c = "attention (scores, softmax, weighted sum)"
        else if (sym ~ /pool::|spin_loop|sched_yield|futex|park/) c = "thread synchronisation (pool)"
        else if (sym ~ /malloc|free|memset|memmove|memcpy|realloc|page_fault|clear_page/) c = "allocation, copies, page faults"
        else if (sym ~ /core::iter|core::ops|LocalKey|quantize|rms_norm|Rope|silu|add_assign/) c = "element-wise (quantisation, norms, RoPE, adds)"
        else if (sym ~ /\[k\]/) c = "kernel (other)"
        else c = "other"
        share[c] += pct
    }
    END { for (c in share) printf "%6.1f%%  %s\n", share[c], c }' | sort -rn
