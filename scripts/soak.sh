#!/usr/bin/env bash
# The soak: thousands of browsers whose tickets meet random fates (confirm,
# deny, expiry, reconnect, abrupt drop) for a long while, checking that every
# browser sees its ticket's final state exactly once per connection — first
# on the memory store, then on two instances over Redis with a Redis restart
# and an instance restart in the middle. Loopback only, release build, every
# step bounded; stops by itself and prints a summary table at the end. The raw
# output stays in $SOAK_OUT (a fresh temporary directory unless given).
#
#   scripts/soak.sh                                     # both runs, 10 minutes each (about 30 minutes)
#   SOAK_SECONDS=60 SOAK_SOCKETS=2000 scripts/soak.sh   # a quick check
#   SKIP_MEMORY=1 scripts/soak.sh / SKIP_REDIS=1 scripts/soak.sh
#
# Other knobs: SOAK_TTL (ticket lifetime, default 30 s, short so that expiries
# really happen), SOAK_WARMUP (seconds of load before the baseline that counts,
# default 60; 0 for none), SOAK_SEED (default: the clock), SOAK_REDIS_DOWN
# (seconds Redis stays down, default 5).
#
# The per-process open-file limit here is 20,000, so the sockets are split
# over two generator processes, and the memory run (one instance) holds at
# most 18,000: under churn, sockets the clients already dropped still hold a
# file in the server until it reads their end, and at 19,000 held the
# server touched its limit when the shared machine was busy.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${SOAK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DURATION=${SOAK_SECONDS:-600}
SOCKETS=${SOAK_SOCKETS:-20000}
TTL=${SOAK_TTL:-30}
WARMUP=${SOAK_WARMUP:-60}
SEED=${SOAK_SEED:-$(date +%s)}
REDIS_DOWN=${SOAK_REDIS_DOWN:-5}
API_KEY=soak-api-key-0123456789abcdef
JWT_SECRET=soak-jwt-secret-soak-jwt-secret-0123456789
SERVER=target/release/qrlogin
GEN=target/release/qrlogin-bench

source scripts/lib.sh
trap cleanup_jobs EXIT

echo "building (release)…"
nice cargo build --release --quiet --bin qrlogin --bin qrlogin-bench
echo "raw output in $OUT"

# free_port: a port nobody listens on, below the ephemeral range (so no
# client socket of the run can be holding it).
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port found" >&2
    exit 1
}

# start_server NAME PORT [VAR=VALUE…]: start one instance; its pid goes to
# $OUT/NAME.pid (rewritten on a restart, so the generator follows it).
start_server() {
    local name=$1 port=$2
    shift 2
    env QRLOGIN_BIND="127.0.0.1:$port" QRLOGIN_API_KEY="$API_KEY" \
        QRLOGIN_JWT_SECRET="$JWT_SECRET" QRLOGIN_TICKET_TTL="$TTL" \
        QRLOGIN_MAX_LIVE_TICKETS=10000000 QRLOGIN_RATE_TICKETS=0 QRLOGIN_RATE_SOCKETS=0 \
        RUST_LOG="${SOAK_LOG:-warn}" "$@" \
        "$SERVER" >>"$OUT/$name.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$OUT/$name.pid"
    wait_ready "$pid" "$port" "$OUT/$name.log"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# proc NAME: "RSS_KiB FDS" of the instance NAME, read from /proc.
proc() {
    local pid
    pid=$(cat "$OUT/$1.pid")
    echo "$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status") $(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)"
}

# soak NAME SECONDS SOCKETS ARGS…: the generator as two processes
# (half the sockets each, separate source ranges and seeds) in the
# background; sets GENS.
soak() {
    local name=$1 seconds=$2 sockets=$3
    shift 3
    GENS=()
    local half=$((sockets / 2))
    for i in 1 2; do
        local n=$half
        [[ $i == 2 ]] && n=$((sockets - half))
        QRLOGIN_API_KEY="$API_KEY" "$GEN" --src-net $((20 + i)) \
            soak -n "$n" -d "$seconds" --seed $((SEED + i)) --ramp 500 "$@" \
            >"$OUT/$name-gen$i.txt" 2>&1 &
        GENS+=("$!")
    done
}

# wait_gens NAME: wait for both generators; 0 when both passed.
wait_gens() {
    local ok=0 i=0 rc
    for pid in "${GENS[@]}"; do
        i=$((i + 1))
        rc=0
        wait "$pid" || rc=$?
        echo "generator exit status $rc" >>"$OUT/$1-gen$i.txt"
        ((rc == 0)) || ok=1
    done
    cat "$OUT/$1"-gen*.txt >>"$OUT/all.txt"
    return $ok
}

# sum NAME KEY: KEY summed over both generators' RESULT lines.
sum() {
    local total=0 v
    for f in "$OUT/$1"-gen*.txt; do
        v=$({ grep -h '^RESULT' "$f" 2>/dev/null || true; } | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p")
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# worst NAME KEY: the larger of KEY over both generators (latencies).
worst() {
    local w=0 v
    for f in "$OUT/$1"-gen*.txt; do
        v=$({ grep -h '^RESULT' "$f" 2>/dev/null || true; } | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p")
        w=$(awk -v a="$w" -v b="${v:-0}" 'BEGIN { print (b + 0 > a + 0) ? b : a }')
    done
    echo "$w"
}

panics() {
    local n=0 c
    for f in "$@"; do
        c=$(grep -c 'panicked' "$f" 2>/dev/null || true)
        n=$((n + ${c:-0}))
    done
    echo "$n"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

declare -A R # results for the table

# ---------------------------------------------------------------------------
# 1. The memory store: one instance.
if [[ -z "${SKIP_MEMORY:-}" ]]; then
    n=$((SOCKETS < 18000 ? SOCKETS : 18000))
    port=$(free_port)
    start_server mem "$port"
    read -r R[mem_rss0] R[mem_fd0] < <(proc mem)
    if ((WARMUP > 0)); then
        echo "== memory: warm-up, $n browsers for $WARMUP s"
        soak mem-warm "$WARMUP" "$n" --server "127.0.0.1:$port" || true
        wait_gens mem-warm || echo "warm-up reported failures (see $OUT/mem-warm-gen*.txt)"
        sleep 5
    fi
    read -r R[mem_rss1] R[mem_fd1] < <(proc mem)
    echo "== memory: $n browsers for $DURATION s (seed $SEED)"
    soak mem "$DURATION" "$n" --server "127.0.0.1:$port" --server-pid-file "$OUT/mem.pid"
    R[mem_ok]=pass
    wait_gens mem || R[mem_ok]=FAIL
    sleep 5
    read -r R[mem_rss2] R[mem_fd2] < <(proc mem)
    stop_pid "$(cat "$OUT/mem.pid")"
    R[mem_n]=$n
    R[mem_panics]=$(panics "$OUT/mem.log")
    grep -h '^soak: ' "$OUT"/mem-gen*.txt | grep -E 'LOST|terminal states|error ' || true
fi

# ---------------------------------------------------------------------------
# 2. Two instances over Redis, with a Redis restart and an instance restart.
if [[ -z "${SKIP_REDIS:-}" ]]; then
    command -v redis-server >/dev/null || {
        echo "redis-server is missing" >&2
        exit 1
    }
    rport=$(free_port)
    mkdir -p "$OUT/redis"
    # Persistence on: a graceful Redis restart (SIGTERM writes and syncs the
    # append-only file) must keep the live tickets, as it does in service;
    # without it every waiting browser would see its ticket vanish, which is
    # a Redis configuration choice, not what this soak checks. RDB snapshots
    # off: the AOF alone is the durability, and snapshots would only add
    # fork pauses to the figures.
    start_redis() {
        redis-server --port "$rport" --bind 127.0.0.1 --dir "$OUT/redis" \
            --appendonly yes --appendfsync everysec --save '' \
            --maxclients 10000 >>"$OUT/redis.log" 2>&1 &
        REDIS_PID=$!
        for _ in $(seq 50); do
            redis-cli -p "$rport" ping >/dev/null 2>&1 && return 0
            sleep 0.1
        done
        echo "redis-server did not start" >&2
        exit 1
    }
    start_redis
    pa=$(free_port)
    pb=$(free_port)
    while [[ $pb == "$pa" ]]; do pb=$(free_port); done
    REDIS_ENV=(QRLOGIN_REDIS_URL="redis://127.0.0.1:$rport/")
    start_server a "$pa" "${REDIS_ENV[@]}"
    start_server b "$pb" "${REDIS_ENV[@]}"
    SERVERS=(--server "127.0.0.1:$pa" --server "127.0.0.1:$pb")
    read -r R[a_rss0] R[a_fd0] < <(proc a)
    read -r R[b_rss0] R[b_fd0] < <(proc b)
    if ((WARMUP > 0)); then
        echo "== redis: warm-up, $SOCKETS browsers over two instances for $WARMUP s"
        soak redis-warm "$WARMUP" "$SOCKETS" "${SERVERS[@]}"
        wait_gens redis-warm || echo "warm-up reported failures (see $OUT/redis-warm-gen*.txt)"
        sleep 5
    fi
    read -r R[a_rss1] R[a_fd1] < <(proc a)
    read -r R[b_rss1] R[b_fd1] < <(proc b)
    echo "== redis: $SOCKETS browsers over two instances for $DURATION s (seed $SEED)"
    soak redis "$DURATION" "$SOCKETS" "${SERVERS[@]}" \
        --server-pid-file "$OUT/a.pid" --server-pid-file "$OUT/b.pid"
    # Redis restart at 35 % of the run: stopped (SIGTERM: AOF synced),
    # down for a few seconds, started again on the same port and files.
    sleep $((DURATION * 35 / 100))
    echo "== redis: restarting Redis (down for $REDIS_DOWN s)"
    R[redis_restart_at]=$(date -u +%T)
    stop_pid "$REDIS_PID"
    sleep "$REDIS_DOWN"
    start_redis
    # Instance restart at 65 %: SIGTERM (its sockets get 1012), then the
    # same binary on the same port again.
    sleep $((DURATION * 30 / 100))
    echo "== redis: restarting instance b"
    R[instance_restart_at]=$(date -u +%T)
    stop_pid "$(cat "$OUT/b.pid")"
    start_server b "$pb" "${REDIS_ENV[@]}"
    read -r R[b_rss_restart] R[b_fd_restart] < <(proc b)
    R[redis_ok]=pass
    wait_gens redis || R[redis_ok]=FAIL
    sleep 5
    read -r R[a_rss2] R[a_fd2] < <(proc a)
    read -r R[b_rss2] R[b_fd2] < <(proc b)
    R[redis_panics]=$(panics "$OUT/a.log" "$OUT/b.log")
    grep -h '^soak: ' "$OUT"/redis-gen*.txt | grep -E 'LOST|terminal states|error ' || true
fi

# ---------------------------------------------------------------------------
# The table.
echo
echo "qrlogin soak ($(date -u +%F), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); ticket TTL $TTL s, $DURATION s per run, seed $SEED)"
row() { printf '%-34s | %-44s | %s\n' "$1" "$2" "$3"; }
row "figure" "memory, one instance" "Redis, two instances, restarts"
row "----------------------------------" "--------------------------------------------" "------------------------------"
m() { [[ -z "${SKIP_MEMORY:-}" ]] && echo "$1" || echo "not run"; }
r() { [[ -z "${SKIP_REDIS:-}" ]] && echo "$1" || echo "not run"; }
row "browsers (sockets held)" "$(m "${R[mem_n]:-} (peak open $(sum mem peak_open))")" \
    "$(r "$SOCKETS (peak open $(sum redis peak_open))")"
row "tickets / socket connections" "$(m "$(sum mem tickets) / $(sum mem connections)")" \
    "$(r "$(sum redis tickets) / $(sum redis connections)")"
row "fates: confirm/deny/expire/drop" \
    "$(m "$(sum mem fate_confirm)/$(sum mem fate_deny)/$(sum mem fate_expire)/$(sum mem fate_drop)")" \
    "$(r "$(sum redis fate_confirm)/$(sum redis fate_deny)/$(sum redis fate_expire)/$(sum redis fate_drop)")"
row "planned reconnects" "$(m "$(sum mem planned_reconnects)")" "$(r "$(sum redis planned_reconnects)")"
row "seen: confirmed/denied/expired/gone" \
    "$(m "$(sum mem confirmed)/$(sum mem denied)/$(sum mem expired)/$(sum mem gone)")" \
    "$(r "$(sum redis confirmed)/$(sum redis denied)/$(sum redis expired)/$(sum redis gone)")"
row "as expected" "$(m "$(sum mem matched)")" "$(r "$(sum redis matched)")"
row "LOST / LATE / DUPLICATED / MISMATCHED" \
    "$(m "$(sum mem lost) / $(sum mem late) / $(sum mem duplicated) / $(sum mem mismatched)")" \
    "$(r "$(sum redis lost) / $(sum redis late) / $(sum redis duplicated) / $(sum redis mismatched)")"
row "other errors / unfinished" "$(m "$(sum mem errors) / $(sum mem unfinished)")" \
    "$(r "$(sum redis errors) / $(sum redis unfinished)")"
row "server-ended: 1012 / other / reset" \
    "$(m "$(sum mem closed_1012) / $(sum mem closed_other) / $(sum mem reset)")" \
    "$(r "$(sum redis closed_1012) / $(sum redis closed_other) / $(sum redis reset); $(sum redis reopened) reopened")"
row "retries: create / open / action" \
    "$(m "$(sum mem create_retries) / $(sum mem open_retries) / $(sum mem action_retries)")" \
    "$(r "$(sum redis create_retries) / $(sum redis open_retries) / $(sum redis action_retries); $(sum redis given_up) given up, $(sum redis resolved_by_get) by GET")"
row "accepted → terminal frame p50/p99/max" \
    "$(m "$(worst mem push_p50_ms) / $(worst mem push_p99_ms) / $(worst mem push_max_ms) ms")" \
    "$(r "$(worst redis push_p50_ms) / $(worst redis push_p99_ms) / $(worst redis push_max_ms) ms")"
row "panics in server logs" "$(m "${R[mem_panics]:-}")" "$(r "${R[redis_panics]:-}")"
row "RSS MiB: start / warm / after" \
    "$(m "$(mib "${R[mem_rss0]:-0}") / $(mib "${R[mem_rss1]:-0}") / $(mib "${R[mem_rss2]:-0}") (peak $(mib "$(worst mem rss_peak_kib)"))")" \
    "$(r "a: $(mib "${R[a_rss0]:-0}") / $(mib "${R[a_rss1]:-0}") / $(mib "${R[a_rss2]:-0}"); b: $(mib "${R[b_rss0]:-0}") / $(mib "${R[b_rss1]:-0}") / restarted $(mib "${R[b_rss_restart]:-0}") → $(mib "${R[b_rss2]:-0}")")"
row "open files: start / warm / after" \
    "$(m "${R[mem_fd0]:-} / ${R[mem_fd1]:-} / ${R[mem_fd2]:-}")" \
    "$(r "a: ${R[a_fd0]:-} / ${R[a_fd1]:-} / ${R[a_fd2]:-}; b: ${R[b_fd0]:-} / ${R[b_fd1]:-} / restarted ${R[b_fd_restart]:-} → ${R[b_fd2]:-}")"
row "verdict" "$(m "${R[mem_ok]:-}")" "$(r "${R[redis_ok]:-} (Redis restarted ${R[redis_restart_at]:-?}, b ${R[instance_restart_at]:-?} UTC)")"
echo
echo "raw output: $OUT"
[[ "${R[mem_ok]:-pass}" == pass && "${R[redis_ok]:-pass}" == pass && "${R[mem_panics]:-0}" == 0 && "${R[redis_panics]:-0}" == 0 ]]
