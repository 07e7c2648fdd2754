#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (libFuzzer through cargo-fuzz, on stable Rust
# without sanitizers) and prints one row per target: executions, corpus size, crashes.
# The corpus grows in fuzz/corpus/TARGET and is kept; a crash leaves its input in
# fuzz/artifacts/TARGET and makes the script exit 1.
#   usage: bench/fuzz.sh [seconds=600] [target...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-600}; shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v '^agora-fuzz$')
cargo fuzz build -s none -O "${targets[@]/#/}" >/dev/null 2>&1 || cargo fuzz build -s none -O
printf '%-16s %8s %14s %8s %8s\n' TARGET SECONDS EXECUTIONS CORPUS CRASHES
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if cargo fuzz run -s none -O "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 >"$log" 2>&1; then
    crashes=0
  else
    crashes=1; failed=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  printf '%-16s %8s %14s %8s %8s\n' "$t" "$SECS" "${execs:-?}" "$(ls "corpus/$t" | wc -l)" "$crashes"
  if ((crashes)); then grep -m1 -A8 "panicked" "$log" >&2 || true; grep -A2 "Reproduce with" "$log" >&2 || tail -30 "$log" >&2; fi
  rm -f "$log"
done
exit $failed
