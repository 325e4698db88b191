#!/usr/bin/env bash
# What one confirm costs the server, in figures that do not depend on how
# busy or how fast the (virtual) machine is today:
#   - user-space instructions per confirm and push (valgrind callgrind,
#     counted only while the confirms run, not while sockets are set up);
#   - system calls per confirm and push (strace -c, same window).
# Wall-clock rates on a shared virtual machine move by 2x between days;
# instruction and system-call counts do not, so this is how a change to the
# confirm path is judged. Loopback only; stops by itself.
#
#   scripts/profile-confirm.sh            # 2,000 confirms, 16 in flight
#   CONFIRMS=5000 scripts/profile-confirm.sh
#   FLOOR=1 scripts/profile-confirm.sh    # `qrlogin-bench floor` instead: the
#                                         # same exchange with canned bytes, the
#                                         # part the runtime and kernel cost
#
# Needs valgrind and strace (Debian packages of the same names).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${CONFIRMS:-2000}
OUT=${PROFILE_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
API_KEY=profile-api-key-0123456789abcdef
PORT=18095
source scripts/lib.sh
trap cleanup_jobs EXIT

for tool in valgrind callgrind_control strace; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
cargo build --release --quiet --bin qrlogin --bin qrlogin-bench

# generate LEAD: hold N sockets, then confirm them all, starting LEAD seconds
# from now; sets GEN_PID and AT (the Unix time the confirms start).
generate() {
    AT=$(($(date +%s) + $1))
    QRLOGIN_API_KEY="$API_KEY" target/release/qrlogin-bench --server "127.0.0.1:$PORT" \
        push -n "$N" -m "$N" -c 16 --confirm-at "$AT" --timeout 120 >"$OUT/gen.txt" 2>&1 &
    GEN_PID=$!
}

# serve WRAPPER…: the service (or, with FLOOR=1, the floor) under WRAPPER.
serve() {
    if [[ -n "${FLOOR:-}" ]]; then
        "$@" target/release/qrlogin-bench floor --bind "127.0.0.1:$PORT" --seconds 1800 \
            >"$OUT/server.log" 2>&1 &
        SERVER_PID=$!
        wait_ready "$SERVER_PID" "$PORT" "$OUT/server.log" 60
    else
        profile_server "$@"
    fi
}

wait_until() { while [[ $(date +%s) -lt $1 ]]; do sleep 0.05; done; }

confirmed() {
    local got
    got=$(grep -o 'received=[0-9]*' "$OUT/gen.txt" | cut -d= -f2)
    [[ "$got" == "$N" ]] || { echo "only ${got:-0} of $N pushes arrived:" >&2; cat "$OUT/gen.txt" >&2; exit 1; }
}

# 1. Instructions (setting up N sockets under valgrind takes a while).
serve valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out"
generate $((15 + N / 50))
wait_until $((AT - 1))
callgrind_control -i on "$SERVER_PID" >/dev/null
wait "$GEN_PID" || true
callgrind_control -i off "$SERVER_PID" >/dev/null
confirmed
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
callgrind_annotate --inclusive=yes "$OUT/callgrind.out" >"$OUT/callgrind.txt" 2>/dev/null
total=$(callgrind_total "$OUT/callgrind.txt")
share() { callgrind_share "$OUT/callgrind.txt" "$N" "$1"; }

# 2. System calls.
serve
generate 8
wait_until "$AT"
timeout 20 strace -c -f -p "$SERVER_PID" -o "$OUT/strace.txt" &
STRACE_PID=$!
wait "$GEN_PID" || true
kill -INT "$STRACE_PID" 2>/dev/null || true
wait "$STRACE_PID" 2>/dev/null || true
confirmed

echo "one confirm and its push, server side ($N confirms, 16 in flight, $(date -u +%F)):"
echo "  user-space instructions: $((total / N)) per confirm"
echo "    signing the token:     $(share 'qrlogin::token::Tokens::issue')"
echo "    the socket's task:     $(share 'qrlogin::web::ws::session::{{closure}}')"
echo "    the engine (all):      $(share 'qrlogin::engine::Engine::confirm::{{closure}}')"
echo "  system calls per confirm (strace attaches as the confirms start and misses the first few):"
awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
    printf "    %-12s %.2f\n", $NF, $4 / n }' "$OUT/strace.txt"
echo "raw output: $OUT"
