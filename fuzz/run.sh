#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 10) from its committed corpus, one after another.
# CI runs it briefly; before an issue about decoders closes it runs for 600 s or more a target.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (needs `cargo install cargo-fuzz`)
# The stable toolchain is enough: RUSTC_BOOTSTRAP lets it take the -Z flags cargo-fuzz passes.
# FUZZ_SANITIZER (default address) is passed to cargo fuzz -s: CI's brief run uses none, which
# builds in 30 % less time; the decoders are safe Rust, so panics, hangs and memory blow-ups,
# which libFuzzer catches without a sanitizer, are what it looks for.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
export RUSTC_BOOTSTRAP=1
san=${FUZZ_SANITIZER:-address}
cargo fuzz build -O -s "$san"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${seconds}s"
  # -timeout: an input that takes over 10 s is a finding (a decoder must not hang on bytes).
  cargo fuzz run -O -s "$san" "$t" "corpus/$t" -- -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+ +DONE|Done|stat::|==|SUMMARY|thread|panicked)" || true
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "FOUND in $t: $(ls artifacts/$t)"; exit 1
  fi
done
