#!/usr/bin/env python3
"""ssh targets (issue 15): pushd and lsyncd default.rsyncssh over a throw-away
sshd on 127.0.0.1, same run, same trees.

  W4  one small file written, time until it is complete on the target
      (median and p90 of RUNS; lsyncd at delay 0).
  W3  BURST new 4 KiB files + MODIFIED appended files in a FILES-file tree:
      seconds until every new and appended file is complete on the target
      and the trees are then equal (rsync -ani --omit-dir-times: sizes and
      times, directory times left out). The same tree to a local target with
      pushd is the yardstick (the aim is x1.5 of it).

Tools: lsyncd default.rsyncssh; watchd | pushd HOST:/dst with a login per
transfer (--no-agent --ssh-opt ControlMaster=no: pushd before issue 15); with
one shared connection and rsync alone (--no-agent); with the agent on the far
side (--agent-path); watchd | pushd /dst (local, W3 only).

Usage: bench/remote.py [--files 100000] [--burst 10000] [--modified 100]
                       [--runs 20] [--bin target/release] [--dir /dev/shm]
(bench/remote.sh runs it the way `make bench` does.)
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pushd_vs_lsyncd import count_files, make_tree, same_tree, wait  # noqa: E402

POLL = 0.0005


class Sshd:
    def __init__(self, work):
        self.dir = os.path.join(work, "sshd")
        os.makedirs(self.dir)
        os.makedirs("/run/sshd", exist_ok=True)
        for key in ("host_key", "id_ed25519"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(self.dir, key)],
                check=True,
            )
        shutil.copy(os.path.join(self.dir, "id_ed25519.pub"), os.path.join(self.dir, "authorized_keys"))
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        with open(os.path.join(self.dir, "sshd_config"), "w") as fh:
            fh.write(
                f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir}/host_key\n"
                f"AuthorizedKeysFile {self.dir}/authorized_keys\nPidFile none\nStrictModes no\n"
                "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\nLogLevel ERROR\n"
                # The agent's records stay in the bench's directory.
                f"SetEnv XDG_STATE_HOME={self.dir}/state\n"
            )
        kind, key = open(os.path.join(self.dir, "host_key.pub")).read().split()[:2]
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as fh:
            fh.write(f"[127.0.0.1]:{self.port} {kind} {key}\n")
        self.identity = os.path.join(self.dir, "id_ed25519")
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(self.dir, "sshd_config"), "-o", "LogLevel=INFO"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in self.proc.stderr:
            if "Server listening" in line:
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def options(self):
        return {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": self.known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
        }

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Lsyncd:
    def __init__(self, src, dst, work, sshd):
        conf = os.path.join(work, "lsyncd.lua")
        opts = ", ".join(f'{k} = "{v}"' for k, v in sshd.options().items())
        with open(conf, "w") as fh:
            fh.write(
                "settings { nodaemon = true, insist = false }\n"
                f'sync {{ default.rsyncssh, source = "{src}", host = "127.0.0.1", targetdir = "{dst}",\n'
                f"  delay = 0, ssh = {{ port = {sshd.port}, identityFile = \"{sshd.identity}\",\n"
                f"  options = {{ {opts} }} }} }}\n"
            )
        self.proc = subprocess.Popen(["lsyncd", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Pushd:
    def __init__(self, src, dst, bindir, sshd=None, extra=()):
        self.watchd = subprocess.Popen([os.path.join(bindir, "watchd"), src], stdout=subprocess.PIPE)
        args = [os.path.join(bindir, "pushd"), "-q", *extra]
        if sshd:
            args += ["-p", str(sshd.port), "-i", sshd.identity]
            for k, v in sshd.options().items():
                args += ["--ssh-opt", f"{k}={v}"]
            dst = f"127.0.0.1:{dst}"
        self.pushd = subprocess.Popen(args + [dst], stdin=self.watchd.stdout, stdout=subprocess.DEVNULL)
        self.watchd.stdout.close()

    def stop(self):
        self.watchd.terminate()
        self.watchd.wait()
        self.pushd.wait()


def fresh(dst):
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)


def w4(factory, src, dst, runs):
    fresh(dst)
    total = count_files(src)
    tool = factory()
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
    ok = wait(lambda: same_tree(src, dst), timeout=60, step=0.2)
    tool.stop()
    for i in range(runs):
        os.remove(os.path.join(src, "d000", f"lat{i:03}"))
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.9) - 1)], ok


def equal_files(src, dst):
    """The target holds the source's files, links and directories, same
    sizes and times (rsync's quick check, no checksums: the check must be
    cheap next to what it measures). Directory times are left out: a
    directory's time changes with its entries and no tool here carries it
    over on every change (an unending difference, which made W3 time out)."""
    out = subprocess.run(
        ["rsync", "-ani", "--delete", "--omit-dir-times", f"{src}/", f"{dst}/"],
        capture_output=True,
        check=True,
    ).stdout
    return out.strip() == b""


def w3(factory, src, dst, n_new, n_mod):
    fresh(dst)
    total = count_files(src)
    tool = factory()
    wait(lambda: count_files(dst) == total, step=0.2)
    time.sleep(1)
    blob = b"n" * 4096
    dirs = sorted(os.listdir(src))
    new = [os.path.join(dirs[i % len(dirs)], f"new{i:05}") for i in range(n_new)]
    mod = [os.path.join(dirs[i % len(dirs)], "f00000") for i in range(n_mod)]
    t0 = time.monotonic()
    for rel in new:
        with open(os.path.join(src, rel), "wb") as fh:
            fh.write(blob)
    for rel in mod:
        with open(os.path.join(src, rel), "ab") as fh:
            fh.write(blob)
    sizes = {rel: os.path.getsize(os.path.join(src, rel)) for rel in new + mod}

    def arrived():
        # Cheap first: every new and appended file has its size there.
        for rel, size in sizes.items():
            try:
                if os.path.getsize(os.path.join(dst, rel)) != size:
                    return False
            except OSError:
                return False
        return True

    took = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if arrived():
            at = time.monotonic() - t0
            # Then the whole tree once (a mismatch: keep waiting).
            if equal_files(src, dst):
                took = at
                break
        time.sleep(0.05)
    tool.stop()
    for rel in new:
        os.remove(os.path.join(src, rel))
    for rel in mod:
        with open(os.path.join(src, rel), "wb") as fh:
            fh.write(b"x" * 256)
    if took is None:
        raise TimeoutError("W3: the target did not become equal in 600 s")
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--modified", type=int, default=100)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--only", default="", help="comma-separated tool names to run (default: all)")
    ap.add_argument("--skip-w3", action="store_true")
    ap.add_argument("--skip-w4", action="store_true")
    args = ap.parse_args()
    bindir = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="syncpipe-bench-", dir=args.dir)
    sshd = None
    try:
        sshd = Sshd(work)
        src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
        make_tree(src, args.files)
        print(f"# {args.files}-file tree; sshd on 127.0.0.1:{sshd.port}", flush=True)
        tools = {
            "lsyncd rsyncssh": lambda: Lsyncd(src, dst, work, sshd),
            "pushd ssh, login per transfer": lambda: Pushd(
                src, dst, bindir, sshd, ["--no-agent", "--ssh-opt", "ControlMaster=no"]
            ),
            "pushd ssh, ControlMaster": lambda: Pushd(src, dst, bindir, sshd, ["--no-agent"]),
            "pushd ssh + agent": lambda: Pushd(
                src, dst, bindir, sshd, ["--agent-path", os.path.join(bindir, "pushd")]
            ),
        }
        only = [t for t in args.only.split(",") if t]
        for name, factory in tools.items():
            if (only and name not in only) or args.skip_w4:
                continue
            med, p90, ok = w4(factory, src, dst, args.runs)
            print(f"W4 {name:32} median {med*1000:7.1f} ms, p90 {p90*1000:7.1f} ms, equal: {ok}", flush=True)
        if args.skip_w3:
            return
        # W3: a login per transfer is left out (W4 shows its cost).
        del tools["pushd ssh, login per transfer"]
        tools["pushd local (yardstick)"] = lambda: Pushd(src, dst, bindir)
        took = {}
        for name, factory in tools.items():
            if only and name not in only and not name.startswith("pushd local"):
                continue
            took[name] = w3(factory, src, dst, args.burst, args.modified)
            print(f"W3 {name:32} {args.burst} new + {args.modified} appended: {took[name]:7.2f} s", flush=True)
        local = took.get("pushd local (yardstick)")
        for name, t in took.items():
            if local:
                print(f"W3 {name:32} x{t / local:5.2f} of pushd local (aim for the agent: <= 1.5)")
    finally:
        if sshd:
            sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
