#!/usr/bin/env bash
# The side-by-side comparison with one more row: `qrlogin-bench floor`, a
# server that answers the contract's login exchange with canned bytes and
# does no other work. It runs right after the peers and qrlogin, through
# the same load generator with the same parameters, pinned the same way
# (server cpu 0, generator cpu 1), so its figures belong to the same run.
# What qrlogin costs above the floor is qrlogin's own; what the floor
# costs above a peer's push is the contract's exchange itself (a request,
# a response, a frame and a close against a frame and a line). A last row,
# `floor+Nus`, is the floor's steady phase again with N µs of busy CPU in
# each confirm, N being what qrlogin's steady confirm cost above the
# floor's in this run: the latency tail of a server exactly as costly as
# qrlogin but with nothing else of qrlogin in it.
#
#   bash scripts/side-by-side-floor.sh    # ~6 minutes; loopback only
#
# SIDE_BY_SIDE names the comparison's harness (default: the one beside the
# project, ../shared/bench/side-by-side.sh); its variables (WORKERMAN_DIR,
# PHP_EVENT_SO, …) pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${SIDE_BY_SIDE:-../shared/bench/side-by-side.sh}
export WORK=${WORK:-${TMPDIR:-/tmp}/qrlogin-side-by-side}
export OUT=${OUT:-$WORK/results/$(date -u +%F-%H%M)}
source scripts/lib.sh
trap cleanup_jobs EXIT

cargo build --release --quiet --bin qrlogin-bench
mkdir -p "$OUT"
bash "$harness" >"$OUT/harness.txt" || { cat "$OUT/harness.txt"; exit 1; }

LG="$WORK/loadgen/target/release/loadgen"
port=18081
ulimit -Sn "$(ulimit -Hn)"
# start_floor LABEL WORK_US: the floor on cpu 0, WORK_US of busy CPU in
# each confirm; sets fpid and the generator's arguments `common` (LABEL).
start_floor() {
    taskset -c 0 target/release/qrlogin-bench floor --bind "127.0.0.1:$port" --seconds 300 \
        --confirm-work-us "$2" >"$OUT/$1-server.log" 2>&1 &
    fpid=$!
    wait_ready "$fpid" "$port" "$OUT/$1-server.log"
    common=(--adapter qrlogin --base "http://127.0.0.1:$port" --api-key floor-key --server-pid "$fpid"
        --label "$1" --json-out "$OUT/results.jsonl")
}

start_floor floor 0
taskset -c 1 "$LG" hold "${common[@]}" -n 19500 --connect-concurrency 64 --hold-secs 3 2>>"$OUT/loadgen.log" >/dev/null
taskset -c 1 "$LG" push "${common[@]}" -n 10000 -m 10000 -c 64 2>>"$OUT/loadgen.log" >/dev/null
taskset -c 1 "$LG" push "${common[@]}" -n 10000 -m 10000 --rate 1000 --trigger-conns 64 2>>"$OUT/loadgen.log" >/dev/null
kill "$fpid"; wait "$fpid" 2>/dev/null || true

# The floor once more, steady phase only, with qrlogin's extra CPU per
# steady confirm (measured above, in this run) spent as a busy loop in each
# confirm: if its tail matches qrlogin's, qrlogin's tail is its cost per
# confirm; if qrlogin's is worse, something else stalls it.
extra=$(python3 - "$OUT/results.jsonl" <<'EOF'
import json, sys
cpu = {}
for l in open(sys.argv[1]):
    r = json.loads(l) if l.strip() else {}
    p = r.get("push") or {}
    if r.get("mode") == "push" and p.get("rate") and p.get("completed") and p.get("server_cpu_s") is not None:
        cpu[r["label"]] = p["server_cpu_s"] / p["completed"] * 1e6
print(max(0, round(cpu.get("qrlogin", 0) - cpu.get("floor", 0))))
EOF
)
start_floor "floor+${extra}us" "$extra"
taskset -c 1 "$LG" push "${common[@]}" -n 10000 -m 10000 --rate 1000 --trigger-conns 64 2>>"$OUT/loadgen.log" >/dev/null
kill "$fpid"

python3 "$WORK/summarize.py" "$OUT/results.jsonl" "$OUT/meta.jsonl" | tee "$OUT/summary.md"
echo
echo "### Server CPU per operation (closed loop: server_cpu_s / completed)"
echo
python3 - "$OUT/results.jsonl" <<'EOF' | tee -a "$OUT/summary.md"
import json, sys
print("| server | closed-loop µs per push / confirm | loadgen CPU share | steady p99 / p99.9 (ms) |")
print("|---|---:|---:|---:|")
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steady = {r["label"]: r["push"]["latency_us"] for r in rows
          if r.get("mode") == "push" and not r.get("skipped") and r["push"].get("rate")}
for r in rows:
    p = r.get("push")
    if r.get("mode") != "push" or r.get("skipped") or p.get("rate") or not p.get("completed"):
        continue
    cpu = p.get("server_cpu_s")
    per = f"{cpu / p['completed'] * 1e6:.1f}" if cpu is not None else "-"
    share = f"{p['loadgen_cpu_s'] / p['elapsed_s']:.2f}" if p.get("elapsed_s") else "-"
    s = steady.get(r["label"], {})
    tail = f"{s.get('p99', 0) / 1000:.2f} / {s.get('p999', 0) / 1000:.2f}" if s else "-"
    print(f"| {r['label']} | {per} | {share} | {tail} |")
print()
print("### Steady 1,000/s: server CPU per operation and latency")
print()
print("| server | µs per push / confirm | p50 / p99 / p99.9 (ms) |")
print("|---|---:|---:|")
for r in rows:
    p = r.get("push") or {}
    if r.get("mode") != "push" or r.get("skipped") or not p.get("rate") or not p.get("completed"):
        continue
    cpu = p.get("server_cpu_s")
    per = f"{cpu / p['completed'] * 1e6:.0f}" if cpu is not None else "-"
    l = p["latency_us"]
    print(f"| {r['label']} | {per} | {l.get('p50', 0) / 1000:.2f} / {l['p99'] / 1000:.2f} / {l['p999'] / 1000:.2f} |")
EOF
echo "raw: $OUT/results.jsonl"
