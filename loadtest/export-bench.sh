#!/usr/bin/env bash
# `sealstream export` against the independent Python reader of the same spec
# (tools/reference_decrypt.py) on the same store, in the same script, alternating, so the
# ratio holds on a shared, noisy machine (issue 22, item 10).
#
#   loadtest/export-bench.sh [SIZE_MIB] [FRAME_KIB] [ROUNDS]   (defaults: 200 MiB, 256 KiB, 3)
#
# The store is made with `sealstream seal` (release build) from random frames; the page cache
# is warmed first; each round runs export, then the Python reader, into fresh directories.
#
# Nothing is deleted on the measured file system until the last round is done: on an ext4
# file system without a journal (this machine kind's), creating a file skips every inode freed
# in the last 60 s (360 s while its inode table block is dirty) one by one
# (fs/ext4/ialloc.c, `recently_deleted`), so deleting the last round's 1,600 files before a
# round made both readers spend most of their time in the kernel's inode allocator. The
# frames the store is sealed from are made in memory (/dev/shm) for the same reason.
# OUT_DIR=/dev/shm/... measures both readers writing to memory instead of the disk.
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
frames_dir=$(mktemp -d /dev/shm/export-bench-frames.XXXXXX)
outs=$(mktemp -d "${OUT_DIR:-$work}/export-bench-out.XXXXXX")
trap 'rm -rf "$work" "$frames_dir" "$outs"' EXIT
cd "$work"
openssl genrsa -aes256 -passout pass:benchpass -out keypair.pem 2048 2>/dev/null
openssl rsa -in keypair.pem -passin pass:benchpass -pubout -out publickey.crt 2>/dev/null
echo benchpass > pass.txt
head -c $(( frame_kib * 1024 )) /dev/urandom > "$frames_dir/block"
frames=$(( size_mib * 1024 / frame_kib ))
for i in $(seq 1 "$frames"); do
  { printf '%08d' "$i"; tail -c +9 "$frames_dir/block"; } > "$frames_dir/f$(printf '%06d' "$i").png"
done
rm "$frames_dir/block"
"$bin" seal --kek publickey.crt --agent-id bench --store store "$frames_dir" >/dev/null 2>&1
rm -rf "$frames_dir"
bytes=$(du -sb store/v1/segments | cut -f1)
mb=$(awk -v b="$bytes" 'BEGIN{printf "%.1f", b/1e6}')
find store/v1/segments -name '*.seg' -exec cat {} + >/dev/null
echo "store: $mb MB, $frames frames of $frame_kib KiB; output under $outs; machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  /usr/bin/time -f '%e %U %S' -o e.t "$bin" export --store store --out "$outs/out-$r" --key keypair.pem --passphrase-file pass.txt >/dev/null
  /usr/bin/time -f '%e %U %S' -o p.t python3 "$ref" store keypair.pem pass.txt "$outs/ref-$r" >/dev/null
  read -r e eu es < e.t; read -r p pu ps < p.t
  awk -v mb="$mb" -v e="$e" -v p="$p" -v r="$r" -v ec="$(awk -v a="$eu" -v b="$es" 'BEGIN{print a+b}')" -v pc="$(awk -v a="$pu" -v b="$ps" 'BEGIN{print a+b}')" \
    'BEGIN{printf "round %d: export %.2f s (%.0f MB/s, %.2f CPU-s), python reader %.2f s (%.0f MB/s, %.2f CPU-s), export/python speed %.2fx\n", r, e, mb/e, ec, p, mb/p, pc, p/e}'
done
