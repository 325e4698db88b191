#!/usr/bin/env bash
# Who takes a core from a process: every wait of a thread for its core longer
# than a threshold, and the task that ran on that core just before, while a
# command runs. This is how the steady-phase tail of the side-by-side runs
# was traced to a kernel thread (docs/performance.md, "The steady tail").
#
#   scripts/sched-waits.sh -t 'tokio-rt-worker|loadgen' -- <command that drives the load>
#   MIN_MS=0.5 scripts/sched-waits.sh -t php -- ...
#
# -t: an extended regex of the thread names to watch (default: the service's
# worker threads). Needs perf (Debian: linux-perf) and root; records every
# core (`perf sched record -a`) for as long as the command runs, so keep the
# command short (tens of seconds).
set -euo pipefail
watch='tokio-rt-worker'
if [[ ${1:-} == -t ]]; then watch=$2; shift 2; fi
[[ ${1:-} == -- ]] && shift
[[ $# -gt 0 ]] || { sed -n 2,13p "$0" >&2; exit 2; }
command -v perf >/dev/null || { echo "needs perf (Debian: linux-perf)" >&2; exit 1; }
out=$(mktemp -d)
perf sched record -a -o "$out/sched.data" -- "$@" >"$out/command.log" 2>&1 || {
    echo "the command failed; its output: $out/command.log" >&2; exit 1; }
perf sched timehist -i "$out/sched.data" 2>/dev/null >"$out/timehist.txt"
# timehist columns: time, [cpu], task[tid/pid], wait, sch delay, run time (ms).
awk -v watch="$watch" -v min="${MIN_MS:-1.0}" '
    $1 ~ /^[0-9]/ && NF >= 6 {
        cpu = $2; task = $3; sub(/\[[0-9\/]*\]$/, "", task)
        delay = $(NF - 1) + 0
        if (task ~ "^(" watch ")$" && delay > min) {
            waits[cpu " " task]++
            if (delay > worst[cpu " " task]) worst[cpu " " task] = delay
            before[cpu " " task " after " prev[cpu]]++
        }
        prev[cpu] = task
    }
    END {
        for (k in waits) printf "a %s waited > %s ms %d times (longest %.2f ms)\n", k, min, waits[k], worst[k]
        for (k in before) printf "b %06d %4d  %s\n", 999999 - before[k], before[k], k
    }' "$out/timehist.txt" | sort | sed -E 's/^a //; s/^b [0-9]{6}/ /'
echo "raw: $out"
