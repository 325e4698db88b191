#!/usr/bin/env bash
# Where a slow confirm at a steady rate spends its time, in three segments
# measured in the kernel (perf tracepoints, one clock for both processes):
#   A  the generator's request written -> the service has read it
#      (waiting for the service to run: its queue, or the CPU taken);
#   B  the service read the request -> it writes the push frame
#      (everything the service does: HTTP, state change, token, wake-up);
#   C  the frame written -> the generator has read it.
# and, for each confirm slower than SLOW_US, which other tasks ran on the
# service's and the generator's CPUs meanwhile (sched_switch). The service
# is pinned to cpu 0 and the generator to cpu 1, as in side-by-side.sh.
# Loopback only; stops by itself.
#
#   scripts/latency-segments.sh            # 10,000 sockets, 1,000 confirms/s
#   RATE=2000 SLOW_US=300 scripts/latency-segments.sh
#
# Needs perf (Debian: linux-perf) and root for its tracepoints.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${SOCKETS:-10000}
RATE=${RATE:-1000}
SLOW_US=${SLOW_US:-500}
OUT=${PROFILE_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
API_KEY=profile-api-key-0123456789abcdef
PORT=18096
source scripts/lib.sh
trap cleanup_jobs EXIT

command -v perf >/dev/null || { echo "needs perf" >&2; exit 1; }
cargo build --release --quiet --bin qrlogin --bin qrlogin-bench
ulimit -Sn "$(ulimit -Hn)"

profile_server taskset -c 0
AT=$(($(date +%s) + 5 + N / 4000))
QRLOGIN_API_KEY="$API_KEY" taskset -c 1 target/release/qrlogin-bench --server "127.0.0.1:$PORT" \
    push -n "$N" -m "$N" -r "$RATE" --confirm-at "$AT" --server-pid "$SERVER_PID" \
    >"$OUT/gen.txt" 2>&1 &
GEN_PID=$!
while [[ $(date +%s) -lt $((AT + 1)) ]]; do sleep 0.05; done
# Five seconds of the steady phase, from its second second on.
perf record -q -a -o "$OUT/perf.data" \
    -e syscalls:sys_enter_sendto -e syscalls:sys_exit_recvfrom --filter 'ret > 0' \
    -e sched:sched_switch -- sleep 5 2>"$OUT/perf.log"
wait "$GEN_PID" || { cat "$OUT/gen.txt" >&2; exit 1; }
perf script -i "$OUT/perf.data" -F pid,tid,cpu,time,event,trace >"$OUT/events.txt" 2>/dev/null

python3 scripts/latency_segments.py "$OUT/events.txt" "$SERVER_PID" "$GEN_PID" "$SLOW_US"
echo "raw: $OUT"
