#!/usr/bin/env python3
"""Reads `perf script -F pid,tid,cpu,time,event,trace` output of
syscalls:sys_enter_sendto, syscalls:sys_exit_recvfrom and sched:sched_switch
(see latency-segments.sh) and splits each push into its three segments.

    latency_segments.py EVENTS SERVER_PID GENERATOR_PID SLOW_US

Any server whose push is one request read with recvfrom and one frame
written with sendto can be read this way, not only qrlogin: a peer's
trace shows whether its tail has the same causes in the same minutes.
"""
import bisect, collections, re, sys
path, server, gen, slow_us = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sends = {server: [], gen: []}   # (time, length) of sendto
reads = {server: [], gen: []}   # (time, length) of recvfrom returning data
runs = {0: [], 1: []}           # (start, end, task) per CPU
current = {}
owner = {}                      # thread id -> process id, from event headers
line_re = re.compile(r'\s*(\d+)/(\d+)\s+\[(\d+)\]\s+(\d+\.\d+):\s+(\S+):\s*(.*)')
for line in open(path):
    m = line_re.match(line)
    if not m:
        continue
    pid, cpu, t, event, rest = m.group(1), int(m.group(3)), float(m.group(4)), m.group(5), m.group(6)
    owner[m.group(2)] = pid
    if event == 'sched:sched_switch':
        s = re.search(r'next_comm=(.*) next_pid=(\d+)', rest)
        if cpu in runs:
            if cpu in current:
                runs[cpu].append((current[cpu][0], t, current[cpu][1]))
            current[cpu] = (t, (s.group(1), s.group(2)))
    elif pid in sends and event == 'syscalls:sys_enter_sendto':
        sends[pid].append((t, int(re.search(r'len: (0x[0-9a-f]+)', rest).group(1), 16)))
    elif pid in reads and event == 'syscalls:sys_exit_recvfrom':
        reads[pid].append((t, int(rest.split()[-1], 16)))

def pair(a, b):
    """Each (time, length) of `a` with the first later one of `b` of the
    same length: a request with its read, a frame with its read."""
    waiting = collections.defaultdict(collections.deque)
    for t, n in b:
        waiting[n].append(t)
    out = []
    for t, n in a:
        q = waiting[n]
        while q and q[0] < t:
            q.popleft()
        if q:
            out.append((t, q.popleft()))
    return out

# The generator's sendto calls are requests; the service's are frames.
a = pair(sends[gen], reads[server])
c = pair(sends[server], reads[gen])
frames = sorted(s for s, _ in c)
read_of_frame = dict(c)
confirms = []
for sent, read in a:
    i = bisect.bisect_left(frames, read)
    if i == len(frames):
        continue
    frame = frames[i]
    got = read_of_frame.get(frame)
    if got is None or frame - read > 0.05:
        continue
    confirms.append((sent, read, frame, got))

def pct(values):
    v = sorted(values)
    n = len(v)
    at = lambda q: v[min(n - 1, int(n * q))] * 1e6
    return 'p50 %6.0f  p90 %6.0f  p99 %6.0f  p99.9 %6.0f  max %6.0f us' % (
        at(.5), at(.9), at(.99), at(.999), v[-1] * 1e6)

print('%d pushes traced (service pid %s on cpu 0, generator pid %s on cpu 1)' % (len(confirms), server, gen))
print('  A request written -> read by the service: ' + pct([r - s for s, r, f, g in confirms]))
print('  B read -> push frame written (service):    ' + pct([f - r for s, r, f, g in confirms]))
print('  C frame written -> read by the generator:  ' + pct([g - f for s, r, f, g in confirms]))
print('  A+B+C:                                      ' + pct([g - s for s, r, f, g in confirms]))

def process_of(tid):
    """A thread seen only as a switch target: its process from /proc."""
    try:
        status = dict(l.split(':', 1) for l in open('/proc/%s/status' % tid))
        tgid = status['Tgid'].strip()
        return tgid, open('/proc/%s/comm' % tgid).read().strip()
    except (OSError, KeyError, ValueError):
        return tid, None

def label(comm, tid):
    pid = owner.get(tid)
    name = None
    if pid is None:
        pid, name = process_of(tid)
    if pid == server:
        return 'the service'
    if pid == gen:
        return 'the generator'
    nice = ''
    try:
        nice = ', nice %s' % open('/proc/%s/stat' % tid).read().rsplit(')', 1)[1].split()[16]
    except (OSError, IndexError):
        pass
    return '%s (pid %s%s%s)' % (comm, pid, ' ' + name if name and name != comm else '', nice)

def ran(cpu, start, end):
    """Who had `cpu` between start and end, and for how long (idle left out)."""
    took = collections.Counter()
    for s, e, (comm, tid) in runs[cpu]:
        if e > start and s < end and tid != '0':
            took[label(comm, tid)] += min(e, end) - max(s, start)
    return took

slow = [x for x in confirms if x[3] - x[0] > slow_us / 1e6]
print('%d pushes slower than %d us; where their time went, summed:' % (len(slow), slow_us))
seg = collections.Counter()
cpu0, cpu1 = collections.Counter(), collections.Counter()
for s, r, f, g in slow:
    seg['A'] += r - s
    seg['B'] += f - r
    seg['C'] += g - f
    cpu0 += ran(0, s, r)
    cpu1 += ran(1, f, g)
total = sum(seg.values()) or 1
print('  segments: ' + ', '.join('%s %.0f %%' % (k, 100 * v / total) for k, v in sorted(seg.items())))
def show(name, counter):
    top = ', '.join('%s %.1f ms' % (k, v * 1e3) for k, v in counter.most_common(6))
    print('  %s: %s' % (name, top or 'nothing'))
show('ran on cpu 0 while their requests waited (A)', cpu0)
show('ran on cpu 1 while their frames waited (C)', cpu1)
