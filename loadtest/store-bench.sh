#!/usr/bin/env bash
# Keyless verify and streaming export over a multi-GB store, against reading the same segment
# files with `cat` in the same script (the baseline: these machines are shared and noisy).
#
#   loadtest/store-bench.sh [SIZE_MIB] [FRAME_KIB]    (defaults: 3072 MiB of 1024 KiB frames)
#
# Makes KEK files with openssl, random frames, a store with `sealstream seal` (release build),
# then times: cat of every segment (warm cache), `sealstream verify`, and `sealstream export`
# (peak RSS of each from /usr/bin/time). Prints one line per step and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-3072}
frame_kib=${2:-1024}
bin=target/release/sealstream
cargo build --release --quiet --bin sealstream
work=$(mktemp -d /tmp/store-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
openssl genrsa -aes256 -passout pass:benchpass -out keypair.pem 2048 2>/dev/null
openssl rsa -in keypair.pem -passin pass:benchpass -pubout -out publickey.crt 2>/dev/null
echo benchpass > pass.txt
frames=$(( size_mib * 1024 / frame_kib ))
# One random block, cut into distinct frames (a counter in each), so making them is cheap;
# sealed 256 MiB at a time (`seal` holds one recording in memory), each batch a session.
head -c $(( frame_kib * 1024 )) /dev/urandom > block
per=$(( 256 * 1024 / frame_kib ))
i=0
while [ "$i" -lt "$frames" ]; do
  rm -rf frames && mkdir frames
  for j in $(seq 1 "$per"); do
    i=$(( i + 1 ))
    [ "$i" -le "$frames" ] || break
    { printf '%08d' "$i"; tail -c +9 block; } > "frames/f$(printf '%06d' "$i").png"
  done
  /usr/bin/time -f '%e %M' -o seal.t "$OLDPWD/$bin" seal --kek publickey.crt --agent-id bench --store store frames >/dev/null 2>&1
done
rm -rf frames block
bytes=$(du -sb store/v1/segments | cut -f1)
mb=$(awk -v b="$bytes" 'BEGIN{printf "%.1f", b/1e6}')
find store/v1/segments -name '*.seg' -exec cat {} + >/dev/null   # warm the page cache
/usr/bin/time -f '%e %M' -o cat.t sh -c "find store/v1/segments -name '*.seg' -exec cat {} + >/dev/null"
/usr/bin/time -f '%e %M' -o verify.t "$OLDPWD/$bin" verify --store store --json verify.json >/dev/null || true
/usr/bin/time -f '%e %M' -o export.t "$OLDPWD/$bin" export --store store --out out --key keypair.pem --passphrase-file pass.txt >/dev/null
read -r cat_s cat_kb < cat.t
read -r ver_s ver_kb < verify.t
read -r exp_s exp_kb < export.t
read -r seal_s seal_kb < seal.t
rate() { awk -v mb="$mb" -v s="$1" 'BEGIN{printf "%.0f", mb/(s>0?s:0.001)}'; }
echo "store: $mb MB in $(find store/v1/segments -name '*.seg' | wc -l) segments, $frames frames of $frame_kib KiB; machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "seal:   ${seal_s} s, peak RSS $(( seal_kb / 1024 )) MiB"
echo "cat:    ${cat_s} s, $(rate "$cat_s") MB/s (baseline)"
echo "verify: ${ver_s} s, $(rate "$ver_s") MB/s, peak RSS $(( ver_kb / 1024 )) MiB, outcome $(python3 -c 'import json;print(json.load(open("verify.json"))["outcome"])')"
echo "export: ${exp_s} s, $(rate "$exp_s") MB/s, peak RSS $(( exp_kb / 1024 )) MiB"
awk -v c="$cat_s" -v v="$ver_s" -v e="$exp_s" 'BEGIN{printf "ratios: verify/cat time %.2f, export/cat time %.2f\n", v/(c>0?c:0.001), e/(c>0?c:0.001)}'
