#!/usr/bin/env python3
"""Seeded random churn, pushd next to lsyncd in the same run (issue 10).

Each round makes a tree of ~100-250 entries with hostile names (spaces,
newlines, leading dashes, $(...), quotes, invalid UTF-8), starts the tool,
waits for the start-up sync, then runs OPS random operations (create, write,
append, truncate, delete, rm -r, mkdir -p, rename of files and directories
across directories and over existing entries, chmod, symlinks, editor-style
replace) in bursts and pauses. Kill rounds kill -9 one stage midway (for
pushd a random one of watchd, batchd, pushd; for lsyncd lsyncd itself), make
more changes while nothing runs, and start again (pushd with --state).
After the last change it measures the seconds until the target equals the
source entry by entry (type, mode, content, symlink target).

Both tools get the same seed per round, so the same operations.

Usage: bench/churn.py [--rounds 10] [--kill-rounds 4] [--ops 500] [--delay 0.2]
                      [--seed N] [--bin target/release] [--dir /dev/shm]
                      [--timeout 120] [--tools pushd,lsyncd] [--pushd-args '...']
Replay one round: --seed N --rounds 1 --kill-rounds 0 (or 0 and 1 for a kill round).
Needs watchd, batchd and pushd built (make build), lsyncd and rsync installed.
"""

import argparse
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

NASTY = [
    b"a b",
    b"new\nline",
    b"-rf",
    b"--delete",
    b"bad\xff\xfename",
    b"$(touch pwned)",
    b"`touch pwned2`",
    b"it's \"quoted\"",
    b"semi;colon&amp",
]


def tree(root):
    """relative path -> (kind and mode, content or link target); vanishing entries are skipped."""
    out = {}
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = list(os.scandir(d))
        except OSError:
            continue
        for e in it:
            rel = os.path.relpath(e.path, root)
            try:
                st = os.lstat(e.path)
            except OSError:
                continue
            mode = st.st_mode & 0o7777
            if e.is_symlink():
                try:
                    out[rel] = ("link", os.readlink(e.path))
                except OSError:
                    pass
            elif e.is_dir(follow_symlinks=False):
                out[rel] = (f"dir {mode:o}", b"")
                stack.append(e.path)
            else:
                try:
                    with open(e.path, "rb") as fh:
                        out[rel] = (f"file {mode:o}", fh.read())
                except OSError:
                    pass
    return out


def diff(a, b, limit=30):
    lines = []
    for k in sorted(set(a) | set(b)):
        if k not in b:
            lines.append(f"  missing on target: {k!r} {a[k][0]}")
        elif k not in a:
            lines.append(f"  stale on target: {k!r} {b[k][0]}")
        elif a[k] != b[k]:
            lines.append(f"  differs: {k!r} source {a[k][0]} ({len(a[k][1])} bytes) target {b[k][0]} ({len(b[k][1])} bytes)")
    more = len(lines) - limit
    return "\n".join(lines[:limit] + ([f"  ... and {more} more"] if more > 0 else []))


class Churn:
    """Random operations on a source tree kept between 100 and 250 entries."""

    def __init__(self, seed, root):
        self.rng = random.Random(seed)
        self.root = root
        self.counter = 0

    def entries(self):
        files, dirs = [], [self.root]
        i = 0
        while i < len(dirs):
            d = dirs[i]
            i += 1
            try:
                for e in os.scandir(d):
                    (dirs if e.is_dir(follow_symlinks=False) else files).append(e.path)
            except OSError:
                pass
        return sorted(files), [dirs[0]] + sorted(dirs[1:])

    def name(self):
        self.counter += 1
        r = self.rng
        if r.random() < 0.5:
            n = b"f%d" % self.counter
        else:
            n = r.choice(NASTY)
            if r.random() < 0.7:
                n += b" %d" % self.counter
        if r.random() < 0.1:
            n += b".d"
        return n

    def content(self):
        r = self.rng
        k = r.randrange(10)
        size = 0 if k == 0 else 20_000 + r.randrange(200_000) if k == 1 else r.randrange(3000)
        return b"%d " % r.getrandbits(48) + bytes([97 + r.randrange(26)]) * size

    def step(self):
        files, dirs = self.entries()
        size = len(files) + len(dirs)
        grow = 0.8 if size < 100 else 0.15 if size > 250 else 0.45
        try:
            if self.rng.random() < grow:
                self.create(dirs)
            else:
                self.change(files, dirs)
        except OSError:
            pass  # a name taken by a directory, a directory not empty: part of the game

    def create(self, dirs):
        r = self.rng
        parent = r.choice(dirs)
        k = r.randrange(10)
        if k <= 5:
            with open(os.path.join(parent, self.name()), "wb") as fh:
                fh.write(self.content())
        elif k <= 7:
            p = os.path.join(parent, self.name())
            for _ in range(r.randrange(3)):
                p = os.path.join(p, self.name())
            os.makedirs(p, exist_ok=True)
            for _ in range(r.randrange(4)):
                with open(os.path.join(p, self.name()), "wb") as fh:
                    fh.write(self.content())
        elif k == 8:
            target = r.choice(NASTY) if r.random() < 0.5 else b"../elsewhere"
            os.symlink(target, os.path.join(parent, self.name()))
        else:
            tmp = os.path.join(parent, self.name())
            os.makedirs(os.path.join(tmp, b"inner"), exist_ok=True)
            for _ in range(3):
                with open(os.path.join(tmp, b"inner", self.name()), "wb") as fh:
                    fh.write(self.content())
            to = os.path.join(r.choice(dirs), self.name())
            if not to.startswith(tmp + b"/"):
                os.rename(tmp, to)

    def change(self, files, dirs):
        r = self.rng
        sub = dirs[1:]
        k = r.randrange(20)
        if k <= 2 and files:
            with open(r.choice(files), "wb") as fh:
                fh.write(self.content())
        elif k <= 4 and files:
            with open(r.choice(files), "ab") as fh:
                fh.write(self.content())
        elif k == 5 and files:
            # Through an open descriptor, as truncate(1) and editors do: a
            # truncate(2) by path sends no IN_CLOSE_WRITE, which watchd's
            # (and lsyncd's) default close_write mode does not see.
            with open(r.choice(files), "r+b") as fh:
                fh.truncate(os.fstat(fh.fileno()).st_size // 2)
        elif 6 <= k <= 8 and files:
            os.remove(r.choice(files))
        elif k == 9 and sub:
            # rm -r of a directory holding at most a fifth of the tree: past
            # pushd's --max-delete (50% by default) a mass delete is held by
            # design, so churn stays below it and any hold is a bug.
            total = len(files) + len(dirs)
            small = [d for d in sub if 5 * sum(1 for p in files + dirs if p == d or p.startswith(d + b"/")) <= total]
            if small:
                shutil.rmtree(r.choice(small))
        elif 10 <= k <= 12 and files:
            f = r.choice(files)
            to = r.choice(files) if r.random() < 0.3 else os.path.join(r.choice(dirs), self.name())
            os.rename(f, to)
        elif 13 <= k <= 14 and sub:
            d = r.choice(sub)
            to = r.choice(sub) if r.random() < 0.25 else os.path.join(r.choice(dirs), self.name())
            if not (to == d or to.startswith(d + b"/")):
                os.rename(d, to)
        elif 15 <= k <= 16 and files:
            f = r.choice(files)
            mode = r.choice([0o600, 0o644, 0o755, 0o640, 0o400])
            if not os.path.islink(f):
                os.chmod(f, mode)
        elif k == 17 and sub:
            os.chmod(r.choice(sub), r.choice([0o755, 0o700, 0o750, 0o711]))
        elif k >= 18 and files:
            f = r.choice(files)
            tmp = f + b".swp~"
            with open(tmp, "wb") as fh:
                fh.write(self.content())
            os.rename(tmp, f)

    def run(self, ops, midway=None):
        done, called = 0, False
        while done < ops:
            for _ in range(min(1 + self.rng.randrange(40), ops - done)):
                self.step()
                done += 1
                if midway and not called and done >= ops // 2:
                    called = True
                    midway(self)
            if self.rng.random() < 0.6:
                time.sleep(self.rng.randrange(350) / 1000)


class PushdPipeline:
    name = "pushd"

    def __init__(self, src, dst, work, args):
        self.src, self.dst, self.work, self.args = src, dst, work, args
        self.generation = 0
        self.start()

    def start(self):
        b = self.args.bin
        logs = [open(os.path.join(self.work, f"{self.generation}-{s}.log"), "wb") for s in ("watchd", "batchd", "pushd")]
        # pushd's result records (per-batch duration_ms, rsync_runs), kept with --keep.
        results = open(os.path.join(self.work, f"{self.generation}-pushd.out"), "wb")
        self.generation += 1
        watchd = subprocess.Popen([os.path.join(b, "watchd"), self.src], stdout=subprocess.PIPE, stderr=logs[0])
        batchd = subprocess.Popen(
            [os.path.join(b, "batchd"), "-d", str(self.args.delay)], stdin=watchd.stdout, stdout=subprocess.PIPE, stderr=logs[1]
        )
        pushd = subprocess.Popen(
            [os.path.join(b, "pushd"), "--state", os.path.join(self.work, "pushd.state")]
            + shlex.split(self.args.pushd_args)
            + [self.dst],
            stdin=batchd.stdout,
            stdout=results,
            stderr=logs[2],
        )
        watchd.stdout.close()
        batchd.stdout.close()
        for fh in logs + [results]:
            fh.close()
        self.procs = [watchd, batchd, pushd]

    def kill9(self, rng):
        i = rng.randrange(3)
        self.procs[i].kill()
        self.procs[i].wait()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.wait()
        return ["watchd", "batchd", "pushd"][i]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Lsyncd:
    name = "lsyncd"

    def __init__(self, src, dst, work, args):
        # The way bench/pushd_vs_lsyncd.py configures it, at batchd's delay.
        self.conf = os.path.join(work, "lsyncd.lua")
        with open(self.conf, "w") as fh:
            fh.write(
                "settings { nodaemon = true, insist = false, maxProcesses = 1 }\n"
                f'sync {{ default.rsync, source = "{src.decode()}", target = "{dst.decode()}", '
                f"delay = {args.delay},\n  rsync = {{ archive = true }} }}\n"
            )
        self.log = os.path.join(work, "lsyncd.log")
        self.start()

    def start(self):
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(["lsyncd", self.conf], stdout=fh, stderr=fh)

    def kill9(self, rng):
        self.proc.kill()
        self.proc.wait()
        return "lsyncd"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def wait_equal(src, dst, timeout, step=0.02):
    """Seconds until dst equals src, or None after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if tree(src) == tree(dst):
            return time.monotonic() - t0
        time.sleep(step)
    return None


def one_round(tool_cls, seed, kill, args):
    work = tempfile.mkdtemp(prefix="syncpipe-churn-", dir=args.dir).encode()
    src, dst = os.path.join(work, b"src"), os.path.join(work, b"dst")
    os.makedirs(src)
    os.makedirs(dst)
    churn = Churn(seed, src)
    while len(churn.entries()[0]) < 80:
        churn.step()
    tool = tool_cls(src, dst, work.decode(), args)
    killed = None
    try:
        if wait_equal(src, dst, args.timeout) is None:
            return False, None, "start-up sync never completed", None

        def midway(c):
            nonlocal killed
            killed = tool.kill9(c.rng)
            for _ in range(20):
                c.step()
            tool.start()

        churn.run(args.ops, midway if kill else None)
        with open(os.path.join(work, b"last-change"), "w") as fh:
            fh.write(f"{time.time():.6f}\n")  # for bench/churn-profile.py
        took = wait_equal(src, dst, args.timeout)
        detail = None if took is not None else diff(tree(src), tree(dst))
        return took is not None, took, detail, killed
    finally:
        tool.stop()
        if args.keep:
            print(f"# kept {work.decode()}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--kill-rounds", type=int, default=4)
    ap.add_argument("--ops", type=int, default=500)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--dir", default=None, help="where the trees go (a tmpfs measures the tools, not a disk)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds a round may take to converge")
    ap.add_argument("--tools", default="pushd,lsyncd")
    ap.add_argument("--pushd-args", default="", help="extra pushd flags, e.g. '--max-delete 1000000'")
    ap.add_argument("--keep", action="store_true", help="keep each round's trees and logs")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000_007)
    tools = {"pushd": PushdPipeline, "lsyncd": Lsyncd}
    names = [t for t in args.tools.split(",") if t]
    if "lsyncd" in names and not shutil.which("lsyncd"):
        sys.exit("bench/churn.py: lsyncd is not installed (apt-get install -y lsyncd)")
    print(f"# churn: seed {seed}, {args.rounds} rounds + {args.kill_rounds} kill -9 rounds x {args.ops} ops, "
          f"delay {args.delay}s, bin {args.bin}", flush=True)
    results = {}  # (tool, kill) -> list of (ok, seconds)
    plan = [(seed + i, False) for i in range(args.rounds)]
    plan += [(seed + args.rounds + i, True) for i in range(args.kill_rounds)]
    for s, kill in plan:
        for name in names:
            ok, took, detail, killed = one_round(tools[name], s, kill, args)
            results.setdefault((name, kill), []).append((ok, took))
            how = f"{took:.2f}s" if ok else f"NOT CONVERGED in {args.timeout:.0f}s"
            extra = f", {killed} killed -9 midway" if killed else ""
            print(f"round seed {s} {name:7}{extra}: {how}", flush=True)
            if not ok:
                print(detail, flush=True)
                print(f"  replay: bench/churn.py --tools {name} --seed {s} --rounds {0 if kill else 1} "
                      f"--kill-rounds {1 if kill else 0} --ops {args.ops} --delay {args.delay}"
                      + (f" --pushd-args {shlex.quote(args.pushd_args)}" if args.pushd_args else ""), flush=True)

    def stats(rows):
        times = [t for ok, t in rows if ok]
        med = statistics.median(times) if times else float("nan")
        worst = max(times) if times else float("nan")
        return sum(ok for ok, _ in rows), len(rows), med, worst

    print()
    print(f"{'tool':8} {'rounds':14} {'converged':>10} {'median s':>9} {'worst s':>8}")
    table = {}
    for kill in (False, True):
        for name in names:
            rows = results.get((name, kill))
            if not rows:
                continue
            ok, n, med, worst = table[(name, kill)] = stats(rows)
            kind = "kill -9 midway" if kill else "plain"
            print(f"{name:8} {kind:14} {f'{ok}/{n}':>10} {med:9.2f} {worst:8.2f}")
    if "pushd" in names and "lsyncd" in names:
        for kill in (False, True):
            if (("pushd", kill)) in table:
                p, l = table[("pushd", kill)], table[("lsyncd", kill)]
                kind = "kill -9" if kill else "plain"
                print(f"ratio pushd/lsyncd ({kind}): median {p[2] / l[2]:.2f}, worst {p[3] / l[3]:.2f} "
                      f"(aim: median <= 0.5)")
    pushd_failed = sum(n - ok for (name, _), (ok, n, _, _) in table.items() if name == "pushd")
    return 1 if pushd_failed else 0


if __name__ == "__main__":
    sys.exit(main())
