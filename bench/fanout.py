#!/usr/bin/env python3
"""Fan-out: one source, many local targets, one burst; same run, ratios (issue 17).

Setups, each on fresh trees, each measured from the burst until every target
equals the source:
  push     watchd SRC | batchd -d D | pushd T1..Tn           (one pushd, n targets)
  pull     watchd SRC | relayd publish, and per target
           relayd subscribe | batchd -d D | pushd --from SRC Ti (n pull replicas)
  lsyncd   one lsyncd with n sync{} blocks (default.rsync, delay D)
  tiers    like pull, but SRC -> T1 tier-1 replicas -> the rest pull from a
           tier-1 replica (--upstream-state), e.g. 4 -> 16
Figures: seconds to converge; CPU seconds of the source's own processes
(push: watchd+batchd+pushd and every rsync it ran, the receivers included
as they are local here; pull/tiers: watchd+relayd publish, plus the broker
apart; lsyncd: lsyncd and its rsyncs); CPU of everything; file bytes the
replicas read from the source (pushd's result records, `bytes`).

Usage: bench/fanout.py [--targets 20] [--burst 10000] [--tier1 4] [--delay 1]
                       [--bin target/release] [--dir /dev/shm]
Needs watchd, batchd, pushd, relayd (make build), nats-server, lsyncd, rsync.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    """CPU seconds of `pid` and its waited-for children."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    # utime stime cutime cstime are fields 14..17 (1-based), 12..15 after ")".
    return sum(int(x) for x in fields[11:15]) / TICK


def write_burst(src, n, size=1024):
    blob = b"y" * size
    per_dir = 100
    for i in range(n):
        d = os.path.join(src, "burst", f"d{i // per_dir:04}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06}"), "wb") as fh:
            fh.write(blob)


def count(root):
    n = 0
    for _, _, names in os.walk(root):
        n += len(names)
    return n


def same(a, b):
    out = subprocess.run(
        ["rsync", "-anic", "--delete", "--omit-dir-times", f"{a}/", f"{b}/"], capture_output=True, check=True
    ).stdout
    return out.strip() == b""


def wait(cond, timeout=600, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    raise TimeoutError("not converged")


class Procs:
    """Started processes by role; CPU read before they stop."""

    def __init__(self):
        self.roles = {}
        self.readers = []

    def start(self, role, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.roles.setdefault(role, []).append(p)
        return p

    def results(self, p, sink):
        def read():
            for line in p.stdout:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("type") == "result":
                    sink.append(rec)

        t = threading.Thread(target=read, daemon=True)
        t.start()
        self.readers.append(t)

    def cpu(self, role):
        return sum(cpu(p.pid) for p in self.roles.get(role, []))

    def stop(self):
        for procs in self.roles.values():
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        for procs in self.roles.values():
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def nats(workdir):
    ports = os.path.join(workdir, "ports")
    os.makedirs(ports)
    prog = "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else "nats-server"
    p = subprocess.Popen(
        [prog, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", ports, "-js", "-sd",
         os.path.join(workdir, "store")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    def port():
        for name in os.listdir(ports):
            text = open(os.path.join(ports, name)).read()
            if "127.0.0.1:" in text:
                return text.split("127.0.0.1:")[1].split('"')[0]
        return None
    wait(lambda: port() is not None, timeout=30)
    return p, f"nats://127.0.0.1:{port()}/fanout"


def run(setup, args, workdir):
    b = lambda name: os.path.join(args.bin, name)
    src = os.path.join(workdir, "src")
    targets = [os.path.join(workdir, f"t{i:02}") for i in range(args.targets)]
    os.makedirs(os.path.join(src, "base"))
    with open(os.path.join(src, "base", "index.html"), "w") as fh:
        fh.write("base\n")
    procs = Procs()
    results = []
    delay = str(args.delay)
    q = ["-q"]
    try:
        if setup == "push":
            w = procs.start("source", [b("watchd"), src], stdout=subprocess.PIPE)
            bd = procs.start("source", [b("batchd"), "-d", delay], stdin=w.stdout,
                             stdout=subprocess.PIPE)
            p = procs.start("source", [b("pushd")] + q + targets, stdin=bd.stdout,
                            stdout=subprocess.PIPE)
            procs.results(p, results)
        elif setup == "lsyncd":
            conf = os.path.join(workdir, "lsyncd.lua")
            with open(conf, "w") as fh:
                fh.write("settings { nodaemon = true, insist = false }\n")
                for t in targets:
                    fh.write(f'sync {{ default.rsync, source = "{src}", target = "{t}", '
                             f"delay = {args.delay}, rsync = {{ archive = true }} }}\n")
            procs.start("source", ["lsyncd", conf], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
        else:
            server, url = nats(workdir)
            procs.roles["broker"] = [server]
            w = procs.start("source", [b("watchd"), src], stdout=subprocess.PIPE)
            procs.start("source", [b("relayd"), "publish", url], stdin=w.stdout)
            tier1 = targets[: args.tier1] if setup == "tiers" else targets
            for i, t in enumerate(targets):
                if t in tier1:
                    pull = ["--state", t + ".state", "--from", src, t]
                else:
                    up = tier1[i % len(tier1)]
                    pull = ["--from", up, "--upstream-state", up + ".state", t]
                s = procs.start("replicas", [b("relayd"), "subscribe", url, "--durable",
                                             f"r{i}"], stdout=subprocess.PIPE)
                bd = procs.start("replicas", [b("batchd"), "-d", delay], stdin=s.stdout,
                                 stdout=subprocess.PIPE)
                p = procs.start("replicas", [b("pushd")] + q + pull, stdin=bd.stdout,
                                stdout=subprocess.PIPE)
                procs.results(p, results)
        wait(lambda: all(os.path.exists(os.path.join(t, "base", "index.html"))
                         for t in targets), timeout=300)
        time.sleep(2 * args.delay + 1)
        cpu0 = {role: procs.cpu(role) for role in procs.roles}
        bytes0 = len(results)
        started = time.monotonic()
        write_burst(src, args.burst)
        want = args.burst + 1
        wait(lambda: all(count(t) >= want for t in targets), timeout=args.timeout)
        wait(lambda: all(same(src, t) for t in targets), timeout=args.timeout)
        took = time.monotonic() - started
        cpu1 = {role: procs.cpu(role) for role in procs.roles}
        new = results[bytes0:]
        tier1_names = set(targets[: args.tier1] if setup == "tiers" else targets)
        from_source = sum(r.get("bytes", 0) for r in new if r["target"] in tier1_names)
        if setup == "push":
            from_source = sum(r.get("bytes", 0) for r in new)
        return {
            "seconds": took,
            "source_cpu": cpu1.get("source", 0) - cpu0.get("source", 0),
            "broker_cpu": cpu1.get("broker", 0) - cpu0.get("broker", 0),
            "replicas_cpu": cpu1.get("replicas", 0) - cpu0.get("replicas", 0),
            "from_source_bytes": from_source if setup != "lsyncd" else None,
        }
    finally:
        procs.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--burst", type=int, default=10000)
    ap.add_argument("--tier1", type=int, default=4)
    ap.add_argument("--delay", type=float, default=1.0)
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--setups", default="push,pull,lsyncd,tiers")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a setup may take to converge")
    args = ap.parse_args()
    rows = {}
    for setup in args.setups.split(","):
        workdir = tempfile.mkdtemp(prefix=f"fanout-{setup}-", dir=args.dir)
        try:
            rows[setup] = run(setup, args, workdir)
        except TimeoutError:
            # A figure too (lsyncd with 20 sync{} at 10,000 files): say it, go on.
            print(f"{setup:7} did not converge within {args.timeout:.0f} s", flush=True)
            continue
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        r = rows[setup]
        fb = r["from_source_bytes"]
        print(f"{setup:7} converge {r['seconds']:7.1f} s   source CPU {r['source_cpu']:6.1f} s   "
              f"broker CPU {r['broker_cpu']:5.1f} s   replicas CPU {r['replicas_cpu']:6.1f} s   "
              f"file bytes from source {'-' if fb is None else fb}", flush=True)
    base = rows.get("pull")
    if base:
        for name, r in rows.items():
            if name == "pull":
                continue
            print(f"ratio {name}/pull: converge {r['seconds'] / base['seconds']:.2f}x, "
                  f"source CPU {r['source_cpu'] / max(base['source_cpu'], 0.01):.1f}x")


if __name__ == "__main__":
    main()
