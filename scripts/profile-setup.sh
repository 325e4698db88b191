#!/usr/bin/env bash
# What one setup (a ticket created, then its WebSocket opened) costs the
# server, in user-space instructions (valgrind callgrind, counted only while
# the setups run). The companion of profile-confirm.sh: counts do not move
# with how busy the machine is, wall-clock rates do. Loopback only; stops by
# itself.
#
#   scripts/profile-setup.sh              # 2,000 setups, 16 at a time
#   SETUPS=5000 scripts/profile-setup.sh
#
# Needs valgrind (Debian package of the same name).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${SETUPS:-2000}
OUT=${PROFILE_OUT:-$(mktemp -d)}
API_KEY=profile-api-key-0123456789abcdef
PORT=18096
source scripts/lib.sh
trap cleanup_jobs EXIT

for tool in valgrind callgrind_control callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
cargo build --release --quiet --bin qrlogin --bin qrlogin-bench

env QRLOGIN_BIND="127.0.0.1:$PORT" QRLOGIN_API_KEY="$API_KEY" \
    QRLOGIN_JWT_SECRET=profile-jwt-secret-profile-jwt-secret-0123 \
    QRLOGIN_TICKET_TTL=600 QRLOGIN_RATE_TICKETS=0 QRLOGIN_RATE_SOCKETS=0 RUST_LOG=warn \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    target/release/qrlogin >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
# Under valgrind the service takes a while to start.
wait_ready "$SERVER_PID" "$PORT" "$OUT/server.log" 60

callgrind_control -i on "$SERVER_PID" >/dev/null
target/release/qrlogin-bench --server "127.0.0.1:$PORT" \
    hold -n "$N" -c 16 --hold-seconds 1 >"$OUT/gen.txt" 2>&1 ||
    { echo "the setups failed:" >&2; cat "$OUT/gen.txt" >&2; exit 1; }
callgrind_control -i off "$SERVER_PID" >/dev/null
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true

callgrind_annotate --inclusive=yes "$OUT/callgrind.out" >"$OUT/callgrind.txt" 2>/dev/null
total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$OUT/callgrind.txt")
share() {
    awk -v f="$1" -v t="$total" -v n="$N" '
        index($0, f) { gsub(",", "", $1); printf "%.0f (%.0f %%)", $1 / n, 100 * $1 / t; exit }
    ' "$OUT/callgrind.txt"
}
echo "one setup (ticket + socket), server side ($N setups, 16 at a time, $(date -u +%F)):"
echo "  user-space instructions: $((total / N)) per setup"
echo "    creating the ticket:   $(share 'qrlogin::web::browser_api::create_ticket::{{closure}}')"
echo "    the socket's upgrade:  $(share 'ws.rs:<F as axum::handler::Handler')"
echo "    SHA-256 (portable code under valgrind; the CPU's SHA extensions natively): $(share 'sha2::sha256::soft::compress')"
echo "raw output: $OUT"
