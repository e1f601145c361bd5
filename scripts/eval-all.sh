#!/usr/bin/env bash
# The full evaluation behind docs/RESULTS.md for one model (issues 4 and 15): a calibration on a
# text no task uses (its layer means feed static and layer-drop, its per-layer thresholds
# ffnskip's tau=per-layer variant), the tasks for every policy, then the report. Runs are
# resumable: rerunning continues where an interrupted run stopped.
#
#   scripts/eval-all.sh [--model NAME] [--threads T] [--tasks perplexity,factoid,chat,code]
#                       [--factoid N] [--windows N] [--chat N] [--code N] [--out DIR]
#                       [--side-by-side]
#
# Results go to DIR (default docs/runs/MODEL/TASK). Perplexity always decodes a window's
# policies side by side (its speeds are not what it measures); --side-by-side does the same
# for the generation tasks, whose decode speeds are then left out (measure them with
# `ffnskip bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
model=smollm2-135m threads=2 tasks=perplexity,factoid,chat,code factoid=500 windows=40 chat=80 code=82 out= together=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --model) model=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --tasks) tasks=$2; shift 2 ;;
        --factoid) factoid=$2; shift 2 ;;
        --windows) windows=$2; shift 2 ;;
        --chat) chat=$2; shift 2 ;;
        --code) code=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --side-by-side) together=(--side-by-side); shift ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done
cargo build --release --quiet
bin=target/release/ffnskip
data=../shared/data
runs=${out:-docs/runs/$model}
mkdir -p "$runs"
calibration=$runs/calibration.json
[[ -f $calibration ]] ||
    "$bin" calibrate --model "$model" --threads "$threads" --text "$data/text/tinyshakespeare.txt" \
        --target-ratio 0.25 --per-layer --out "$calibration"
per_layer=ffnskip@0.1:tau=per-layer,ffnskip@0.2:tau=per-layer,ffnskip@0.25:tau=per-layer,ffnskip@0.3:tau=per-layer
policies="dense,ffnskip@0.1,ffnskip@0.2,ffnskip@0.25,ffnskip@0.3,$per_layer,random@0.25,no-adaptive@0.25,fixed-start@0.25,static@0.25,layer-early-exit@0.15,layer-drop@0.15"
common=(--model "$model" --threads "$threads" --policies "$policies" --skip-config "$calibration")
for task in ${tasks//,/ }; do
    case $task in
        perplexity) "$bin" eval perplexity "${common[@]}" --side-by-side --data "$data/text/wikitext2-valid.tokens.txt" --windows "$windows" --out "$runs/perplexity" ;;
        factoid) "$bin" eval factoid "${common[@]}" "${together[@]}" --data "$data/freebaseqa/dev.txt" --limit "$factoid" --out "$runs/factoid" ;;
        chat) "$bin" eval chat "${common[@]}" "${together[@]}" --data "$data/mtbench/question.jsonl" --limit "$chat" --out "$runs/chat" ;;
        code) "$bin" eval code "${common[@]}" "${together[@]}" --data "$data/humaneval/dev.jsonl" --limit "$code" --out "$runs/code" ;;
        *) echo "unknown task $task" >&2; exit 2 ;;
    esac
done
"$bin" report "$runs" --out "$runs/RESULTS.md"
