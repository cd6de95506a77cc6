#!/usr/bin/env python3
"""`make bench`: the same workloads on our build/mqueue.so and on Debian's C
mqueue.so, back to back on the same Kamailio; prints each metric for both and
the ratio ours/C.

- Instructions (primary): Kamailio runs under `valgrind --tool=callgrind`;
  a figure is the difference of the worker's (or, for SIP, all processes')
  instruction totals between a run with the operations and the same run with
  plain variable assignments (or no traffic), divided by the operations.
- CPU: /proc/<pid>/schedstat of every Kamailio process, summed.
- Wall-clock: $TV(Sn) around loops in one worker
  (event_route[core:worker-one-init]), minus the baseline loop.
- Memory: `kamcmd core.shmmem` before and after queueing.

One run goes through every workload of WORKLOADS;
`BENCH_ONLY=sizes,latency` runs the named ones. Each size comes from a
BENCH_* variable below, so a smoke run of everything takes tiny ones, e.g.
BENCH_N=1000 BENCH_CG_N=200 BENCH_SIP_N=200 BENCH_CPU_N=1000 BENCH_REPS=1
BENCH_UNIQUE_K=100,200 BENCH_MEMORY_N=1000 BENCH_QUEUES=10 BENCH_SIZE_N=100
BENCH_LATENCY_N=100 BENCH_NEAR_EMPTY_N=100 BENCH_REDIS_N=500
BENCH_DURABLE_N=1000 BENCH_DURABLE_SYNC_N=50 BENCH_DURABLE_START_N=1000."""

import os
import shutil
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The host: Debian's Kamailio, or KAMAILIO_BIN (as for the build); its
# module directory holds the C mqueue.so, the oracle of the same version.
KAMAILIO = os.environ.get("KAMAILIO_BIN") or "/usr/sbin/kamailio"


def modules_dir():
    if os.environ.get("BENCH_KAMAILIO_MODULES"):
        return os.environ["BENCH_KAMAILIO_MODULES"]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(KAMAILIO)))
    triplet = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"],
                             capture_output=True, text=True).stdout.strip()
    subs = (["lib/%s/kamailio/modules" % triplet] if triplet else []) + ["lib64/kamailio/modules",
                                                                        "lib/kamailio/modules"]
    for sub in subs:
        if os.path.exists(os.path.join(prefix, sub, "mqueue.so")):
            return os.path.join(prefix, sub)
    sys.exit("no kamailio/modules/mqueue.so under %s: set BENCH_KAMAILIO_MODULES" % prefix)


MODS = modules_dir()
IMPLS = {"rust": os.environ.get("BENCH_MODULE") or os.path.join(ROOT, "build/mqueue.so"),
         "c": MODS + "/mqueue.so"}
N = int(os.environ.get("BENCH_N", "100000"))
CG_N = int(os.environ.get("BENCH_CG_N", "20000"))
SIP_N = int(os.environ.get("BENCH_SIP_N", "20000"))
CPU_N = int(os.environ.get("BENCH_CPU_N", "1000000"))
# Runs of the CPU workloads (SIP, contention) whose median is kept.
REPS = int(os.environ.get("BENCH_REPS", "5"))
# Queued keys of the unique-key workload; growth is from the first to the last.
UNIQUE_K = tuple(int(x) for x in os.environ.get("BENCH_UNIQUE_K", "1000,10000,50000").split(","))
MEMORY_N = int(os.environ.get("BENCH_MEMORY_N", "100000"))
QUEUES = int(os.environ.get("BENCH_QUEUES", "1000"))
# BENCH_PORT: another port when benches run side by side.
PORT = int(os.environ.get("BENCH_PORT", "36500"))

HEAD = """#!KAMAILIO
debug=2
log_stderror=yes
children={children}
auto_aliases=no
exit_timeout=20
max_while_loops=10000000
listen=udp:127.0.0.1:{port}
mpath="{mods}/"
loadmodule "ctl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "sl.so"
{loads}
loadmodule "{module}"
modparam("ctl", "binrpc", "unix:{dir}/ctl.sock")
{params}
event_route[core:worker-one-init] {{
{script}
xlog("L_INFO", "B|END\\n");
}}
{route}
"""
ROUTE = 'request_route { sl_send_reply("200", "OK"); exit; }'

VAL64 = "v" * 64


def group_pids(pgid):
    pids = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open("/proc/%s/stat" % e) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(e))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_ns(pgid):
    """CPU time so far of every process in Kamailio's group (schedstat)."""
    total = 0
    for pid in group_pids(pgid):
        try:
            with open("/proc/%d/schedstat" % pid) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def wait_log(log, p, marker, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        log.seek(0)
        text = log.read()
        if marker in text:
            return text
        if p.poll() is not None:
            sys.exit("kamailio exited:\n" + text[-3000:])
        time.sleep(0.2)
    sys.exit("timeout waiting for %s" % marker)


def run(module, params, script, rpc_after=None, extra_args=(), callgrind=False, children=1,
        loads="", route=ROUTE, during=None, cg_opts=()):
    """`run_once`, again when a callgrind run lost a process's counts
    (Kamailio 5.6 can leave a child stuck at shutdown until it is killed)."""
    for _ in range(4):
        r = run_once(module, params, script, rpc_after, extra_args, callgrind, children, loads, route, during,
                     cg_opts)
        if r is not None:
            return r
    sys.exit("callgrind runs keep losing processes' counts")


def run_once(module, params, script, rpc_after, extra_args, callgrind, children, loads, route, during,
             cg_opts=()):
    """Starts Kamailio, waits for B|END, runs `during(dir, pgid)` if given,
    then stops it. Returns the B| lines, the RPC reply, what `during`
    returned, and with callgrind the instruction totals per process."""
    with tempfile.TemporaryDirectory(prefix="mqueue-bench-") as d:
        cfg = os.path.join(d, "k.cfg")
        with open(cfg, "w") as f:
            f.write(HEAD.format(port=PORT, mods=MODS, module=module, dir=d, params=params.replace("@DIR@", d),
                                script=script,
                                children=children, loads=loads, route=route))
        log = open(os.path.join(d, "log"), "w+")
        cmd = [KAMAILIO, "-DD", "-E", "-f", cfg, "-w", d, "-Y", d, *extra_args]
        if callgrind:
            # pkg memory on tlsf: Debian's default pkg allocator (q_malloc
            # with debugging) costs tens of thousands of instructions per
            # string assignment, swamping the script baseline; it is the
            # same for both modules. The shm allocator stays as asked.
            cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s/cg.%%p" % d, *cg_opts] + cmd + ["-X", "tlsf"]
        p = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        try:
            text = wait_log(log, p, "B|END")
            rpc = None
            if rpc_after:
                rpc = subprocess.run(["kamcmd", "-s", "unix:%s/ctl.sock" % d, *rpc_after],
                                     capture_output=True, text=True).stdout
            got = during(d, p.pid, log, p) if during else None
            log.seek(0)
            text = log.read()
            lines = dict(l.split("B|", 1)[1].split("=", 1) for l in text.splitlines()
                         if "B|" in l and "=" in l.split("B|", 1)[1])
            irs = []
            run_once.shm_mallocs = 0
            if callgrind:
                procs = len(group_pids(p.pid))
                p.send_signal(15)
                p.wait(timeout=300)
                for name in os.listdir(d):
                    if name.startswith("cg.") and os.environ.get("BENCH_KEEP_CG"):
                        # For callgrind_annotate: the outputs kept by name.
                        shutil.copy(os.path.join(d, name), os.environ["BENCH_KEEP_CG"])
                    if name.startswith("cg."):
                        with open(os.path.join(d, name)) as f:
                            cg = f.read()
                            m = re.search(r"^totals:\s*(\d+)", cg, re.M)
                            if m:
                                irs.append(int(m.group(1)))
                            run_once.shm_mallocs += shm_malloc_calls(cg)
                if len(irs) < procs:
                    return None
            return lines, rpc, got, irs
        finally:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait()


def timed(label, body):
    return ('$var(t0) = $TV(Sn);\n%s\n$var(t1) = $TV(Sn);\n'
            'xlog("L_INFO", "B|%s=$var(t0) $var(t1)\\n");\n') % (body, label)


def elapsed(v):
    a, b = v.split()
    return float(b) - float(a)


def loop(n, body):
    return '$var(i) = 0;\nwhile($var(i) < %d) {\n%s\n$var(i) = $var(i) + 1;\n}' % (n, body)


def script_loop(module, extra=()):
    params = 'modparam("mqueue", "mqueue", "name=q")'
    script = ('$var(v) = "%s";\n' % VAL64 +
              timed("base_add", loop(N, '$var(j) = $var(i);')) +
              timed("add", loop(N, 'mq_add("q", "key-$var(i)", "%s");' % VAL64)) +
              '$var(kk) = "key-00000";\n' +
              timed("base_fetch", loop(N, '$var(k) = $var(kk); $var(x) = $var(v);')) +
              timed("fetch", loop(N, 'mq_fetch("q"); $var(k) = $mqk(q); $var(x) = $mqv(q);')))
    r, _, _, _ = run(module, params, script, extra_args=tuple(extra) + ("-X", "tlsf"))
    add = (elapsed(r["add"]) - elapsed(r["base_add"])) / N * 1e9
    fetch = (elapsed(r["fetch"]) - elapsed(r["base_fetch"])) / N * 1e9
    return {"add ns": add, "fetch ns": fetch, "pair ns": add + fetch}


def worker_ir(module, script, extra, params='modparam("mqueue", "mqueue", "name=q")'):
    _, _, _, irs = run(module, params, script, extra_args=extra, callgrind=True)
    return max(irs)


def worker_cpu(d, pgid, log, p):
    """`during` hook: the CPU time of the busiest process (the worker that
    ran the loops; the others idle)."""
    best = 0
    for pid in group_pids(pgid):
        try:
            with open("/proc/%d/schedstat" % pid) as f:
                best = max(best, int(f.read().split()[0]))
        except OSError:
            pass
    return best


def script_loop_cpu(module, extra=()):
    """Workload 1 in CPU time (schedstat of the worker), natively, with the
    same three runs as the instruction counts and BENCH_CPU_N operations
    (enough to dwarf the start-up's own variation; shm sized for them);
    median of 3."""
    base_add = loop(CPU_N, '$var(j) = $var(i);')
    add = loop(CPU_N, 'mq_add("q", "key-$var(i)", "%s");' % VAL64)
    base_fetch = ('$var(v) = "%s";\n$var(kk) = "key-00000";\n' % VAL64 +
                  loop(CPU_N, '$var(k) = $var(kk); $var(x) = $var(v);'))
    fetch = loop(CPU_N, 'mq_fetch("q"); $var(k) = $mqk(q); $var(x) = $mqv(q);')
    params = 'modparam("mqueue", "mqueue", "name=q")'
    args = tuple(extra) + ("-X", "tlsf", "-m", str(64 + CPU_N * 200 // (1 << 20)))

    def cpu(script):
        runs = sorted(run(module, params, script, extra_args=args, during=worker_cpu)[2] for _ in range(3))
        return runs[1]
    b, a1, a2 = cpu(base_add + base_fetch), cpu(add + base_fetch), cpu(add + fetch)
    return {"add CPU ns": (a1 - b) / CPU_N, "fetch CPU ns": (a2 - a1) / CPU_N, "pair CPU ns": (a2 - b) / CPU_N}


def script_loop_instructions(module, extra=()):
    """Workload 1 in instructions: three callgrind runs (baseline loops;
    adds + baseline fetch loop; adds + fetches), differences per operation."""
    # Baselines: the loop with a plain int assignment (adds), and with two
    # string assignments of the fetched key's and value's lengths (fetches).
    base_add = loop(CG_N, '$var(j) = $var(i);')
    add = loop(CG_N, 'mq_add("q", "key-$var(i)", "%s");' % VAL64)
    base_fetch = ('$var(v) = "%s";\n$var(kk) = "key-00000";\n' % VAL64 +
                  loop(CG_N, '$var(k) = $var(kk); $var(x) = $var(v);'))
    fetch = loop(CG_N, 'mq_fetch("q"); $var(k) = $mqk(q); $var(x) = $mqv(q);')
    b = worker_ir(module, base_add + base_fetch, extra)
    a1 = worker_ir(module, add + base_fetch, extra)
    a2 = worker_ir(module, add + fetch, extra)
    return {"add Ir": (a1 - b) / CG_N, "fetch Ir": (a2 - a1) / CG_N, "pair Ir": (a2 - b) / CG_N}


SIZES = tuple(int(x) for x in os.environ.get("BENCH_SIZES", "64,1024,4096,8192,16384").split(","))
SIZE_N = int(os.environ.get("BENCH_SIZE_N", "2000"))


def value_sizes(module, size):
    """Workload 1 with values of `size` bytes (a power of two, built in the
    script): instructions per add, per fetch (with $mqk/$mqv read into
    variables) and per pair, as script_loop_instructions."""
    build = '$var(v) = "x";\nwhile ($(var(v){s.len}) < %d) { $var(v) = $var(v) + $var(v); }\n' % size
    base_add = loop(SIZE_N, '$var(j) = $var(i);')
    add = loop(SIZE_N, 'mq_add("q", "key-$var(i)", "$var(v)");')
    base_fetch = '$var(kk) = "key-00000";\n' + loop(SIZE_N, '$var(k) = $var(kk); $var(x) = $var(v);')
    fetch = loop(SIZE_N, 'mq_fetch("q"); $var(k) = $mqk(q); $var(x) = $mqv(q);')
    extra = ("-m", "256")
    # The core prints "$var(v)" through its pv buffer (8 KB by default).
    params = 'pv_buffer_size=65536\nmodparam("mqueue", "mqueue", "name=q")'
    b = worker_ir(module, build + base_add + base_fetch, extra, params)
    a1 = worker_ir(module, build + add + base_fetch, extra, params)
    a2 = worker_ir(module, build + add + fetch, extra, params)
    return {"add Ir": (a1 - b) / SIZE_N, "fetch Ir": (a2 - a1) / SIZE_N, "pair Ir": (a2 - b) / SIZE_N}


LATENCY_N = int(os.environ.get("BENCH_LATENCY_N", "3000"))


def latency(module, consume):
    """Add-to-fetch delay: SIP MESSAGEs at 1,000/s, each queued with
    $TV(Sn), one rtimer consumer running `consume` (a route body that
    fetches and logs L|added|now). Returns (median ms, p99 ms)."""
    params = """modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=c;interval=%s;mode=1")
modparam("rtimer", "exec", "timer=c;route=CONSUME")""" % consume[0]
    route = """route[CONSUME] {
%s
}
request_route {
    mq_add("q", "$ci", "$TV(Sn)");
    sl_send_reply("200", "OK");
    exit;
}""" % consume[1]

    def during(d, pgid, log, p):
        time.sleep(1)
        sipp(d, LATENCY_N, 1000)
        deadline = time.time() + 60
        while True:
            log.seek(0)
            lines = [l for l in log.read().splitlines() if "L|" in l]
            if len(lines) >= LATENCY_N or time.time() > deadline:
                return lines
            time.sleep(0.2)
    _, _, lines, _ = run(module, params, "", children=2, loads='loadmodule "rtimer.so"', route=route,
                         during=during)
    delays = sorted((float(b) - float(a)) * 1000 for a, b in
                    (l.split("L|", 1)[1].split("|")[:2] for l in lines))
    if not delays:
        return float("nan"), float("nan")
    return delays[len(delays) // 2], delays[min(len(delays) - 1, int(len(delays) * 0.99))]


LOG_ITEM = 'xlog("L_INFO", "L|$mqv(q)|$TV(Sn)|\\n");'
CONSUMERS = (
    ("mq_fetch_wait", ("1000u", 'while (mq_fetch_wait("q", 1000)) { %s }' % LOG_ITEM), ("rust",)),
    ("poll every 10 ms", ("10000u", 'while (mq_fetch("q")) { %s }' % LOG_ITEM), ("rust", "c")),
    ("poll every 100 ms", ("100000u", 'while (mq_fetch("q")) { %s }' % LOG_ITEM), ("rust", "c")),
)


def latency_table():
    for name, consume, impls in CONSUMERS:
        res = {imp: latency(IMPLS[imp], consume) for imp in impls}
        for i, key in enumerate(("median ms", "p99 ms")):
            theirs = res["c"][i] if "c" in res else None
            row("add-to-fetch %s, %s" % (name, key), res["rust"][i], theirs, 3)


def value_size_table():
    for size in SIZES:
        res = {imp: value_sizes(path, size) for imp, path in IMPLS.items()}
        for key in ("add Ir", "fetch Ir", "pair Ir"):
            row("value %5d B: %s" % (size, key), res["rust"][key], res["c"][key])


SIP_ROUTE = """route[DRAIN] {
    $var(n) = 0;
    while (mq_fetch("q")) { $var(n) = $var(n) + 1; }
    if ($var(n) > 0) { xlog("L_INFO", "D|$var(n)\\n"); }
}
request_route {
    mq_add("q", "$ci", "%s");
    sl_send_reply("200", "OK");
    exit;
}""" % VAL64

SIP_PARAMS = """modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=d1;interval=10000u;mode=1")
modparam("rtimer", "exec", "timer=d1;route=DRAIN")
modparam("rtimer", "timer", "name=d2;interval=10000u;mode=1")
modparam("rtimer", "exec", "timer=d2;route=DRAIN")"""


def drained(text, marker="D|"):
    return sum(int(l.split(marker, 1)[1].split()[0]) for l in text.splitlines() if marker in l)


def sipp(d, count, rate):
    scen = os.path.join(ROOT, "tests/sipp/message.xml")
    r = subprocess.run(["sipp", "127.0.0.1:%d" % PORT, "-sf", scen, "-m", str(count), "-r", str(rate),
                        "-i", "127.0.0.1", "-p", str(PORT + 1), "-nostdin", "-timeout", "%ds" % (count // rate + 120),
                        "-timeout_error"], cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return r.returncode


def sip_traffic(count, rate, expect_items):
    """`during` hook: sends `count` MESSAGEs, waits for the drains; returns
    (CPU ns spent by Kamailio during the traffic, items drained, sipp rc)."""
    def during(d, pgid, log, p):
        time.sleep(1)
        c0 = cpu_ns(pgid)
        rc = sipp(d, count, rate) if count else 0
        deadline = time.time() + 300
        while True:
            log.seek(0)
            n = drained(log.read())
            if n >= expect_items or time.time() > deadline:
                break
            time.sleep(0.2)
        time.sleep(0.5)
        log.seek(0)
        return cpu_ns(pgid) - c0, drained(log.read()), rc
    return during


def sip_cpu(module):
    """Workload 3, CPU: children=2, request_route adds, two rtimer drains."""
    _, _, (cpu, items, rc), _ = run(module, SIP_PARAMS, "", children=2, loads='loadmodule "rtimer.so"',
                                    route=SIP_ROUTE, during=sip_traffic(SIP_N, 2000, SIP_N))
    return {"CPU ns/msg": cpu / SIP_N, "lost": SIP_N - items if rc == 0 else float("nan")}


def sip_instructions(module):
    """Workload 3, instructions of all processes: a run with n messages
    minus a run without traffic."""
    loads = 'loadmodule "rtimer.so"'
    n = max(SIP_N // 20, 500)
    _, _, _, idle = run(module, SIP_PARAMS, "", children=2, loads=loads, route=SIP_ROUTE, callgrind=True,
                        during=sip_traffic(0, 1, 0))
    _, _, (_, items, _), busy = run(module, SIP_PARAMS, "", children=2, loads=loads, route=SIP_ROUTE,
                                    callgrind=True, during=sip_traffic(n, 100, n))
    return {"Ir/msg": (sum(busy) - sum(idle)) / n, "lost (callgrind run)": n - items}


def shm_malloc_calls(cg):
    """Calls of the shm allocator's malloc in a callgrind output written
    with --compress-strings=no (qm_shm_malloc, fm_shm_malloc, ...)."""
    n, callee = 0, None
    for line in cg.splitlines():
        if line.startswith("cfn="):
            callee = line[4:].strip()
        elif line.startswith("calls=") and callee is not None:
            if re.fullmatch(r"\w+_shm_malloc", callee):
                n += int(line[6:].split()[0])
            callee = None
    return n


# Consumers faster than producers keep the queue near empty: every add
# refills an empty queue (the pattern of issue 19).
NEAR_EMPTY_PARAMS = """modparam("mqueue", "mqueue", "name=q")
modparam("rtimer", "timer", "name=d1;interval=2000u;mode=1")
modparam("rtimer", "exec", "timer=d1;route=DRAIN")
modparam("rtimer", "timer", "name=d2;interval=2000u;mode=1")
modparam("rtimer", "exec", "timer=d2;route=DRAIN")"""


def sip_near_empty(module):
    """Workload 3b: SIP MESSAGEs at 500/s through mq_add, two rtimer
    consumers faster than the producers, -m 256, the default shm allocator:
    instructions inside receive_msg of the SIP workers per message, and
    shared-memory allocations per message there (callgrind)."""
    n = int(os.environ.get("BENCH_NEAR_EMPTY_N", "1000"))
    opts = ("--toggle-collect=receive_msg", "--compress-strings=no")

    def one(count):
        _, _, (_, items, _), irs = run(module, NEAR_EMPTY_PARAMS, "", children=2, loads='loadmodule "rtimer.so"',
                                       route=SIP_ROUTE, callgrind=True, extra_args=("-m", "256"),
                                       during=sip_traffic(count, 500, count), cg_opts=opts)
        return sum(irs), run_once.shm_mallocs, count - items
    ir, mallocs, lost = one(n)
    # Steady state: the allocations of a run twice as long, less those of
    # this one (the warm-up's chunk growth is in both), per extra message.
    _, mallocs2, lost2 = one(2 * n)
    return {"Ir/msg in receive_msg": ir / n, "shm mallocs/msg": mallocs / n,
            "shm mallocs/msg (steady)": max(mallocs2 - mallocs, 0) / n,
            "lost (callgrind run)": lost + lost2}


def median_runs(workload, reps=REPS):
    """Runs `workload` on both modules `reps` times, alternating, and keeps
    each metric's median (CPU figures move with whatever else the machine
    does)."""
    runs = {imp: [] for imp in IMPLS}
    for _ in range(reps):
        for imp, path in IMPLS.items():
            runs[imp].append(workload(path))
    return {imp: {k: sorted(r[k] for r in rs)[len(rs) // 2] if k.startswith("CPU") else max(r[k] for r in rs)
                  for k in rs[0]} for imp, rs in runs.items()}


CONT_PARAMS = "\n".join(['modparam("mqueue", "mqueue", "name=q%d")' % i for i in range(4)] +
                        ['modparam("rtimer", "timer", "name=d%d;interval=5000u;mode=1")\n'
                         'modparam("rtimer", "exec", "timer=d%d;route=DRAIN")' % (i, i) for i in range(4)])

CONT_ROUTE = """route[DRAIN] {
    $var(n) = 0;
    while (mq_fetch("q0")) { $var(n) = $var(n) + 1; }
    while (mq_fetch("q1")) { $var(n) = $var(n) + 1; }
    while (mq_fetch("q2")) { $var(n) = $var(n) + 1; }
    while (mq_fetch("q3")) { $var(n) = $var(n) + 1; }
    if ($var(n) > 0) { xlog("L_INFO", "D|$var(n)\\n"); }
}
request_route {
    $var(q) = "q" + ($(ci{s.select,0,-}{s.int}) mod 4);
    mq_add("$var(q)", "$ci", "%s");
    sl_send_reply("200", "OK");
    exit;
}""" % VAL64


def contention(module):
    """Workload 4: four queues, four SIP workers producing, four rtimer
    processes each draining all four queues."""
    _, _, (cpu, items, rc), _ = run(module, CONT_PARAMS, "", children=4, loads='loadmodule "rtimer.so"',
                                    route=CONT_ROUTE, during=sip_traffic(SIP_N, 2000, SIP_N))
    return {"CPU ns/msg": cpu / SIP_N, "lost": SIP_N - items if rc == 0 else float("nan")}


def unique_keys(module, mode, k):
    """Workload 2: K keys queued, then m adds of queued keys and m of new
    keys; the baseline loop does the same arithmetic. Median of 3 runs, pkg
    memory on tlsf (the script's own allocations, not the module's)."""
    m = min(N // 10, 5000)
    params = 'modparam("mqueue", "mqueue", "name=u;addmode=%d")' % mode
    script = (loop(k, 'mq_add("u", "key-$var(i)", "%s");' % VAL64) +
              timed("base", loop(m, '$var(j) = ($var(i) * 7) mod %d;' % k)) +
              timed("existing", loop(m, '$var(j) = ($var(i) * 7) mod %d; mq_add("u", "key-$var(j)", "%s");' % (k, VAL64))) +
              timed("new", loop(m, '$var(j) = ($var(i) * 7) mod %d; mq_add("u", "new-$var(i)", "%s");' % (k, VAL64))))
    runs = []
    for _ in range(3):
        r, _, _, _ = run(module, params, script, extra_args=("-X", "tlsf"))
        base = elapsed(r["base"])
        runs.append(((elapsed(r["existing"]) - base) / m * 1e9, (elapsed(r["new"]) - base) / m * 1e9))
    return tuple(sorted(x[i] for x in runs)[1] for i in range(2))


def unique_keys_ir(module, mode, k):
    """Workload 2 in instructions for one module: (existing, new) key add."""
    m = 2000
    params = 'modparam("mqueue", "mqueue", "name=q;addmode=%d")' % mode
    fill = loop(k, 'mq_add("q", "key-$var(i)", "%s");' % VAL64)
    body = {
        "base": loop(m, '$var(j) = ($var(i) * 7) mod %d;' % k),
        "existing": loop(m, '$var(j) = ($var(i) * 7) mod %d; mq_add("q", "key-$var(j)", "%s");' % (k, VAL64)),
        "new": loop(m, '$var(j) = ($var(i) * 7) mod %d; mq_add("q", "new-$var(i)", "%s");' % (k, VAL64)),
    }
    ir = {}
    for name, b in body.items():
        _, _, _, irs = run(module, params, fill + b, callgrind=True)
        ir[name] = max(irs)
    return ((ir["existing"] - ir["base"]) / m, (ir["new"] - ir["base"]) / m)


def shm_used(rpc):
    m = re.search(r"used:\s*(\d+)", rpc or "")
    return int(m.group(1)) if m else None


def memory(module):
    items = MEMORY_N
    params = 'modparam("mqueue", "mqueue", "name=m")'
    _, rpc0, _, _ = run(module, params, "", rpc_after=["core.shmmem"])
    # 10-byte keys: "k" plus the index padded to 9 digits by adding 100000000
    _, rpc2, _, _ = run(module, params, loop(items, '$var(k) = 100000000 + $var(i); mq_add("m", "k$var(k)", "%s");' % VAL64),
                  rpc_after=["core.shmmem"])
    u0, u2 = shm_used(rpc0), shm_used(rpc2)
    return {"shm bytes/item": (u2 - u0) / items if u0 and u2 else float("nan")}


def many_queues(module):
    """QUEUES (1,000) queues holding one 15-byte item each: shared memory
    per queued item, and what stays in use per queue once they are drained."""
    queues = QUEUES
    params = "\n".join('modparam("mqueue", "mqueue", "name=q%d")' % i for i in range(queues))
    fill = loop(queues, 'mq_add("q$var(i)", "key", "0123456789ab");')
    drain = loop(queues, 'mq_fetch("q$var(i)");')
    _, rpc0, _, _ = run(module, params, "", rpc_after=["core.shmmem"], extra_args=("-m", "16"))
    _, rpc1, _, _ = run(module, params, fill, rpc_after=["core.shmmem"], extra_args=("-m", "16"))
    _, rpc2, _, _ = run(module, params, fill + drain, rpc_after=["core.shmmem"], extra_args=("-m", "16"))
    u0, u1, u2 = shm_used(rpc0), shm_used(rpc1), shm_used(rpc2)
    if None in (u0, u1, u2):
        return {"per item": float("nan"), "left per queue": float("nan")}
    return {"per item": (u1 - u0) / queues, "left per queue": (u2 - u0) / queues}


REDIS_N = int(os.environ.get("BENCH_REDIS_N", "50000"))

# A producer adding %(n)d items to queue t once shv go is 1 (the Redis
# throughput and the durable workloads).
PRODUCE = """route[PRODUCE] {
    if ($shv(go) == 1 && $var(done) == 0) {
        $var(done) = 1;
        $var(i) = 0;
        while ($var(i) < %(n)d) {
            if (!mq_add("t", "k$var(i)", "%(val)s")) { $var(fail) = $var(fail) + 1; }
            $var(i) = $var(i) + 1;
        }
        xlog("L_INFO", "B|PDONE fail=$var(fail)\\n");
    }
}
"""


TPUT_ROUTES = PRODUCE % {"n": REDIS_N, "val": VAL64} + """route[CONSUME] {
    if ($shv(go) == 2 && $var(done) == 0) {
        $var(done) = 1;
        $var(n) = 0;
        while (mq_fetch("t")) { $var(n) = $var(n) + 1; }
        xlog("L_INFO", "B|CDONE n=$var(n)\\n");
    }
}
"""


class RedisServer:
    """A redis-server of the bench's own on loopback (append-only, fsync
    every second, as a production setting would)."""

    def __init__(self, port, replica_of=None):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="mqueue-bench-redis-")
        extra = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        self.p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", self.dir,
                                   "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.cli("PING").strip() == "PONG" and (
                    not replica_of or "master_link_status:up" in self.cli("INFO", "replication")):
                return
            time.sleep(0.05)
        sys.exit("redis-server does not start (or its replica does not sync): run make deps")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True).stdout

    def round_trips(self):
        """Commands clients sent (EVALSHA and SCRIPT; the commands the Lua
        scripts run inside Redis are not round trips)."""
        stats = self.cli("INFO", "commandstats")
        return sum(int(m) for m in re.findall(r"^cmdstat_(?:evalsha|eval|script|wait):calls=(\d+)", stats, re.M))

    def benchmark_add(self, clients):
        """The machine's ceiling for our adds: redis-benchmark (C, no
        Kamailio) running the add script's work (EVALSHA of XADD and
        HINCRBY, 64-byte values) from `clients` connections, one request
        in flight on each, as each Kamailio process has: requests/s."""
        script = ("redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 'v', ARGV[2]) "
                  "redis.pcall('HINCRBY', KEYS[2], 'added', 1) return 1")
        sha = self.cli("SCRIPT", "LOAD", script).strip()
        out = subprocess.run(["redis-benchmark", "-p", str(self.port), "-c", str(clients), "-n", str(2 * REDIS_N),
                              "-q", "evalsha", sha, "2", "mqueue:{rb}", "mqueue:{rb}:stats", "key", VAL64],
                             capture_output=True, text=True).stdout
        self.cli("DEL", "mqueue:{rb}", "mqueue:{rb}:stats")
        m = re.findall(r"([\d.]+) requests per second", out)
        return float(m[-1]) if m else float("nan")

    def cpu_ns(self):
        with open("/proc/%d/schedstat" % self.p.pid) as f:
            return int(f.read().split()[0])

    def stop(self):
        self.p.kill()
        self.p.wait()
        subprocess.run(["rm", "-rf", self.dir])


def throughput(module, redis=None, attrs="", workers=2):
    """`workers` rtimer producers add REDIS_N items each, then `workers`
    rtimer consumers drain the queue: adds and fetches per second for the
    instance, CPU per item (Kamailio's processes, and redis-server's),
    Redis commands per operation (round trips). On a local queue when
    `redis` is None."""
    attr = ";redis=redis://127.0.0.1:%d%s" % (redis.port, attrs) if redis else ""
    params = "\n".join([
        'modparam("mqueue", "mqueue", "name=t%s")' % attr,
        'modparam("mqueue", "redis_timeout", 2000)',
        'modparam("pv", "shvset", "go=i:0")'] +
        ['modparam("rtimer", "timer", "name=%s%d;interval=10000u;mode=1")\n'
         'modparam("rtimer", "exec", "timer=%s%d;route=%s")' % (r, i, r, i, route)
         for i in range(workers) for r, route in (("p", "PRODUCE"), ("c", "CONSUME"))])
    routes = TPUT_ROUTES + ROUTE

    def during(d, pgid, log, p):
        ctl = ["kamcmd", "-s", "unix:%s/ctl.sock" % d]
        out = {}
        for phase, marker in ((1, "PDONE"), (2, "CDONE")):
            cmds0 = redis.round_trips() if redis else 0
            rcpu0 = redis.cpu_ns() if redis else 0
            cpu0, t0 = cpu_ns(pgid), time.monotonic()
            subprocess.run(ctl + ["pv.shvSet", "go", "int", str(phase)], capture_output=True)
            deadline = time.monotonic() + 600
            while True:
                log.seek(0)
                text = log.read()
                if text.count("B|" + marker) >= workers:
                    break
                if time.monotonic() > deadline:
                    sys.exit("throughput run stalled:\n" + text[-2000:])
                time.sleep(0.005)
            secs = time.monotonic() - t0
            n = workers * REDIS_N
            out[marker] = (n / secs, (cpu_ns(pgid) - cpu0) / n,
                           (redis.cpu_ns() - rcpu0) / n if redis else 0.0,
                           (redis.round_trips() - cmds0) / n if redis else 0.0, text)
        return out

    _, _, out, _ = run(module, params, "", loads='loadmodule "rtimer.so"', route=routes, children=1,
                       during=during)
    fails = sum(int(m) for m in re.findall(r"B\|PDONE fail=(\d+)", out["PDONE"][4]))
    got = sum(int(m) for m in re.findall(r"B\|CDONE n=(\d+)", out["CDONE"][4]))
    return {"adds/s": out["PDONE"][0], "add CPU ns (kamailio)": out["PDONE"][1],
            "add CPU ns (redis)": out["PDONE"][2], "round trips per add": out["PDONE"][3],
            "fetches/s": out["CDONE"][0], "fetch CPU ns (kamailio)": out["CDONE"][1],
            "fetch CPU ns (redis)": out["CDONE"][2], "round trips per fetch": out["CDONE"][3],
            "failed adds": fails, "fetched": got}


FROZEN_RATE = int(os.environ.get("BENCH_FROZEN_RATE", "500"))
FROZEN_SECS = int(os.environ.get("BENCH_FROZEN_SECS", "10"))


def frozen_sip(module, redis):
    """SIP MESSAGEs at FROZEN_RATE per second for FROZEN_SECS through
    `mq_add` on a Redis queue (4 SIP workers, redis_timeout 500 ms,
    redis_backoff 1000 ms), answered 200 whatever the add returned: answers
    per second with Redis up, then with Redis frozen (SIGSTOP) once every
    worker has met its first timeout."""
    params = ('modparam("mqueue", "mqueue", "name=q;redis=redis://127.0.0.1:%d")\n'
              'modparam("mqueue", "redis_timeout", 500)\n'
              'modparam("mqueue", "redis_backoff", 1000)' % redis.port)
    route = 'request_route { mq_add("q", "$ci", "%s"); sl_send_reply("200", "OK"); exit; }' % VAL64
    count = FROZEN_RATE * FROZEN_SECS

    def answers_per_s(d):
        t0 = time.monotonic()
        rc = sipp(d, count, FROZEN_RATE)
        return count / (time.monotonic() - t0) if rc == 0 else float("nan")

    def during(d, pgid, log, p):
        time.sleep(1)
        up = answers_per_s(d)
        os.kill(redis.p.pid, 19)
        try:
            # Every worker meets its first timeout (0.5 s each) here.
            sipp(d, 40, 40)
            frozen = answers_per_s(d)
        finally:
            os.kill(redis.p.pid, 18)
        return up, frozen

    _, _, (up, frozen), _ = run(module, params, "", children=4, route=route, during=during)
    return up, frozen


def redis_figures():
    """Our module on a Redis queue beside the same workload on a local
    queue (ours), in one run; then with `replicas=1` (a replica beside),
    and SIP answers per second with Redis up and frozen."""
    redis = RedisServer(PORT + 50)
    replica = None
    try:
        remote = throughput(IMPLS["rust"], redis)
        ceiling = redis.benchmark_add(2)
        remote4 = throughput(IMPLS["rust"], redis, workers=4)
        ceiling4 = redis.benchmark_add(4)
        replica = RedisServer(PORT + 51, replica_of=redis.port)
        with_replica = throughput(IMPLS["rust"], redis, ";replicas=1")
        up, frozen = frozen_sip(IMPLS["rust"], redis)
    finally:
        redis.stop()
        if replica:
            replica.stop()
    local = throughput(IMPLS["rust"])
    print("%-44s %12s %12s %12s" % ("several instances (ours)", "redis", "replicas=1", "local"))
    for key in remote:
        print("%-44s %12.1f %12.1f %12.1f" % (key, remote[key], with_replica[key], local[key]), flush=True)
    print("%-44s %12s %12s" % ("redis, producers and consumers", "2", "4"))
    print("%-44s %12.1f %12.1f" % ("adds/s", remote["adds/s"], remote4["adds/s"]))
    print("%-44s %12.1f %12.1f" % ("redis-benchmark, the add script, adds/s", ceiling, ceiling4))
    print("%-44s %12.3f %12.3f" % ("adds/s / redis-benchmark", remote["adds/s"] / ceiling,
                                   remote4["adds/s"] / ceiling4))
    print("%-44s %12.1f %12.1f" % ("fetches/s", remote["fetches/s"], remote4["fetches/s"]))
    print("%-44s %12.1f" % ("SIP answers/s, Redis up (offered %d/s)" % FROZEN_RATE, up))
    print("%-44s %12.1f" % ("SIP answers/s, Redis frozen", frozen))
    print("%-44s %12.3f" % ("frozen / up", frozen / up if up else float("nan")), flush=True)


DUR_N = int(os.environ.get("BENCH_DURABLE_N", "500000"))
DUR_SYNC_N = int(os.environ.get("BENCH_DURABLE_SYNC_N", "4000"))
DUR_START_N = int(os.environ.get("BENCH_DURABLE_START_N", "1000000"))


def producers(module, attr, producers, n):
    """`producers` rtimer processes add `n` 64-byte items each to queue t
    (with `attr`): adds per second for the instance, CPU ns per add (all of
    Kamailio's processes), and the queue's counters after the run."""
    params = "\n".join([
        'modparam("mqueue", "durable_dir", "@DIR@/durable")',
        'modparam("mqueue", "mqueue", "name=t%s")' % attr,
        'modparam("pv", "shvset", "go=i:0")'] +
        ['modparam("rtimer", "timer", "name=p%d;interval=10000u;mode=1")\n'
         'modparam("rtimer", "exec", "timer=p%d;route=PRODUCE")' % (i, i) for i in range(producers)])

    def during(d, pgid, log, p):
        ctl = ["kamcmd", "-s", "unix:%s/ctl.sock" % d]
        cpu0, t0 = cpu_ns(pgid), time.monotonic()
        subprocess.run(ctl + ["pv.shvSet", "go", "int", "1"], capture_output=True)
        deadline = time.monotonic() + 600
        while True:
            log.seek(0)
            text = log.read()
            if text.count("B|PDONE") >= producers:
                break
            if time.monotonic() > deadline:
                sys.exit("producers stalled:\n" + text[-2000:])
            time.sleep(0.002)
        secs, cpu = time.monotonic() - t0, cpu_ns(pgid) - cpu0
        stats = subprocess.run(ctl + ["mqueue.stats", "t"], capture_output=True, text=True).stdout
        return secs, cpu, stats, text

    shm = str(64 + producers * n * 200 // (1 << 20))
    _, _, (secs, cpu, stats, text), _ = run(module, params, "", loads='loadmodule "rtimer.so"',
                                            route=PRODUCE % {"n": n, "val": VAL64} + ROUTE, children=1,
                                            extra_args=("-m", shm), during=during)
    fails = sum(int(m) for m in re.findall(r"B\|PDONE fail=(\d+)", text))
    counters = dict(re.findall(r"^\t(\w+): (\d+)$", stats, re.M))
    total = producers * n
    return {"adds/s": total / secs, "CPU ns/add": cpu / total, "failed": fails,
            "syncs": int(counters.get("syncs", 0)), "added": int(counters.get("added", 0))}


def durable_startup(module, n):
    """Fills a durable=10 queue with `n` 64-byte items, stops Kamailio
    cleanly, starts it again on the same directory: the module's own
    measure of the recovery (the log line at start) and the items found."""
    with tempfile.TemporaryDirectory(prefix="mqueue-bench-durable-") as keep:
        params = ('modparam("mqueue", "durable_dir", "%s")\n'
                  'modparam("mqueue", "mqueue", "name=t;durable=10")' % keep)
        fill = loop(n, 'mq_add("t", "k$var(i)", "%s");' % VAL64)
        shm = ("-m", str(64 + n * 300 // (1 << 20)))
        run(module, params, fill, extra_args=shm + ("-X", "tlsf"),
            during=lambda d, pgid, log, p: (p.send_signal(15), p.wait(timeout=300)))
        r = run(module, params, "", rpc_after=["mqueue.get_size", "t"], extra_args=shm,
                during=lambda d, pgid, log, p: (log.seek(0), log.read())[1])
        m = re.search(r"mqueue t: (\d+) items loaded from the durable log .* in (\d+) ms", r[2])
        size = re.search(r"size: (\d+)", r[1] or "")
        return {"items": int(m.group(1)), "recovery ms": int(m.group(2)),
                "size": int(size.group(1)) if size else -1}


def durable_figures():
    """Durable queues beside memory queues, ours, in one run: durable=10
    adds from 2 producers (CPU per add against a memory queue's, adds per
    second), durable=sync acknowledged adds from 8 producers (syncs per
    add: group commit), and the start-up with 1,000,000 queued items."""
    mod = IMPLS["rust"]
    runs = {"memory": [], "durable=10": []}
    for _ in range(3):
        runs["memory"].append(producers(mod, "", 2, DUR_N))
        runs["durable=10"].append(producers(mod, ";durable=10", 2, DUR_N))
    med = {k: {m: sorted(r[m] for r in v)[1] for m in v[0]} for k, v in runs.items()}
    print("%-52s %12s %12s %8s" % ("durable (ours), 2 producers x %d adds" % DUR_N, "durable=10", "memory",
                                   "ratio"))
    for key in ("CPU ns/add", "adds/s", "failed"):
        row("  %s (median of 3)" % key, med["durable=10"][key], med["memory"][key])
    sync = producers(mod, ";durable=sync", 8, DUR_SYNC_N)
    print("%-52s %12.1f" % ("durable=sync, 8 producers: acknowledged adds/s", sync["adds/s"]))
    print("%-52s %12.3f" % ("durable=sync, 8 producers: syncs per add", sync["syncs"] / max(sync["added"], 1)))
    print("%-52s %12.1f" % ("durable=sync, 8 producers: CPU ns/add", sync["CPU ns/add"]))
    print("%-52s %12d" % ("durable=sync, 8 producers: failed adds", sync["failed"]))
    st = durable_startup(mod, DUR_START_N)
    print("%-52s %12d" % ("start-up: items recovered (of %d)" % DUR_START_N, st["items"]))
    print("%-52s %12d" % ("start-up: recovery ms", st["recovery ms"]), flush=True)


def row(name, ours, theirs, digits=1):
    """One line: ours, the C module's (None: it has no such workload) and
    the ratio."""
    ratio = "%8.3f" % (ours / theirs) if theirs else "%8s" % "-"
    c = "%12s" % "-" if theirs is None else "%12.*f" % (digits, theirs)
    print("%-44s %12.*f %s %s" % (name, digits, ours, c, ratio), flush=True)


def pair_table():
    """Workload 1: the script-loop add + fetch, instructions and CPU."""
    for alloc, extra in (("default shm allocator", ()), ("tlsf", ("-x", "tlsf"))):
        res = {imp: script_loop_instructions(path, extra) for imp, path in IMPLS.items()}
        for key in ("add Ir", "fetch Ir", "pair Ir"):
            row("script loop %s (%s)" % (key, alloc), res["rust"][key], res["c"][key])
        res = {imp: script_loop_cpu(path, extra) for imp, path in IMPLS.items()}
        for key in ("add CPU ns", "fetch CPU ns", "pair CPU ns"):
            row("script loop %s (%s)" % (key, alloc), res["rust"][key], res["c"][key])


def sip_table():
    res = {imp: sip_instructions(path) for imp, path in IMPLS.items()}
    for key in ("Ir/msg", "lost (callgrind run)"):
        row("SIP end to end %s" % key, res["rust"][key], res["c"][key])


def near_empty_table():
    res = {imp: sip_near_empty(path) for imp, path in IMPLS.items()}
    for key in ("Ir/msg in receive_msg", "shm mallocs/msg", "shm mallocs/msg (steady)", "lost (callgrind run)"):
        row("SIP near-empty queue %s" % key, res["rust"][key], res["c"][key])


def sip_cpu_table():
    res = median_runs(sip_cpu)
    for key in ("CPU ns/msg", "lost"):
        row("SIP end to end %s (median of %d)" % (key, REPS), res["rust"][key], res["c"][key])


def contention_table():
    res = median_runs(contention)
    for key in ("CPU ns/msg", "lost"):
        row("contention 4x4 %s (median of %d)" % (key, REPS), res["rust"][key], res["c"][key])


def wall_clock_table():
    for alloc, extra in (("default shm allocator", ()), ("tlsf", ("-x", "tlsf"))):
        res = {imp: script_loop(path, extra) for imp, path in IMPLS.items()}
        for key in ("add ns", "fetch ns", "pair ns"):
            row("script loop %s (%s)" % (key, alloc), res["rust"][key], res["c"][key])


def unique_keys_table():
    first, last = UNIQUE_K[0], UNIQUE_K[-1]
    for mode in (1, 2):
        growth = {}
        for k in UNIQUE_K:
            res = {imp: unique_keys(path, mode, k) for imp, path in IMPLS.items()}
            row("addmode %d, K=%d, add existing key ns" % (mode, k), res["rust"][0], res["c"][0])
            row("addmode %d, K=%d, add new key ns" % (mode, k), res["rust"][1], res["c"][1])
            growth[k] = {imp: res[imp][0] for imp in res}
        row("addmode %d growth K=%d->%d, ns (x)" % (mode, first, last),
            growth[last]["rust"] / max(growth[first]["rust"], 1e-9),
            growth[last]["c"] / max(growth[first]["c"], 1e-9))
        # Instructions for ours only: filling 50,000 unique keys into the C
        # module under callgrind takes tens of minutes (each add scans).
        irs = {k: unique_keys_ir(IMPLS["rust"], mode, k) for k in UNIQUE_K}
        for k, (e, n) in irs.items():
            print("%-44s %12.1f" % ("addmode %d, K=%d, add existing/new key Ir (rust)" % (mode, k), e), "%12.1f" % n)
        print("%-44s %12.2f" % ("addmode %d growth K=%d->%d, Ir (rust)" % (mode, first, last),
                                irs[last][0] / irs[first][0]), flush=True)


def memory_table():
    res = {imp: memory(path) for imp, path in IMPLS.items()}
    row("memory: shm bytes per queued item", res["rust"]["shm bytes/item"], res["c"]["shm bytes/item"])


def many_queues_table():
    res = {imp: many_queues(path) for imp, path in IMPLS.items()}
    row("%d queues x 1 item: shm bytes per item" % QUEUES, res["rust"]["per item"], res["c"]["per item"])
    row("%d queues drained: shm bytes left per queue" % QUEUES, res["rust"]["left per queue"],
        res["c"]["left per queue"])


# Every workload, in the order one `make bench` runs them; BENCH_ONLY=a,b
# runs the named ones.
WORKLOADS = (
    ("pair", pair_table),
    ("sip", sip_table),
    ("near-empty", near_empty_table),
    ("sizes", value_size_table),
    ("latency", latency_table),
    ("sip-cpu", sip_cpu_table),
    ("contention", contention_table),
    ("wall-clock", wall_clock_table),
    ("unique-keys", unique_keys_table),
    ("memory", memory_table),
    ("many-queues", many_queues_table),
    ("redis", redis_figures),
    ("durable", durable_figures),
)


def main():
    if not os.path.exists(IMPLS["rust"]):
        sys.exit("build/mqueue.so missing: run make build")
    known = [name for name, _ in WORKLOADS]
    only = os.environ.get("BENCH_ONLY")
    chosen = only.split(",") if only else known
    unknown = [name for name in chosen if name not in known]
    if unknown:
        sys.exit("BENCH_ONLY: no workload %s (known: %s)" % (", ".join(unknown), ",".join(known)))
    print("N=%d, Kamailio %s" % (N, subprocess.run([KAMAILIO, "-v"], capture_output=True, text=True).stdout.split("\n")[0]))
    print("%-44s %12s %12s %8s" % ("metric", "rust", "c", "rust/c"), flush=True)
    for name, workload in WORKLOADS:
        if name in chosen:
            workload()


if __name__ == "__main__":
    main()
