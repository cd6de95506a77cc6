#!/usr/bin/env python3
"""`make bench`: the same workloads on our build/mqueue.so and on Debian's C
mqueue.so, back to back on the same Kamailio; prints each metric for both and
the ratio ours/C. Times come from $TV(Sn) around loops run in one worker
(event_route[core:worker-one-init]), minus the same loop doing plain variable
assignments; memory from `kamcmd core.shmmem` before and after queueing."""

import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODS = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
IMPLS = {"rust": os.path.join(ROOT, "build/mqueue.so"), "c": MODS + "/mqueue.so"}
N = int(os.environ.get("BENCH_N", "100000"))
PORT = 36500

HEAD = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
max_while_loops=10000000
listen=udp:127.0.0.1:{port}
mpath="{mods}/"
loadmodule "ctl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "sl.so"
loadmodule "{module}"
modparam("ctl", "binrpc", "unix:{dir}/ctl.sock")
{params}
event_route[core:worker-one-init] {{
{script}
xlog("L_INFO", "B|END\\n");
}}
request_route {{ sl_send_reply("200", "OK"); exit; }}
"""

VAL64 = "v" * 64


def run(module, params, script, rpc_after=None, extra_args=()):
    with tempfile.TemporaryDirectory(prefix="mqueue-bench-") as d:
        cfg = os.path.join(d, "k.cfg")
        with open(cfg, "w") as f:
            f.write(HEAD.format(port=PORT, mods=MODS, module=module, dir=d, params=params, script=script))
        log = open(os.path.join(d, "log"), "w+")
        p = subprocess.Popen(["kamailio", "-DD", "-E", "-f", cfg, "-w", d, "-Y", d, *extra_args],
                             stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.time() + 600
            while time.time() < deadline:
                log.seek(0)
                text = log.read()
                if "B|END" in text:
                    break
                if p.poll() is not None:
                    sys.exit("kamailio exited:\n" + text[-3000:])
                time.sleep(0.2)
            else:
                sys.exit("timeout")
            rpc = None
            if rpc_after:
                rpc = subprocess.run(["kamcmd", "-s", "unix:%s/ctl.sock" % d, *rpc_after],
                                     capture_output=True, text=True).stdout
            lines = dict(l.split("B|", 1)[1].split("=", 1) for l in text.splitlines()
                         if "B|" in l and "=" in l.split("B|", 1)[1])
            return lines, rpc
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
    script = (timed("base_add", loop(N, '$var(k) = "key-$var(i)"; $var(v) = "%s";' % VAL64)) +
              timed("add", loop(N, 'mq_add("q", "key-$var(i)", "%s");' % VAL64)) +
              timed("base_fetch", loop(N, '$var(k) = $var(v); $var(x) = $var(v);')) +
              timed("fetch", loop(N, 'mq_fetch("q"); $var(k) = $mqk(q); $var(x) = $mqv(q);')))
    r, _ = run(module, params, script, extra_args=extra)
    add = (elapsed(r["add"]) - elapsed(r["base_add"])) / N * 1e9
    fetch = (elapsed(r["fetch"]) - elapsed(r["base_fetch"])) / N * 1e9
    return {"add ns": add, "fetch ns": fetch, "pair ns": add + fetch}


def unique_keys(module, mode, k):
    m = min(N // 10, 5000)
    params = 'modparam("mqueue", "mqueue", "name=u;addmode=%d")' % mode
    script = (loop(k, 'mq_add("u", "key-$var(i)", "%s");' % VAL64) +
              timed("base", loop(m, '$var(j) = $var(i) * 7; $var(x) = "key-$var(j)";')) +
              timed("existing", loop(m, '$var(j) = ($var(i) * 7) mod %d; mq_add("u", "key-$var(j)", "%s");' % (k, VAL64))) +
              timed("new", loop(m, '$var(j) = $var(i) * 7; mq_add("u", "new-$var(j)", "%s");' % VAL64)))
    r, _ = run(module, params, script)
    base = elapsed(r["base"])
    return ((elapsed(r["existing"]) - base) / m * 1e9, (elapsed(r["new"]) - base) / m * 1e9)


def shm_used(rpc):
    m = re.search(r"used:\s*(\d+)", rpc or "")
    return int(m.group(1)) if m else None


def memory(module):
    items = 100000
    params = 'modparam("mqueue", "mqueue", "name=m")'
    _, rpc0 = run(module, params, "", rpc_after=["core.shmmem"])
    # 10-byte keys: "k" plus the index padded to 9 digits by adding 100000000
    _, rpc2 = run(module, params, loop(items, '$var(k) = 100000000 + $var(i); mq_add("m", "k$var(k)", "%s");' % VAL64),
                  rpc_after=["core.shmmem"])
    u0, u2 = shm_used(rpc0), shm_used(rpc2)
    return {"shm bytes/item": (u2 - u0) / items if u0 and u2 else float("nan")}


def row(name, ours, theirs):
    ratio = ours / theirs if theirs else float("nan")
    print("%-44s %12.1f %12.1f %8.3f" % (name, ours, theirs, ratio))


def main():
    if not os.path.exists(IMPLS["rust"]):
        sys.exit("build/mqueue.so missing: run make build")
    print("N=%d, Kamailio %s" % (N, subprocess.run(["kamailio", "-v"], capture_output=True, text=True).stdout.split("\n")[0]))
    print("%-44s %12s %12s %8s" % ("metric", "rust", "c", "rust/c"))
    for alloc, extra in (("default shm allocator", ()), ("tlsf", ("-x", "tlsf"))):
        res = {imp: script_loop(path, extra) for imp, path in IMPLS.items()}
        for key in ("add ns", "fetch ns", "pair ns"):
            row("script loop %s (%s)" % (key, alloc), res["rust"][key], res["c"][key])
    for mode in (1, 2):
        growth = {}
        for k in (1000, 10000, 50000):
            res = {imp: unique_keys(path, mode, k) for imp, path in IMPLS.items()}
            row("addmode %d, K=%d, add existing key ns" % (mode, k), res["rust"][0], res["c"][0])
            row("addmode %d, K=%d, add new key ns" % (mode, k), res["rust"][1], res["c"][1])
            growth[k] = {imp: res[imp][0] for imp in res}
        row("addmode %d growth K=1000->50000 (x)" % mode,
            growth[50000]["rust"] / max(growth[1000]["rust"], 1e-9),
            growth[50000]["c"] / max(growth[1000]["c"], 1e-9))
    res = {imp: memory(path) for imp, path in IMPLS.items()}
    row("memory: shm bytes per queued item", res["rust"]["shm bytes/item"], res["c"]["shm bytes/item"])


if __name__ == "__main__":
    main()
