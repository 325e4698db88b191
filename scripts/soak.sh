#!/usr/bin/env bash
# The soak: thousands of browsers whose tickets meet random fates (confirm,
# deny, expiry, reconnect, abrupt drop) for a long while, checking that every
# browser sees its ticket's final state exactly once per connection — first
# on the memory store, then on two instances over Redis with a Redis restart
# and an instance restart in the middle, then over Sentinel (a master, a
# replica, three sentinels) with the master killed mid-run, then over TLS
# (rediss://, certificates made here with openssl) with a Redis restart.
# Loopback only, release build, every step bounded; stops by itself and
# prints a summary table at the end, with the worst push around each fault.
# The raw output stays in $SOAK_OUT (a fresh temporary directory unless
# given; its Redis data and certificates are removed at the end).
#
#   scripts/soak.sh                                     # all four runs, 10 minutes each (about an hour)
#   SOAK_SECONDS=60 SOAK_SOCKETS=2000 scripts/soak.sh   # a quick check
#   SKIP_MEMORY=1 / SKIP_REDIS=1 / SKIP_SENTINEL=1 / SKIP_TLS=1 scripts/soak.sh
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
# Stop what is still running and remove what only this run needed (Redis
# data, sentinel configurations, certificates); the reports stay.
finish() {
    cleanup_jobs
    rm -rf "$OUT/redis" "$OUT/sentinel" "$OUT/tls"
}
trap finish EXIT

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

# fault RUN NAME: note, for the generators' report, that a fault happens now.
fault() { echo "$(date +%s%3N) $2" >>"$OUT/$1-faults.txt"; }

# ping_redis PORT [redis-cli args…]: whether the server on PORT answers.
ping_redis() {
    local port=$1
    shift
    redis-cli -h 127.0.0.1 -p "$port" "$@" ping 2>/dev/null | grep -q PONG
}

# wait_for SECONDS WHAT COMMAND…: run COMMAND every 0.1 s until it succeeds;
# after SECONDS, say WHAT did not happen and exit.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        "$@" && return 0
        sleep 0.1
    done
    echo "$what did not happen within $seconds s" >&2
    exit 1
}

# two_instances RUN URL [VAR=VALUE…]: start instances a and b on URL (ports
# in $pa, $pb; --server arguments in SERVERS).
two_instances() {
    local run=$1 url=$2
    shift 2
    pa=$(free_port)
    pb=$(free_port)
    while [[ $pb == "$pa" ]]; do pb=$(free_port); done
    RUN_ENV=(QRLOGIN_REDIS_URL="$url" "$@")
    start_server "$run-a" "$pa" "${RUN_ENV[@]}"
    start_server "$run-b" "$pb" "${RUN_ENV[@]}"
    SERVERS=(--server "127.0.0.1:$pa" --server "127.0.0.1:$pb")
}

# sample RUN REDIS_PORT…: every second, the commands each Redis data node
# has run so far (INFO commandstats: calls per command) and the instances'
# Redis counters and open sockets, appended to $OUT/RUN-samples.txt — what
# shows where the load goes after a fault. Runs until killed (SAMPLER).
# SAMPLE_CLI: extra redis-cli arguments (TLS).
sample() {
    local run=$1
    shift
    while true; do
        local t p
        t=$(date +%s)
        for p in "$@"; do
            echo "$t redis $p $(redis-cli "${SAMPLE_CLI[@]}" -p "$p" info commandstats 2>/dev/null |
                tr -d '\r' | sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\).*/\1=\2/p' | tr '\n' ' ')"
        done
        for p in $pa $pb; do
            echo "$t qrlogin $p $(curl -s -m 1 "http://127.0.0.1:$p/metrics" |
                grep -E '^qrlogin_(redis_[a-z_]+_total|sockets_open)' | sed 's/ /=/' | tr '\n' ' ')"
        done
        sleep 1
    done >>"$OUT/$run-samples.txt" 2>/dev/null
}
SAMPLE_CLI=()

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
        --server-pid-file "$OUT/a.pid" --server-pid-file "$OUT/b.pid" \
        --fault-file "$OUT/redis-faults.txt"
    # Redis restart at 35 % of the run: stopped (SIGTERM: AOF synced),
    # down for a few seconds, started again on the same port and files.
    sleep $((DURATION * 35 / 100))
    echo "== redis: restarting Redis (down for $REDIS_DOWN s)"
    R[redis_restart_at]=$(date -u +%T)
    fault redis redis_restart
    stop_pid "$REDIS_PID"
    sleep "$REDIS_DOWN"
    start_redis
    # Instance restart at 65 %: SIGTERM (its sockets get 1012), then the
    # same binary on the same port again.
    sleep $((DURATION * 30 / 100))
    echo "== redis: restarting instance b"
    R[instance_restart_at]=$(date -u +%T)
    fault redis instance_restart
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
# 3. Sentinel: a master, a replica and three sentinels as processes on free
# ports; two instances on redis+sentinel:// (the replica wait at its
# default, 1 replica, 100 ms). At 40 % the master is killed (SIGKILL, no
# goodbye); the sentinels promote the replica, the instances follow without
# a restart. Once promoted, the old master comes back as a replica of the
# new one (so the wait has a replica again).
if [[ -z "${SKIP_SENTINEL:-}" ]]; then
    sdir="$OUT/sentinel"
    mkdir -p "$sdir"
    # start_data NAME PORT [ARGS…]: a data node (no persistence: the replica
    # is the durability here), pid in $sdir/NAME.pid.
    start_data() {
        local name=$1 port=$2
        shift 2
        mkdir -p "$sdir/$name"
        redis-server --port "$port" --bind 127.0.0.1 --dir "$sdir/$name" \
            --save '' --appendonly no --maxclients 10000 "$@" \
            >>"$OUT/sentinel-$name.log" 2>&1 &
        echo $! >"$sdir/$name.pid"
        wait_for 10 "redis-server on $port answering" ping_redis "$port"
    }
    m1=$(free_port)
    m2=$(free_port)
    while [[ $m2 == "$m1" ]]; do m2=$(free_port); done
    start_data n1 "$m1"
    start_data n2 "$m2" --replicaof 127.0.0.1 "$m1"
    SENTINELS=()
    for i in 1 2 3; do
        sp=$(free_port)
        while [[ " $m1 $m2 ${SENTINELS[*]} " == *" $sp "* ]]; do sp=$(free_port); done
        SENTINELS+=("$sp")
        mkdir -p "$sdir/s$i"
        printf '%s\n' "sentinel monitor mymaster 127.0.0.1 $m1 2" \
            "sentinel down-after-milliseconds mymaster 2000" \
            "sentinel failover-timeout mymaster 10000" \
            "sentinel parallel-syncs mymaster 1" >"$sdir/s$i/sentinel.conf"
        redis-server "$sdir/s$i/sentinel.conf" --sentinel --port "$sp" --bind 127.0.0.1 \
            --dir "$sdir/s$i" >>"$OUT/sentinel-s$i.log" 2>&1 &
    done
    settled() {
        redis-cli -p "$m2" info replication 2>/dev/null | grep -q master_link_status:up || return 1
        local sp
        for sp in "${SENTINELS[@]}"; do
            redis-cli -p "$sp" sentinel master mymaster 2>/dev/null |
                awk 'p { v[k] = $0; p = 0; next } { k = $0; p = 1 } END { exit !(v["num-slaves"] == 1 && v["num-other-sentinels"] == 2) }' ||
                return 1
        done
    }
    wait_for 30 "the sentinels settling" settled
    master_port() { redis-cli -p "${SENTINELS[0]}" sentinel get-master-addr-by-name mymaster 2>/dev/null | sed -n 2p; }
    two_instances sentinel \
        "redis+sentinel://127.0.0.1:${SENTINELS[0]},127.0.0.1:${SENTINELS[1]},127.0.0.1:${SENTINELS[2]}/mymaster"
    read -r R[sa_rss0] R[sa_fd0] < <(proc sentinel-a)
    echo "== sentinel: $SOCKETS browsers over two instances for $DURATION s (seed $SEED)"
    soak sentinel "$DURATION" "$SOCKETS" "${SERVERS[@]}" \
        --server-pid-file "$OUT/sentinel-a.pid" --server-pid-file "$OUT/sentinel-b.pid" \
        --fault-file "$OUT/sentinel-faults.txt"
    sample sentinel "$m1" "$m2" &
    SAMPLER=$!
    sleep $((DURATION * 40 / 100))
    echo "== sentinel: killing the master (port $m1)"
    R[sentinel_kill_at]=$(date -u +%T)
    fault sentinel master_killed
    t0=$(date +%s%3N)
    kill -KILL "$(cat "$sdir/n1.pid")"
    promoted() { [[ "$(master_port)" == "$m2" ]]; }
    wait_for 60 "the sentinels promoting the replica" promoted
    t1=$(date +%s%3N)
    R[sentinel_promoted_ms]=$((t1 - t0))
    fault sentinel replica_promoted
    echo "== sentinel: replica promoted after $((t1 - t0)) ms"
    sleep 10
    echo "== sentinel: the old master comes back as a replica"
    fault sentinel old_master_rejoined
    start_data n1 "$m1" --replicaof 127.0.0.1 "$m2"
    R[sentinel_ok]=pass
    wait_gens sentinel || R[sentinel_ok]=FAIL
    kill "$SAMPLER" 2>/dev/null || true
    sleep 5
    read -r R[sa_rss2] R[sa_fd2] < <(proc sentinel-a)
    R[sentinel_panics]=$(panics "$OUT/sentinel-a.log" "$OUT/sentinel-b.log")
    stop_pid "$(cat "$OUT/sentinel-a.pid")"
    stop_pid "$(cat "$OUT/sentinel-b.pid")"
    grep -h '^soak: ' "$OUT"/sentinel-gen*.txt | grep -E 'LOST|terminal states|error |after ' || true
    cleanup_jobs
fi

# ---------------------------------------------------------------------------
# 4. TLS: redis-server on --tls-port only, with a CA and a server
# certificate (for 127.0.0.1) made here; two instances on rediss:// with
# QRLOGIN_REDIS_CA_FILE. At 50 % Redis is restarted (SIGTERM, the AOF
# synced), so every connection and the subscriptions make new handshakes.
if [[ -z "${SKIP_TLS:-}" ]]; then
    tdir="$OUT/tls"
    mkdir -p "$tdir/data"
    (
        cd "$tdir"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
            -subj '/CN=qrlogin soak CA' 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
            -subj '/CN=127.0.0.1' 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 2 -extfile san.ext 2>/dev/null
    )
    tport=$(free_port)
    TLS_CLI=(--tls --cacert "$tdir/ca.pem")
    start_tls_redis() {
        redis-server --port 0 --tls-port "$tport" --bind 127.0.0.1 --dir "$tdir/data" \
            --tls-cert-file "$tdir/server.pem" --tls-key-file "$tdir/server.key" \
            --tls-ca-cert-file "$tdir/ca.pem" --tls-auth-clients no \
            --appendonly yes --appendfsync everysec --save '' \
            --maxclients 10000 >>"$OUT/tls-redis.log" 2>&1 &
        TLS_REDIS_PID=$!
        wait_for 10 "redis-server on TLS port $tport answering" ping_redis "$tport" "${TLS_CLI[@]}"
    }
    start_tls_redis
    two_instances tls "rediss://127.0.0.1:$tport/" QRLOGIN_REDIS_CA_FILE="$tdir/ca.pem"
    read -r R[ta_rss0] R[ta_fd0] < <(proc tls-a)
    echo "== tls: $SOCKETS browsers over two instances on rediss:// for $DURATION s (seed $SEED)"
    soak tls "$DURATION" "$SOCKETS" "${SERVERS[@]}" \
        --server-pid-file "$OUT/tls-a.pid" --server-pid-file "$OUT/tls-b.pid" \
        --fault-file "$OUT/tls-faults.txt"
    SAMPLE_CLI=("${TLS_CLI[@]}")
    sample tls "$tport" &
    SAMPLER=$!
    sleep $((DURATION * 50 / 100))
    echo "== tls: restarting Redis (down for $REDIS_DOWN s)"
    R[tls_restart_at]=$(date -u +%T)
    fault tls redis_restart
    stop_pid "$TLS_REDIS_PID"
    sleep "$REDIS_DOWN"
    start_tls_redis
    R[tls_ok]=pass
    wait_gens tls || R[tls_ok]=FAIL
    kill "$SAMPLER" 2>/dev/null || true
    sleep 5
    read -r R[ta_rss2] R[ta_fd2] < <(proc tls-a)
    R[tls_panics]=$(panics "$OUT/tls-a.log" "$OUT/tls-b.log")
    grep -h '^soak: ' "$OUT"/tls-gen*.txt | grep -E 'LOST|terminal states|error |after ' || true
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
row "worst push around each fault" "$(m "no faults")" \
    "$(r "Redis restart $(worst redis after_redis_restart_push_max_ms) ms, b restart $(worst redis after_instance_restart_push_max_ms) ms")"
echo
sn() { [[ -z "${SKIP_SENTINEL:-}" ]] && echo "$1" || echo "not run"; }
tl() { [[ -z "${SKIP_TLS:-}" ]] && echo "$1" || echo "not run"; }
row "figure" "Sentinel, master killed" "TLS (rediss://), Redis restart"
row "----------------------------------" "--------------------------------------------" "------------------------------"
two() { row "$1" "$(sn "$2")" "$(tl "$3")"; }
f() { echo "$(sum "$1" "$2")"; }
two "browsers (sockets held)" "$SOCKETS (peak open $(f sentinel peak_open))" "$SOCKETS (peak open $(f tls peak_open))"
two "tickets / socket connections" "$(f sentinel tickets) / $(f sentinel connections)" "$(f tls tickets) / $(f tls connections)"
two "seen: confirmed/denied/expired/gone" \
    "$(f sentinel confirmed)/$(f sentinel denied)/$(f sentinel expired)/$(f sentinel gone)" \
    "$(f tls confirmed)/$(f tls denied)/$(f tls expired)/$(f tls gone)"
two "as expected" "$(f sentinel matched)" "$(f tls matched)"
two "LOST / LATE / DUPLICATED / MISMATCHED" \
    "$(f sentinel lost) / $(f sentinel late) / $(f sentinel duplicated) / $(f sentinel mismatched)" \
    "$(f tls lost) / $(f tls late) / $(f tls duplicated) / $(f tls mismatched)"
two "other errors / unfinished" "$(f sentinel errors) / $(f sentinel unfinished)" "$(f tls errors) / $(f tls unfinished)"
two "retries: create / open / action" \
    "$(f sentinel create_retries) / $(f sentinel open_retries) / $(f sentinel action_retries)" \
    "$(f tls create_retries) / $(f tls open_retries) / $(f tls action_retries)"
two "accepted → terminal frame p50/p99/max" \
    "$(worst sentinel push_p50_ms) / $(worst sentinel push_p99_ms) / $(worst sentinel push_max_ms) ms" \
    "$(worst tls push_p50_ms) / $(worst tls push_p99_ms) / $(worst tls push_max_ms) ms"
two "worst push around each fault" \
    "kill $(worst sentinel after_master_killed_push_max_ms) ms ($(f sentinel after_master_killed_pushes) pushes), promoted $(worst sentinel after_replica_promoted_push_max_ms) ms, rejoined $(worst sentinel after_old_master_rejoined_push_max_ms) ms" \
    "restart $(worst tls after_redis_restart_push_max_ms) ms ($(f tls after_redis_restart_pushes) pushes)"
two "fault → recovery" "promoted ${R[sentinel_promoted_ms]:-?} ms after the kill (${R[sentinel_kill_at]:-?} UTC)" \
    "Redis down $REDIS_DOWN s (${R[tls_restart_at]:-?} UTC)"
two "panics in server logs" "${R[sentinel_panics]:-}" "${R[tls_panics]:-}"
two "RSS MiB of a: start / after" "$(mib "${R[sa_rss0]:-0}") / $(mib "${R[sa_rss2]:-0}")" "$(mib "${R[ta_rss0]:-0}") / $(mib "${R[ta_rss2]:-0}")"
two "verdict" "${R[sentinel_ok]:-}" "${R[tls_ok]:-}"
echo
echo "raw output: $OUT"
ok=1
for k in mem redis sentinel tls; do
    [[ "${R[${k}_ok]:-pass}" == pass && "${R[${k}_panics]:-0}" == 0 ]] || ok=0
done
((ok == 1))
