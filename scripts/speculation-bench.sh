#!/usr/bin/env bash
# The eval runs behind docs/SPECULATION.md: dense and lossless speculation with each draft kind,
# side by side per prompt (eval chat runs every policy on one prompt before the next), on
# MT-Bench first turns and on the input-grounded prompts in data/grounded/.
#
#   scripts/speculation-bench.sh [THREADS] [QWEN_CHAT_LIMIT]
#
# Writes docs/runs/speculation/<model>/{mt-bench,grounded}/ (an existing run is resumed).
# Pin it to cores with taskset when something else runs on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
qwen_chat_limit=${2:-80}
bin=target/release/ffnskip
cargo build --release --quiet

drafts="speculate:ffnskip@0.5,speculate:layer-early-exit@0.5,speculate:ngram,speculate:ngram+ffnskip@0.5"
grounded="speculate:ngram,speculate:ngram+ffnskip@0.5"

run() { # MODEL SET DATA LIMIT POLICIES
    "$bin" eval chat --model "$1" --threads "$threads" --data "$3" --limit "$4" --max-tokens 256 \
        --policies "dense,$5" --out "docs/runs/speculation/$1/$2"
}

run qwen2.5-coder-1.5b grounded data/grounded/prompts.jsonl 20 "$grounded"
run smollm2-135m grounded data/grounded/prompts.jsonl 20 "$grounded"
run smollm2-135m mt-bench ../shared/data/mtbench/question.jsonl 80 "$drafts"
run qwen2.5-coder-1.5b mt-bench ../shared/data/mtbench/question.jsonl "$qwen_chat_limit" "$drafts"
