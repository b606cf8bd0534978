#!/usr/bin/env bash
# Two builds of `sealstream` under one scenario, alternating, so that a change's cost is read
# against the code before it on the same host in the same hour (docs/benchmarks.md).
#   loadtest/compare-binaries.sh OLD_BIN NEW_BIN [SCENARIO] [ROUNDS]
# Each invocation runs its own transport-only sink, then SQLite and PostgreSQL pipelines
# (PostgreSQL at $SEALSTREAM_LOADTEST_DATABASE_URL, default the local test server).
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2
scenario=${3:-loadtest/scenarios/terminal-server-50.toml}
rounds=${4:-3}
pg=${SEALSTREAM_LOADTEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
out=loadtest-results/compare-$(date +%s)
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    ./target/release/sealstream-loadtest run --scenario "$scenario" --sealstream "$bin" \
      --database-url "$pg" --compare-sqlite --rounds 1 --out "$out/$which-$r" \
      | grep -E '^round' | sed "s/^round 1/$which $r/"
  done
done
echo "reports: $out"
