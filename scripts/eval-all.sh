#!/usr/bin/env bash
# The full evaluation behind docs/RESULTS.md (issue 4): calibration for the static and layer-drop
# baselines, the three tasks for every policy, then the report. Runs are resumable: rerunning
# continues where an interrupted run stopped.
#
#   scripts/eval-all.sh [--threads T] [--factoid N] [--windows N] [--chat N]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 factoid=500 windows=40 chat=80
while [[ $# -gt 0 ]]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --factoid) factoid=$2; shift 2 ;;
        --windows) windows=$2; shift 2 ;;
        --chat) chat=$2; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
cargo build --release --quiet
bin=target/release/ffnskip
data=../shared/data
runs=docs/runs
mkdir -p "$runs"
# Layer choices of static/layer-drop come from a text the tasks do not use.
[[ -f $runs/calibration.json ]] ||
    "$bin" calibrate --threads "$threads" --text "$data/text/tinyshakespeare.txt" --target-ratio 0.25 --out "$runs/calibration.json"
policies="dense,ffnskip@0.1,ffnskip@0.2,ffnskip@0.25,ffnskip@0.3,ffnskip@0.35,random@0.25,no-adaptive@0.25,static@0.25,layer-early-exit@0.15,layer-drop@0.15"
common=(--threads "$threads" --policies "$policies" --skip-config "$runs/calibration.json")
"$bin" eval perplexity "${common[@]}" --data "$data/text/wikitext2-valid.tokens.txt" --windows "$windows" --out "$runs/perplexity"
"$bin" eval factoid "${common[@]}" --data "$data/freebaseqa/dev.txt" --limit "$factoid" --out "$runs/factoid"
"$bin" eval chat "${common[@]}" --data "$data/mtbench/question.jsonl" --limit "$chat" --out "$runs/chat"
"$bin" report "$runs" --out docs/RESULTS.md
