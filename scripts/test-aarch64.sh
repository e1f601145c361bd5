#!/usr/bin/env bash
# Cross-builds the library's tests for aarch64 and runs them under qemu, so the NEON kernels
# are checked against the scalar oracles from an x86 machine (optional; not part of .ci/run).
#
#   scripts/test-aarch64.sh [TEST_FILTER]
#
# Installs the cross compilers and qemu with apt-get when they are missing. Builds into the
# usual target/ (under target/aarch64-unknown-linux-gnu/), so later runs reuse the build.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

# gcc links and builds onig (tokenizers); g++ builds the bundled freetype (plotters' fonts).
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v aarch64-linux-gnu-g++ >/dev/null \
    || ! command -v qemu-aarch64 >/dev/null || [ ! -d "$SYSROOT/lib" ]; then
    apt-get update -qq
    apt-get install -y -qq gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# .cargo/config.toml asks for target-cpu=native, which here would name the x86 host's CPU;
# a target's own rustflags take precedence over [build] ones. `generic` is aarch64's baseline
# (NEON included); the kernels pick NEON at run time.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-cpu=generic"
# `-cpu max`: every feature qemu emulates, as the newest cores would report them.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu max -L $SYSROOT"

cargo test --release --lib --target "$TARGET" -- "$@"
