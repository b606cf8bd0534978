#!/usr/bin/env bash
# The fault soak (not in CI): tests/it/soak.rs runs the fault matrix round after round against one
# `sealstream serve` process on a private PostgreSQL cluster, with the export checker after
# every round. Three quarters of the rounds keep one server process through segment writes
# failing and slow (failpoints), a full store disk, network cuts, PostgreSQL stopped and
# restarted, an unknown KEK registered late and an agent killed with SIGKILL and drained, and
# sample its RSS; the rest kill the server with SIGKILL mid-round. Needs root (a tmpfs, a
# cluster run as user postgres), like CI.
#   ops/soak.sh [ROUNDS]          default 200
# For many more server kills in one run: SEALSTREAM_FAULT_ROUNDS=200 cargo test --test it faults::
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-200}
SEALSTREAM_SOAK_ROUNDS=$rounds cargo test --release --features failpoints --test it soak:: \
  -- --nocapture 2>&1 | grep -E "^round|^soak|panicked|test result"
