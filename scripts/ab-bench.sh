#!/usr/bin/env bash
# A/B speed of two ffnskip binaries (e.g. two commits): `ffnskip bench` of each, alternated run
# by run so both see the same machine load; prints the median (min-max) of prefill and decode
# tok/s per binary and the median of the per-round decode ratios B/A.
#
#   scripts/ab-bench.sh [--threads T] [--runs N] [--policy SPEC] BIN_A BIN_B
#   git worktree add /tmp/old <rev> && (cd /tmp/old && cargo build --release)
#   scripts/ab-bench.sh --threads 2 --runs 7 /tmp/old/target/release/ffnskip target/release/ffnskip
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 runs=5 policy=dense
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --policy) policy=$2; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
[[ $# -eq 2 ]] || { echo "usage: $0 [--threads T] [--runs N] [--policy SPEC] BIN_A BIN_B" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for run in $(seq "$runs"); do
    for side in A B; do
        bin=$1; [[ $side == A ]] || bin=$2
        "$bin" bench --threads "$threads" --runs 1 --policies "$policy" --json "$out/$side.$run.json" >/dev/null 2>&1
    done
done
python3 - "$out" "$runs" "$1" "$2" "$threads" "$policy" <<'EOF'
import json, statistics, sys
out, runs, a, b, threads, policy = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
def row(side, run):
    data = json.load(open(f"{out}/{side}.{run}.json"))
    rows = data["rows"] if isinstance(data, dict) else data
    r = rows[-1]
    return r["pp_tok_s"], r["tg_tok_s"]
vals = {s: [row(s, i) for i in range(1, runs + 1)] for s in "AB"}
def fmt(xs):
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"
print(f"threads {threads}, policy {policy}, {runs} alternated runs")
for s, name in (("A", a), ("B", b)):
    print(f"{s} {name}: pp {fmt([v[0] for v in vals[s]])}  tg {fmt([v[1] for v in vals[s]])}")
ratios = [vb[1] / va[1] for va, vb in zip(vals["A"], vals["B"])]
print(f"tg B/A per round: median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
EOF
