#!/usr/bin/env bash
# A longer fault soak than CI's: the fault tests (server SIGKILL rounds, failing and slow
# store, full tmpfs, network cuts, PostgreSQL restart, agent SIGKILL with spool recovery)
# repeated, with many more server kills per run. Needs root (tmpfs mount, a private
# PostgreSQL cluster run as user postgres), like CI.
#   ops/soak.sh [ITERATIONS] [KILL_ROUNDS]     default 5 iterations of 200 kills
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-5}
rounds=${2:-200}
for i in $(seq 1 "$iterations"); do
  echo "== soak iteration $i/$iterations: $rounds server kills"
  SEALSTREAM_FAULT_ROUNDS=$rounds cargo test --test faults -- --nocapture --test-threads=1 2>&1 \
    | grep -E "^test |verified|SIGKILL|panicked|test result"
done
