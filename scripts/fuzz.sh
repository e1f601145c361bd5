#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 30; FUZZ_RUNS=N stops a target earlier
# after N executions), one after another on one core,
# with the limits of docs/RELIABILITY.md: 256 MiB RSS, 1 s per input. New corpus entries go to
# fuzz/corpus/<target>/ (git ignores all but the seed-* files); crashes to fuzz/artifacts/.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
core="${FUZZ_CORE:-1}"
# FUZZ_TARGETS="gguf tokenizer" runs only those.
targets=(${FUZZ_TARGETS:-gguf tokenizer chat_template policy_spec server_request})
# AddressSanitizer's quarantine of freed memory (256 MiB by default) would count against the
# 256 MiB RSS limit and report an out-of-memory that no input causes.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=16:malloc_context_size=0}"
failed=()
cargo +nightly fuzz build -O 2>&1 | tail -n 3
# FUZZ_RESTART_RUNS=N restarts a target's process every N executions until its SECONDS are used,
# each process with the 256 MiB limit: for a target whose memory grows across runs with no input
# at fault (the tokenizer target did, until tokenizers' BPE cache was turned off; docs/RELIABILITY.md).
run_target() {
    local t="$1" budget="$2" runs="$3"
    taskset -c "$core" cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$budget" -runs="$runs" -rss_limit_mb=256 -malloc_limit_mb=256 -timeout=1 \
        -max_len=65536 -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|Done|==[0-9]+==|SUMMARY|.*panicked)|ERROR" || true
}
for t in "${targets[@]}"; do
    echo "fuzz: $t for ${seconds}s"
    if [[ -n "${FUZZ_RESTART_RUNS:-}" ]]; then
        start=$SECONDS
        while (( SECONDS - start < seconds )) && ! compgen -G "artifacts/$t/*" >/dev/null; do
            run_target "$t" $(( seconds - (SECONDS - start) )) "$FUZZ_RESTART_RUNS"
        done
    else
        run_target "$t" "$seconds" "${FUZZ_RUNS:--1}"
    fi
    if compgen -G "artifacts/$t/*" >/dev/null; then
        echo "fuzz: $t found a failure: $(ls "artifacts/$t")" >&2
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: failures in ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
