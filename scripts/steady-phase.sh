#!/usr/bin/env bash
# One fresh qrlogin with the side-by-side harness's settings, generator and
# pinning (server cpu 0, generator cpu 1; not lib.sh's profile_server, whose
# per-IP socket cap would refuse the 10,000 sockets): the closed loop (10,000 confirms, 64 in
# flight), then the steady phase (10,000 waiting sockets confirmed at
# 1,000/s). Prints the steady phase's CPU per confirm and latency, and the
# server's page faults over 6 s in its middle: a run to repeat many times,
# alternating builds, when a change is about the steady tail.
#
#   bash scripts/steady-phase.sh                     # target/release/qrlogin
#   QRLOGIN_BIN=/path/to/other/build bash scripts/steady-phase.sh
#   MIMALLOC_PURGE_DELAY=1000 bash scripts/steady-phase.sh   # env passes through
#
# Needs the generator the side-by-side harness builds (WORK as there).
# Loopback only; stops by itself (~40 s).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-${TMPDIR:-/tmp}/qrlogin-side-by-side}
LG="$WORK/loadgen/target/release/loadgen"
[ -x "$LG" ] || { echo "no generator at $LG: run scripts/side-by-side-floor.sh once" >&2; exit 1; }
BIN=${QRLOGIN_BIN:-target/release/qrlogin}
OUT=$(mktemp -d)
source scripts/lib.sh
trap cleanup_jobs EXIT
port=18092
key=bench-key-$RANDOM$RANDOM
ulimit -Sn "$(ulimit -Hn)"
QRLOGIN_BIND=127.0.0.1:$port QRLOGIN_PUBLIC_URL=http://127.0.0.1:$port QRLOGIN_API_KEY=$key \
QRLOGIN_JWT_SECRET=$(head -c 48 /dev/zero | tr '\0' s) QRLOGIN_TICKET_TTL=600 RUST_LOG=error \
QRLOGIN_RATE_TICKETS=0 QRLOGIN_RATE_SOCKETS=0 QRLOGIN_RATE_POLLS=0 QRLOGIN_MAX_SOCKETS_PER_IP=1000000 \
    taskset -c 0 "$BIN" >"$OUT/server.log" 2>&1 &
spid=$!
wait_ready "$spid" "$port" "$OUT/server.log"
common=(--adapter qrlogin --base "http://127.0.0.1:$port" --api-key "$key" --server-pid "$spid"
    --label steady --json-out "$OUT/results.jsonl")
taskset -c 1 "$LG" push "${common[@]}" -n 10000 -m 10000 -c 64 2>>"$OUT/loadgen.log" >/dev/null
taskset -c 1 "$LG" push "${common[@]}" -n 10000 -m 10000 --rate 1000 --trigger-conns 64 \
    2>>"$OUT/loadgen.log" >/dev/null &
lg=$!
minflt() { local a; read -r -a a <"/proc/$spid/stat"; echo "${a[9]}"; }
sleep 3
f0=$(minflt)
sleep 6
f1=$(minflt)
wait "$lg"
kill "$spid"
python3 - "$OUT/results.jsonl" $((f1 - f0)) <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]["push"]
l = r["latency_us"]
print(f"steady: {r['server_cpu_s'] / r['completed'] * 1e6:.0f} µs CPU per confirm, "
      f"p50 {l.get('p50', 0):.0f} / p99 {l['p99']:.0f} / p99.9 {l['p999']:.0f} µs, "
      f"server page faults over 6 s: {sys.argv[2]}")
PY
