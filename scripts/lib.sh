# Shared by the measurement scripts (perf.sh, soak.sh, profile-confirm.sh);
# sourced, not run.

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
