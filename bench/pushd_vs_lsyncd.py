#!/usr/bin/env python3
"""pushd next to lsyncd, same machine, same run, reported as ratios.

Three measurements (the issue's targets):
  burst    N new 4 KiB files plus M modified files in a big tree, local target:
           seconds until the target equals the source, rsync processes started;
           then the same for deleting those N files.
  latency  one file written, time until it is complete on the target (median
           and p90 of K runs), lsyncd at delay 0.
  scaling  pushd latency for one changed file in a big tree vs a small tree.

Usage: bench/pushd_vs_lsyncd.py [--files 100000] [--burst 10000] [--modified 100]
                                [--latency-runs 20] [--bin target/release] [--dir /dev/shm]
(bench/pushd.sh runs it the way `make bench` does.)
Needs watchd and pushd built (make build), lsyncd and rsync installed.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

POLL = 0.001


def make_tree(root, files, dirs=100, size=256):
    per_dir = max(1, files // dirs)
    blob = b"x" * size
    made = 0
    for d in range(dirs):
        path = os.path.join(root, f"d{d:03}")
        os.makedirs(path, exist_ok=True)
        for f in range(per_dir):
            if made == files:
                return
            with open(os.path.join(path, f"f{f:05}"), "wb") as fh:
                fh.write(blob)
            made += 1


def count_files(root):
    n = 0
    for _, _, names in os.walk(root):
        n += len(names)
    return n


def wait(cond, timeout=600, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    raise TimeoutError("condition not reached")


def rsync_wrapper(workdir):
    """An `rsync` that logs each start, then runs the real one."""
    log = os.path.join(workdir, "rsync-starts.log")
    bindir = os.path.join(workdir, "wrap")
    os.makedirs(bindir, exist_ok=True)
    wrapper = os.path.join(bindir, "rsync")
    real = shutil.which("rsync")
    with open(wrapper, "w") as fh:
        fh.write(f"#!/bin/sh\necho x >> '{log}'\nexec '{real}' \"$@\"\n")
    os.chmod(wrapper, 0o755)
    return bindir, wrapper, log


def starts(log):
    try:
        with open(log) as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def same_tree(src, dst):
    out = subprocess.run(
        ["rsync", "-anic", "--delete", f"{src}/", f"{dst}/"],
        capture_output=True,
        check=True,
    ).stdout
    return out.strip() == b""


class Lsyncd:
    name = "lsyncd"

    def __init__(self, src, dst, workdir, wrapper):
        conf = os.path.join(workdir, "lsyncd.lua")
        with open(conf, "w") as fh:
            fh.write(
                "settings { nodaemon = true, insist = false, maxProcesses = 1 }\n"
                f'sync {{ default.rsync, source = "{src}", target = "{dst}", delay = 0,\n'
                f'  rsync = {{ binary = "{wrapper}", archive = true }} }}\n'
            )
        self.proc = subprocess.Popen(
            ["lsyncd", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Pushd:
    def __init__(self, src, dst, bindir, wrapdir, direct=False):
        self.name = "pushd --direct" if direct else "pushd"
        env = dict(os.environ, PATH=f"{wrapdir}:{os.environ['PATH']}")
        self.watchd = subprocess.Popen(
            [os.path.join(bindir, "watchd"), src], stdout=subprocess.PIPE
        )
        args = [os.path.join(bindir, "pushd"), "-q"]
        if direct:
            args.append("--direct")
        self.pushd = subprocess.Popen(
            args + [dst], stdin=self.watchd.stdout, stdout=subprocess.PIPE, env=env
        )
        self.watchd.stdout.close()
        self.results = []
        self.full_syncs = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.pushd.stdout:
            rec = json.loads(line)
            if rec.get("type") == "result":
                self.results.append(rec)
                if rec["full"]:
                    self.full_syncs += 1

    def stop(self):
        self.watchd.terminate()
        self.watchd.wait()
        self.pushd.wait()


def burst(tool_factory, src, dst, workdir, n_new, n_mod, total):
    """Returns (seconds to converge after the burst, rsync starts, delete seconds, delete starts)."""
    bindir, wrapper, log = rsync_wrapper(workdir)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    tool = tool_factory(wrapper, bindir)
    wait(lambda: count_files(dst) == total, step=0.2)
    time.sleep(1)  # let the start-up sync's process exit before counting
    before = starts(log)
    blob = b"n" * 4096
    dirs = sorted(os.listdir(src))
    modified = []
    t0 = time.monotonic()
    for i in range(n_new):
        with open(os.path.join(src, dirs[i % len(dirs)], f"new{i:05}"), "wb") as fh:
            fh.write(blob)
    for i in range(n_mod):
        path = os.path.join(src, dirs[i % len(dirs)], "f00000")
        with open(path, "ab") as fh:
            fh.write(blob)
        modified.append(path)
    want = os.path.getsize(modified[0]) if modified else 0

    def converged():
        if count_files(dst) != total + n_new:
            return False
        return all(
            os.path.getsize(p.replace(src, dst, 1)) == want
            for p in modified
            if os.path.exists(p.replace(src, dst, 1))
        )

    wait(converged, step=0.05)
    t_burst = time.monotonic() - t0
    n_burst = starts(log) - before
    before = starts(log)
    t0 = time.monotonic()
    for i in range(n_new):
        os.remove(os.path.join(src, dirs[i % len(dirs)], f"new{i:05}"))
    wait(lambda: count_files(dst) == total, step=0.05)
    t_delete = time.monotonic() - t0
    n_delete = starts(log) - before
    ok = same_tree(src, dst)
    tool.stop()
    return t_burst, n_burst, t_delete, n_delete, ok


def latency(tool_factory, src, dst, workdir, runs):
    bindir, wrapper, _ = rsync_wrapper(workdir)
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    total = count_files(src)
    tool = tool_factory(wrapper, bindir)
    wait(lambda: count_files(dst) == total, step=0.05)
    time.sleep(1)
    samples = []
    data = b"l" * 1000
    for i in range(runs):
        name = f"lat{i:03}"
        target = os.path.join(dst, "d000", name)
        t0 = time.monotonic()
        with open(os.path.join(src, "d000", name), "wb") as fh:
            fh.write(data)
        while not (os.path.exists(target) and os.path.getsize(target) == len(data)):
            time.sleep(POLL)
        samples.append(time.monotonic() - t0)
        time.sleep(0.05)
    tool.stop()
    for i in range(runs):
        os.remove(os.path.join(src, "d000", f"lat{i:03}"))
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--modified", type=int, default=100)
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--dir", default=None, help="where the trees go (a tmpfs measures the tools, not a disk)")
    args = ap.parse_args()
    bindir = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="syncpipe-bench-", dir=args.dir)
    try:
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        t0 = time.monotonic()
        make_tree(src, args.files)
        print(f"# tree of {args.files} files made in {time.monotonic() - t0:.1f}s", flush=True)
        tools = [
            lambda w, b: Lsyncd(src, dst, work, w),
            lambda w, b: Pushd(src, dst, bindir, b),
            lambda w, b: Pushd(src, dst, bindir, b, direct=True),
        ]
        names = ["lsyncd", "pushd", "pushd --direct"]
        rows = {}
        for name, tool in zip(names, tools):
            rows[name] = burst(tool, src, dst, work, args.burst, args.modified, args.files)
            b, nb, d, nd, ok = rows[name]
            print(
                f"burst  {name:15} {args.burst} new + {args.modified} modified: {b:6.2f}s, "
                f"{nb} rsync starts; delete {args.burst}: {d:6.2f}s, {nd} rsync starts; "
                f"target equal: {ok}",
                flush=True,
            )
        lat = {}
        for name, tool in zip(names, tools):
            lat[name] = latency(tool, src, dst, work, args.latency_runs)
            print(
                f"latency {name:15} median {lat[name][0]*1000:6.1f} ms, p90 {lat[name][1]*1000:6.1f} ms",
                flush=True,
            )
        small_src = os.path.join(work, "small")
        make_tree(small_src, args.small, dirs=10)
        small = latency(
            lambda w, b: Pushd(small_src, dst, bindir, b), small_src, dst, work, args.latency_runs
        )
        print(
            f"scaling pushd one file: {args.files}-file tree median {lat['pushd'][0]*1000:.1f} ms, "
            f"{args.small}-file tree median {small[0]*1000:.1f} ms "
            f"(ratio {lat['pushd'][0] / small[0]:.2f})",
            flush=True,
        )
        base = rows["lsyncd"]
        for name in names[1:]:
            b, nb, d, nd, _ = rows[name]
            print(
                f"ratio  lsyncd/{name}: burst {base[0] / b:.1f}x faster, "
                f"delete {base[2] / d:.1f}x faster, rsync starts {base[1]}/{nb} and {base[3]}/{nd}, "
                f"latency median {lat['lsyncd'][0] / lat[name][0]:.1f}x lower"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
