# Shared by the measurement scripts (perf.sh, soak.sh, profile-confirm.sh,
# profile-setup.sh); sourced, not run.

# cleanup_jobs: stop this shell's jobs that are still running. Only jobs: a
# remembered pid of a process already gone may belong to someone else by now.
cleanup_jobs() {
    local jobs
    jobs=$(jobs -p)
    [[ -z "$jobs" ]] || kill $jobs 2>/dev/null || true
    wait 2>/dev/null || true
}

# wait_ready PID PORT LOG [SECONDS]: wait until the service started as PID
# answers /healthz on PORT (ours, not some other process on that port); if
# it dies or does not answer within SECONDS (10), show LOG and exit.
wait_ready() {
    local pid=$1 port=$2 log=$3 seconds=${4:-10}
    for _ in $(seq $((seconds * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "the service on port $port did not start:" >&2
    cat "$log" >&2
    exit 1
}

# profile_server WRAPPER…: the service on $PORT as the profiling scripts run
# it (key $API_KEY, no per-IP quotas, log in $OUT/server.log), under
# WRAPPER (valgrind, or nothing); sets SERVER_PID.
profile_server() {
    env QRLOGIN_BIND="127.0.0.1:$PORT" QRLOGIN_API_KEY="$API_KEY" \
        QRLOGIN_JWT_SECRET=profile-jwt-secret-profile-jwt-secret-0123 \
        QRLOGIN_TICKET_TTL=600 QRLOGIN_RATE_TICKETS=0 QRLOGIN_RATE_SOCKETS=0 RUST_LOG=warn \
        "$@" target/release/qrlogin >"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    # Under valgrind the service takes a while to start.
    wait_ready "$SERVER_PID" "$PORT" "$OUT/server.log" 60
}

# callgrind_total FILE: the instructions callgrind_annotate's FILE counts.
callgrind_total() {
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$1"
}

# callgrind_share FILE N FUNCTION: the first line of FILE naming FUNCTION,
# its inclusive instructions per N and its share of the total.
callgrind_share() {
    awk -v f="$3" -v t="$(callgrind_total "$1")" -v n="$2" '
        index($0, f) { gsub(",", "", $1); printf "%.0f (%.0f %%)", $1 / n, 100 * $1 / t; exit }
    ' "$1"
}
