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
mkdir -p "$OUT"
API_KEY=profile-api-key-0123456789abcdef
PORT=18096
source scripts/lib.sh
trap cleanup_jobs EXIT

for tool in valgrind callgrind_control callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
cargo build --release --quiet --bin qrlogin --bin qrlogin-bench

profile_server valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out"

callgrind_control -i on "$SERVER_PID" >/dev/null
target/release/qrlogin-bench --server "127.0.0.1:$PORT" \
    hold -n "$N" -c 16 --hold-seconds 1 >"$OUT/gen.txt" 2>&1 ||
    { echo "the setups failed:" >&2; cat "$OUT/gen.txt" >&2; exit 1; }
callgrind_control -i off "$SERVER_PID" >/dev/null
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true

callgrind_annotate --inclusive=yes "$OUT/callgrind.out" >"$OUT/callgrind.txt" 2>/dev/null
total=$(callgrind_total "$OUT/callgrind.txt")
share() { callgrind_share "$OUT/callgrind.txt" "$N" "$1"; }
echo "one setup (ticket + socket), server side ($N setups, 16 at a time, $(date -u +%F)):"
echo "  user-space instructions: $((total / N)) per setup"
echo "    creating the ticket:   $(share 'qrlogin::web::browser_api::create_ticket::{{closure}}')"
echo "    the socket's upgrade:  $(share 'ws.rs:<F as axum::handler::Handler')"
echo "    SHA-256 (portable code under valgrind; the CPU's SHA extensions natively): $(share 'sha2::sha256::soft::compress')"
echo "raw output: $OUT"
