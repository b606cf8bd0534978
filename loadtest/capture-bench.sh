#!/usr/bin/env bash
# The X11 capturing agent against `ffmpeg -f x11grab` (libx264) on the same Xvfb display, the
# same scripted workload, at the same time (issue 20, "Benchmarks"; docs/capture.md "Cost").
#
#   loadtest/capture-bench.sh [DURATION_S] [MODE]       (defaults: 30, session)
#
#   MODE session: one 1920x1080x24 Xvfb per run, each of $WORKLOADS (default "idle typing
#                 scrolling") at each fps of $FPS_LIST (default "1 5"); per run one agent (`--capture x11 --display`,
#                 cursor = false) and three ffmpeg recordings of the display (-draw_mouse 0,
#                 -pix_fmt yuv444p): ultrafast -qp 0 (lossless), ultrafast -crf 23, medium -crf 23.
#   MODE fleet:   $DISPLAYS (default 50) Xvfb displays with an xterm each, $FLEET_TYPING typing
#                 (default 20), $FLEET_SCROLLING scrolling (default 10), the rest idle; one agent
#                 at $FLEET_FPS (default 1) records them all. No ffmpeg.
#   MODE all:     both.
#
# A real server (`sealstream serve`, SQLite, a local store) with an openssl-made KEK registered
# and one enrolled agent per run (so each run's chunks are told apart by agent id in the store).
# Agent CPU is utime+stime from /proc/PID/stat just before SIGTERM (its whole life, startup
# included), RSS its VmHWM; ffmpeg's from /usr/bin/time. Agent bytes are the sealed chunks the
# store holds for that agent (frames, keystrokes and activity; first keyframe and end-of-stream
# chunks included), read from the segment objects' chunk headers without any key; "steady"
# leaves out what a session pays once: its first keyframe, its first activity chunk
# (session_start) and the end-of-stream chunks. Capture-to-durable latency is a
# frame chunk's capture_time_us against the mtime of the first segment that holds it (the server
# acks after that write and its index commit: the server's ack-latency histogram is shown too).
#
#   SEALSTREAM_BIN     binary to measure (default: target/release/sealstream, built if unset)
#   TYPE_DELAY_MS      xdotool type delay (default 150, about 6.7 characters a second)
#   SCROLL_LPS         lines a second the scrolling terminal prints (default 20)
#   WARM_S             "KB/min after" counts chunks captured this long after the session's first
#                      (default 10), end-of-stream chunks left out: what a started session sends
#   OUT                also write the markdown here (default loadtest-results/capture-<time>.md)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30}
mode=${2:-session}
fps_list=${FPS_LIST:-1 5}
workloads=${WORKLOADS:-idle typing scrolling}
displays=${DISPLAYS:-50}
fleet_fps=${FLEET_FPS:-1}
fleet_typing=${FLEET_TYPING:-20}
fleet_scrolling=${FLEET_SCROLLING:-10}
type_delay=${TYPE_DELAY_MS:-150}
scroll_lps=${SCROLL_LPS:-20}
export WARM_S=${WARM_S:-10}
case $mode in session | fleet | all) ;; *) echo "MODE is session, fleet or all" >&2; exit 2 ;; esac
for t in Xvfb xterm xdotool xdpyinfo ffmpeg openssl python3 perl curl /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "capture-bench needs $t (xvfb xterm xdotool x11-utils ffmpeg time)" >&2; exit 2; }
done
bin=${SEALSTREAM_BIN:-target/release/sealstream}
[ -n "${SEALSTREAM_BIN:-}" ] || cargo build --release --quiet --bin sealstream
bin=$(realpath "$bin")
mkdir -p loadtest-results
out=${OUT:-loadtest-results/capture-$(date +%Y%m%d-%H%M%S).md}
out=$(realpath -m "$out")
docs=$(realpath docs)
work=$(mktemp -d /tmp/capture-bench.XXXXXX)

pids=() # everything started here, killed by PID (children first) on exit
kill_tree() {
  local p=$1 c
  for c in $(ps -o pid= --ppid "$p" 2>/dev/null || true); do kill_tree "$c"; done
  kill -TERM "$p" 2>/dev/null || true
}
cleanup() {
  local rc=$? p i
  [ "$rc" = 0 ] || echo "capture-bench: stopped (exit $rc) at: $BASH_COMMAND" >&2
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill_tree "${pids[i]}"; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
drop_pid() { # $1 ended and was waited for: never signal its number again
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
forget() { # drop PIDs that ended from the list
  local keep=() p
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && keep+=("$p"); done
  pids=("${keep[@]}")
}
stop() { # stop PIDs (and their children) now and wait for them
  local p
  for p in "$@"; do kill_tree "$p"; done
  for p in "$@"; do
    for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    drop_pid "$p"
  done
  forget
}
free_port() { python3 -c "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_$1);s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
ticks() { awk '{print $14+$15}' /proc/"$1"/stat; } # utime+stime, clock ticks
hwm_kib() { awk '/^VmHWM/{print $2}' /proc/"$1"/status; }
rss_parts() { awk '/^(VmRSS|RssAnon|RssFile|RssShmem)/{printf "%s%s %.0f MiB", n++ ? ", " : "", $1, $2/1024}' /proc/"$1"/status; }
hz=$(getconf CLK_TCK)

cd "$work"
# The server, the customer's KEK (as the E2EE how-to makes it), its registration.
quic=$(free_port DGRAM)
ops=$(free_port STREAM)
printf 'listen = "127.0.0.1:%s"\nops_listen = "127.0.0.1:%s"\ndata_dir = "state"\n' "$quic" "$ops" > serve.toml
openssl genrsa -aes256 -passout pass:benchpass -out keypair.pem 2048 2>/dev/null
openssl rsa -in keypair.pem -passin pass:benchpass -pubout -out publickey.crt 2>/dev/null
"$bin" keys register --config serve.toml --public publickey.crt --private keypair.pem >/dev/null 2>&1
"$bin" serve --config serve.toml >serve.log 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$ops/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat serve.log >&2; exit 1; }
  sleep 0.1
done

# What the scrolling terminal shows: the project's documents and sources, wide varied text.
cat "$docs"/*.md > page.txt
# What the typing terminal gets: shell comments, one line at a time.
sentences=(
  "checked the spool size on ts-07 after the restart, looks fine"
  "git log --oneline | head -20 shows the release tag is missing"
  "the invoice batch for march is in /srv/finance/batches, 1,204 rows"
  "ssh deploy@web-03 'systemctl status nginx' returned active (running)"
  "meeting notes: move the migration window to saturday 02:00 utc"
  "grep -rn TODO src/ | wc -l is down to 37 from 52 last week"
)

free_display() {
  local n=$1
  while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
  echo "$n"
}
next_display=6000 # above the numbers the tests pick (200..5199)
xvfb_pid=
start_xvfb() { # sets dpy, xvfb_pid
  local try
  for try in 1 2 3 4 5; do
    dpy=$(free_display "$next_display")
    next_display=$((dpy + 1))
    Xvfb ":$dpy" -screen 0 1920x1080x24 -ac -nolisten tcp >/dev/null 2>&1 &
    xvfb_pid=$!
    pids+=("$xvfb_pid")
    for _ in $(seq 1 200); do
      kill -0 "$xvfb_pid" 2>/dev/null || break # lost the number to another X server: next one
      # ours, not another server that took the number first
      if DISPLAY=:$dpy xdpyinfo >/dev/null 2>&1 && [ "$(tr -d ' \n' <"/tmp/.X$dpy-lock" 2>/dev/null)" = "$xvfb_pid" ]; then
        return 0
      fi
      sleep 0.05
    done
    stop "$xvfb_pid"
  done
  echo "no Xvfb display could be started" >&2
  exit 1
}
# start_workload DISPLAY KIND: an xterm 160x50 showing the workload; sets term_pid, driver_pid.
start_workload() {
  local d=$1 kind=$2 title="capbench-$1"
  driver_pid=
  case $kind in
    scrolling)
      DISPLAY=:$d xterm -T "$title" -geometry 160x50+100+80 +sb -e perl -e '
        $| = 1; my ($f, $lps) = @ARGV;
        while (1) { open my $h, "<", $f or die; while (<$h>) { print; select(undef, undef, undef, 1 / $lps) } }
      ' "$work/page.txt" "$scroll_lps" >/dev/null 2>&1 &
      ;;
    *)
      DISPLAY=:$d xterm -T "$title" -geometry 160x50+100+80 +sb -e env PS1='user@ts:~$ ' bash --norc --noprofile -i >/dev/null 2>&1 &
      ;;
  esac
  term_pid=$!
  pids+=("$term_pid")
  local w
  # --onlyvisible: focus only a mapped window (focusing one not yet mapped never syncs)
  w=$(DISPLAY=:$d timeout 20 xdotool search --sync --onlyvisible --name "^$title\$" | head -1)
  [ -n "$w" ] || { echo "xterm on :$d did not map" >&2; exit 1; }
  for _ in 1 2 3 4 5; do DISPLAY=:$d timeout 5 xdotool windowfocus --sync "$w" && break; done
  if [ "$kind" = typing ]; then
    (
      export DISPLAY=:$d
      i=$d
      while :; do
        xdotool type --delay "$type_delay" "# ${sentences[i % ${#sentences[@]}]}"
        xdotool key Return
        i=$((i + 1))
      done
    ) >/dev/null 2>&1 &
    driver_pid=$!
    pids+=("$driver_pid")
  fi
  return 0
}
# agent_config NAME FPS DISPLAYS...: enroll agent NAME, write its agent.toml with [capture].
agent_config() {
  local name=$1 fps=$2 mport
  shift 2
  "$bin" agents enroll "$name" --config serve.toml --out "agents/$name" >/dev/null 2>&1
  cp publickey.crt "agents/$name/kek.pem"
  mport=$(free_port STREAM)
  {
    echo "metrics_listen = \"127.0.0.1:$mport\""
    echo "[capture]"
    echo "source = \"x11\""
    echo "fps = $fps"
    echo "cursor = false"
    printf 'displays = [%s]\n' "$(printf '":%s",' "$@" | sed 's/,$//')"
  } >>"agents/$name/agent.toml"
  echo "$mport" >"agents/$name/metrics.port"
}

# Every chunk in the store, by agent: sizes, kinds, latency (no key needed: headers only).
analyze() {
  python3 - "$work/state/store" "$@" <<'PY'
import json, os, struct, sys
store, agents = sys.argv[1], set(sys.argv[2:])
seen = {}
for root, _, files in os.walk(os.path.join(store, "v1", "segments")):
    for f in files:
        if not f.endswith(".seg") or "#" in f:
            continue
        p = os.path.join(root, f)
        mtime_us = os.stat(p).st_mtime_ns // 1000
        b = open(p, "rb").read()
        assert b[:4] == b"SSSG", p
        (count,) = struct.unpack(">I", b[32:36])
        off = 36
        for _ in range(count):
            kind, flags = b[off + 6], b[off + 7]
            session = b[off + 24:off + 40]
            stream, seq, cap = struct.unpack(">IQq", b[off + 40:off + 60])
            (alen,) = struct.unpack(">H", b[off + 60:off + 62])
            agent = b[off + 62:off + 62 + alen].decode()
            (ctlen,) = struct.unpack(">I", b[off + 62 + alen:off + 66 + alen])
            n = 66 + alen + ctlen
            if flags & 4:
                (slen,) = struct.unpack(">H", b[off + n + 2:off + n + 4])
                n += 4 + slen
            key = (agent, session, stream, seq)
            if agent in agents and (key not in seen or seen[key]["durable"] > mtime_us):
                seen[key] = dict(agent=agent, session=session, kind=kind, final=bool(flags & 1),
                                 bytes=n, ct=ctlen, cap=cap, durable=mtime_us, seq=seq)
            off += n
        assert off == len(b) - 32, p
res = {}
for a in agents:
    cs = [c for c in seen.values() if c["agent"] == a]
    r = dict(chunks=len(cs), bytes=sum(c["bytes"] for c in cs), sessions=len({c["session"] for c in cs}))
    for k, name in ((1, "frames"), (2, "keys"), (3, "activity")):
        r[name] = sum(c["bytes"] for c in cs if c["kind"] == k)
    frames = sorted((c for c in cs if c["kind"] == 1 and not c["final"]), key=lambda c: (c["session"], c["seq"]))
    first = {}
    for c in frames:
        first.setdefault(c["session"], c)
    r["keyframe_bytes"] = sum(c["bytes"] for c in first.values())
    r["final_bytes"] = sum(c["bytes"] for c in cs if c["final"])
    updates = [c for c in frames if first[c["session"]] is not c]
    r["updates"] = len(updates)
    r["update_bytes"] = sum(c["bytes"] for c in updates)
    acts = sorted((c for c in cs if c["kind"] == 3 and not c["final"]), key=lambda c: (c["session"], c["seq"]))
    first_act = {}
    for c in acts:
        first_act.setdefault(c["session"], c)
    r["start_bytes"] = r["keyframe_bytes"] + sum(c["bytes"] for c in first_act.values())
    # What a session sends once it has started: chunks (end-of-stream ones left out) captured
    # WARM_S or more after the session's first chunk.
    warm_us = int(os.environ.get("WARM_S", "10")) * 1_000_000
    born = {}
    for c in cs:
        born[c["session"]] = min(born.get(c["session"], c["cap"]), c["cap"])
    r["late_bytes"] = sum(c["bytes"] for c in cs if not c["final"] and c["cap"] >= born[c["session"]] + warm_us)
    r["steady_bytes"] = r["bytes"] - r["start_bytes"] - r["final_bytes"]
    lat = sorted((c["durable"] - c["cap"]) / 1000 for c in frames)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
    r["lat_p50_ms"], r["lat_p99_ms"], r["lat_max_ms"] = pick(0.5), pick(0.99), (lat[-1] if lat else 0)
    # The same once every session has started (its first WARM_S seconds left out).
    lat = sorted((c["durable"] - c["cap"]) / 1000 for c in frames if c["cap"] >= born[c["session"]] + warm_us)
    r["late_lat_p50_ms"], r["late_lat_p99_ms"], r["late_lat_max_ms"] = pick(0.5), pick(0.99), (lat[-1] if lat else 0)
    per = {}
    for c in cs:
        per[c["session"]] = per.get(c["session"], 0) + c["bytes"]
    r["session_bytes"] = sorted(per.values())
    res[a] = r
print(json.dumps(res))
PY
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])" "$@"; }
kbmin() { awk -v b="$1" -v d="$duration" 'BEGIN{printf "%.1f", b / 1000 / (d / 60)}'; }
# KB a minute over the run after its first $WARM_S seconds.
kbmin_late() { awk -v b="$1" -v d="$duration" -v w="$WARM_S" 'BEGIN{printf "%.2f", b / 1000 / ((d - w) / 60)}'; }
pct() { awk -v t="$1" -v hz="$hz" -v d="$2" 'BEGIN{printf "%.2f", 100 * t / hz / d}'; }
# Seconds from the server's ack-latency histogram at quantile q (the bucket bound it falls in).
server_ack_q() { hist_q "$ops" sealstream_ingest_ack_latency_seconds "$1"; }
# hist_q PORT METRIC Q: a Prometheus histogram's quantile Q as the bucket bound it falls in.
hist_q() {
  curl -sf "http://127.0.0.1:$1/metrics" | python3 -c '
import sys
name = sys.argv[1] + "_bucket"; q = float(sys.argv[2]); b = []
for l in sys.stdin:
    if l.startswith(name):
        le = l.split("le=\"")[1].split("\"")[0]
        b.append((float("inf") if le == "+Inf" else float(le), float(l.split()[-1])))
b.sort()
total = b[-1][1] if b else 0
print(next((f"<= {le * 1000:g} ms" for le, n in b if total and n >= q * total), "n/a"))
' "$2" "$3"
}

machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
{
  echo "capture-bench: $(date -u +%Y-%m-%dT%H:%MZ), $machine, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "binary: $bin; $(ffmpeg -version | head -1 | cut -d' ' -f1-3); Xvfb 1920x1080x24; xterm 160x50; ${duration} s a run"
  echo
} | tee "$out"

session_runs() {
  local fps kind name agent a0 t hwm parts sealed f
  printf '%s\n' \
    "| workload | fps | recorder | CPU % of a core | peak RSS MiB | KB/min | frames KB/min | steady KB/min | KB/min after ${WARM_S} s | first keyframe KB | updates | bytes/update | capture→durable p50 / p99 ms |" \
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|" | tee -a "$out"
  for fps in $fps_list; do
    for kind in $workloads; do
      start_xvfb
      start_workload "$dpy" "$kind"
      name="cb-$kind-${fps}fps"
      agent_config "$name" "$fps" "$dpy"
      sleep 1
      "$bin" agent --config "agents/$name/agent.toml" --capture x11 >"agent-$name.out" 2>"agent-$name.log" &
      agent=$!
      pids+=("$agent")
      local ff=() v
      for v in lossless uf23 med23; do
        case $v in
          lossless) set -- -preset ultrafast -qp 0 ;;
          uf23) set -- -preset ultrafast -crf 23 ;;
          med23) set -- -preset medium -crf 23 ;;
        esac
        /usr/bin/time -f '%U %S %M %e' -o "ff-$name-$v.time" \
          ffmpeg -nostdin -loglevel error -y -f x11grab -draw_mouse 0 -framerate "$fps" \
          -video_size 1920x1080 -i ":$dpy" -t "$duration" -c:v libx264 "$@" -pix_fmt yuv444p \
          "ff-$name-$v.mkv" 2>"ff-$name-$v.log" &
        ff+=($!)
        pids+=("$!")
      done
      sleep "$duration"
      for f in "${ff[@]}"; do wait "$f" || true; drop_pid "$f"; done
      t=$(ticks "$agent")
      hwm=$(hwm_kib "$agent")
      parts=$(rss_parts "$agent")
      a0=$(awk '{print $22}' /proc/"$agent"/stat)
      local life
      life=$(awk -v now="$(awk '{print $1}' /proc/uptime)" -v st="$a0" -v hz="$hz" 'BEGIN{printf "%.2f", now - st / hz}')
      stop "$agent"
      sealed=$(grep -o 'chunks sealed ([0-9]* bytes)' "agent-$name.out" | grep -o '[0-9]*' || echo '?')
      analyze "$name" >"an-$name.json"
      [ -n "${driver_pid:-}" ] && stop "$driver_pid"
      stop "$term_pid" "$xvfb_pid"
      s() { field "an-$name.json" "$name" "$1"; }
      local bytes upd ub
      bytes=$(s bytes)
      upd=$(s updates)
      ub=$(s update_bytes)
      printf '| %s | %s | **agent** | %s | %.0f | %s | %s | %s | %s | %.1f | %s | %s | %.0f / %.0f |\n' \
        "$kind" "$fps" "$(pct "$t" "$life")" "$(awk -v k="$hwm" 'BEGIN{print k/1024}')" \
        "$(kbmin "$bytes")" "$(kbmin "$(s frames)")" "$(kbmin "$(s steady_bytes)")" "$(kbmin_late "$(s late_bytes)")" \
        "$(awk -v b="$(s keyframe_bytes)" 'BEGIN{print b/1000}')" "$upd" \
        "$( [ "$upd" -gt 0 ] && echo $((ub / upd)) || echo -)" "$(s lat_p50_ms)" "$(s lat_p99_ms)" | tee -a "$out"
      echo "$name: agent printed $sealed sealed bytes; store holds $bytes ($(s chunks) chunks; bytes of frames $(s frames), keystrokes $(s keys), activity $(s activity); once a session: start $(s start_bytes), end-of-stream $(s final_bytes)); agent lived ${life} s; at the end $parts" >>notes.txt
      for v in lossless uf23 med23; do
        read -r u sy m e < <(tail -1 "ff-$name-$v.time") || true
        local label
        case $v in lossless) label="x264 ultrafast qp0" ;; uf23) label="x264 ultrafast crf23" ;; med23) label="x264 medium crf23" ;; esac
        printf '| %s | %s | %s | %s | %.0f | %s | | | | | | | |\n' "$kind" "$fps" "$label" \
          "$(awk -v u="$u" -v s="$sy" -v e="$e" 'BEGIN{printf "%.2f", 100 * (u + s) / e}')" \
          "$(awk -v k="$m" 'BEGIN{print k/1024}')" "$(kbmin "$(stat -c %s "ff-$name-$v.mkv")")" | tee -a "$out"
        [ -s "ff-$name-$v.log" ] && echo "$name $v ffmpeg: $(head -c 300 "ff-$name-$v.log")" >>notes.txt
      done
    done
  done
  echo | tee -a "$out"
  echo "server ack latency (arrival to ack) p99: $(server_ack_q 0.99)" | tee -a "$out"
  sed 's/^/- /' notes.txt | tee -a "$out"
  : >notes.txt
  echo | tee -a "$out"
}

fleet_run() {
  local i kind ds=() name="cb-fleet-${displays}x${fleet_fps}fps" agent t0 t1 t hwm life mport
  local host0 host1 srv0 srv1 samples=() tick0 a0 parts
  for i in $(seq 0 $((displays - 1))); do
    start_xvfb
    if [ "$i" -lt "$fleet_typing" ]; then kind=typing
    elif [ "$i" -lt $((fleet_typing + fleet_scrolling)) ]; then kind=scrolling
    else kind=idle; fi
    start_workload "$dpy" "$kind"
    ds+=("$dpy")
  done
  agent_config "$name" "$fleet_fps" "${ds[@]}"
  mport=$(cat "agents/$name/metrics.port")
  sleep 1
  host0=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  srv0=$(ticks "$server")
  "$bin" agent --config "agents/$name/agent.toml" --capture x11 >"agent-$name.out" 2>"agent-$name.log" &
  agent=$!
  pids+=("$agent")
  local warm=$((duration < 20 ? duration / 2 : 10))
  sleep "$warm"
  tick0=$(ticks "$agent")
  local n=$((duration - warm))
  for _ in $(seq 1 "$n"); do
    sleep 1
    samples+=("$(curl -sf "http://127.0.0.1:$mport/metrics" | awk '/^sealstream_agent_oldest_unacked_age_seconds/{print $NF}')")
  done
  t=$(ticks "$agent")
  hwm=$(hwm_kib "$agent")
  parts=$(rss_parts "$agent")
  a0=$(awk '{print $22}' /proc/"$agent"/stat)
  life=$(awk -v now="$(awk '{print $1}' /proc/uptime)" -v st="$a0" -v hz="$hz" 'BEGIN{printf "%.2f", now - st / hz}')
  host1=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  srv1=$(ticks "$server")
  local c2a
  c2a="p50 $(hist_q "$mport" sealstream_agent_capture_to_ack_seconds 0.5), p99 $(hist_q "$mport" sealstream_agent_capture_to_ack_seconds 0.99)"
  stop "$agent"
  analyze "$name" >"an-$name.json"
  s() { field "an-$name.json" "$name" "$1"; }
  local sess bytes
  sess=$(s sessions)
  bytes=$(s bytes)
  local maxage
  maxage=$(printf '%s\n' "${samples[@]}" | sort -g | tail -1)
  {
    echo "| displays (typing / scrolling / idle) | fps | agent CPU, whole life | agent CPU, after ${warm} s | peak RSS MiB | sessions recorded | KB/min, all sessions | KB/min per session (min / median / max) | updates | bytes/update | capture→durable p50 / p99 / max ms | oldest unacked, max of 1 s samples | server CPU | host CPU busy |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '| %s (%s / %s / %s) | %s | %s %% | %s %% | %.0f | %s | %s | %s | %s | %s | %.0f / %.0f / %.0f | %s s | %s %% | %s %% of %s cores |\n' \
      "$displays" "$fleet_typing" "$fleet_scrolling" "$((displays - fleet_typing - fleet_scrolling))" "$fleet_fps" \
      "$(pct "$t" "$life")" "$(pct $((t - tick0)) "$n")" "$(awk -v k="$hwm" 'BEGIN{print k/1024}')" "$sess" \
      "$(kbmin "$bytes")" \
      "$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]["session_bytes"]; d=float(sys.argv[3]); f=lambda b: "%.1f" % (b/1000/(d/60)); print(f(v[0]), "/", f(v[len(v)//2]), "/", f(v[-1])) if v else print("-")' "an-$name.json" "$name" "$duration")" \
      "$(s updates)" "$(( $(s updates) > 0 ? $(s update_bytes) / $(s updates) : 0 ))" \
      "$(s lat_p50_ms)" "$(s lat_p99_ms)" "$(s lat_max_ms)" "${maxage:-?}" "$(pct $((srv1 - srv0)) "$life")" \
      "$(awk -v a="$host0" -v b="$host1" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.0f", 100*(y[1]-x[1])/((y[1]-x[1])+(y[2]-x[2]))}')" "$(nproc)"
    echo
    echo "server ack latency (arrival to ack) p99: $(server_ack_q 0.99)"
    echo "agent capture→ack (its histogram, bucket bounds): $c2a"
    echo "capture→durable after each session's first ${WARM_S} s: p50 $(s late_lat_p50_ms) / p99 $(s late_lat_p99_ms) / max $(s late_lat_max_ms) ms"
    echo "- $name: $(grep -o 'agent .*' "agent-$name.out" | head -1); agent lived ${life} s; at the end $parts"
    echo
  } | tee -a "$out"
  # the displays, terminals and drivers go in cleanup
}

case $mode in
  session) session_runs ;;
  fleet) fleet_run ;;
  all) session_runs; fleet_run ;;
esac
echo "results: $out"
