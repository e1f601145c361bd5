#!/usr/bin/env bash
# Peer benchmark: llama.cpp (built from source through the `llama-cpp-2` crate, bench-only
# workspace member `peer/`) and ffnskip (dense, ffnskip@0.25, ffnskip@0.3) timed side by side on
# the same GGUF, prompt token ids and thread count, llama-bench style (pp128 prefill, tg128 greedy
# decode), runs interleaved. Prints a markdown table; --json FILE writes the numbers.
#
#   scripts/peer-bench.sh [--threads N] [--runs N] [--pp N] [--tg N] [--json FILE] [other peer-bench flags]
#   scripts/peer-bench.sh --greedy-check 48      # llama.cpp/ffnskip/reference greedy agreement
#
# Installs the system packages the llama.cpp build needs (cmake, a C/C++ compiler, libclang for
# bindgen) when missing, builds `cargo build --release -p peer` (the first build compiles llama.cpp:
# 10+ minutes on 2 cores) and runs target/release/peer-bench from the repository root. The default
# model is ffnskip's, cached in $FFNSKIP_HOME (else ~/.cache/ffnskip).
set -euo pipefail
cd "$(dirname "$0")/.."

have_libclang() {
    [[ -n ${LIBCLANG_PATH:-} ]] && return 0
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
command -v c++ >/dev/null || missing+=(g++)
command -v git >/dev/null || missing+=(git)
command -v clang >/dev/null || missing+=(clang)
have_libclang || missing+=(libclang-dev)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "peer-bench: installing ${missing[*]}" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "peer-bench: cargo build --release -p peer" >&2
cargo build --release -p peer
exec target/release/peer-bench "$@"
