#!/usr/bin/env bash
# `sealstream export` against the independent Python reader of the same spec
# (tools/reference_decrypt.py) on the same store, in the same script, alternating, so the
# ratio holds on a shared, noisy machine (issue 22, item 10).
#
#   loadtest/export-bench.sh [SIZE_MIB] [FRAME_KIB] [ROUNDS]   (defaults: 200 MiB, 256 KiB, 3)
#
# The store is made with `sealstream seal` (release build) from random frames; the page cache
# is warmed first; each round runs export, then the Python reader, into fresh directories.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-200}
frame_kib=${2:-256}
rounds=${3:-3}
bin=${SEALSTREAM_BIN:-target/release/sealstream}
[ -n "${SEALSTREAM_BIN:-}" ] || cargo build --release --quiet --bin sealstream
bin=$(realpath "$bin")
ref=$(realpath tools/reference_decrypt.py)
work=$(mktemp -d /tmp/export-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
openssl genrsa -aes256 -passout pass:benchpass -out keypair.pem 2048 2>/dev/null
openssl rsa -in keypair.pem -passin pass:benchpass -pubout -out publickey.crt 2>/dev/null
echo benchpass > pass.txt
head -c $(( frame_kib * 1024 )) /dev/urandom > block
mkdir frames
frames=$(( size_mib * 1024 / frame_kib ))
for i in $(seq 1 "$frames"); do
  { printf '%08d' "$i"; tail -c +9 block; } > "frames/f$(printf '%06d' "$i").png"
done
"$bin" seal --kek publickey.crt --agent-id bench --store store frames >/dev/null 2>&1
rm -rf frames block
bytes=$(du -sb store/v1/segments | cut -f1)
mb=$(awk -v b="$bytes" 'BEGIN{printf "%.1f", b/1e6}')
find store/v1/segments -name '*.seg' -exec cat {} + >/dev/null
echo "store: $mb MB, $frames frames of $frame_kib KiB; machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  rm -rf out ref
  /usr/bin/time -f '%e' -o e.t "$bin" export --store store --out out --key keypair.pem --passphrase-file pass.txt >/dev/null
  /usr/bin/time -f '%e' -o p.t python3 "$ref" store keypair.pem pass.txt ref >/dev/null
  e=$(cat e.t); p=$(cat p.t)
  awk -v mb="$mb" -v e="$e" -v p="$p" -v r="$r" 'BEGIN{printf "round %d: export %.2f s (%.0f MB/s), python reader %.2f s (%.0f MB/s), export/python speed %.2fx\n", r, e, mb/e, p, mb/p, p/e}'
done
