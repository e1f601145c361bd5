#!/usr/bin/env bash
# Runs the GGUF header pre-scan's tests under Miri (docs/RELIABILITY.md). The module uses only
# std, so it is compiled alone in a scratch crate: Miri then needs no candle, tokenizers (C
# oniguruma, which Miri cannot call) or memory map (an FFI call Miri does not model).
# Needs `rustup +nightly component add miri rust-src`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/src"
printf '[package]\nname = "miri-scan"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n' >"$scratch/Cargo.toml"
printf '#[path = "%s/src/model/gguf_check.rs"]\npub mod gguf_check;\n' "$root" >"$scratch/src/lib.rs"
cd "$scratch"
cargo +nightly miri test --lib
