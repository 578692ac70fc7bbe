#!/usr/bin/env bash
# bench/remote.sh: ssh targets (issue 15), pushd next to lsyncd default.rsyncssh
# over a throw-away sshd on 127.0.0.1, same run (bench/remote.py has the details).
#   W4  one small file written -> complete on the target: median, p90 of RUNS
#   W3  BURST new 4 KiB files + MODIFIED appended in a FILES-file tree: seconds
#       until equal; pushd to a local target is the yardstick
# Tools: lsyncd rsyncssh (delay 0); pushd with a login per transfer (before issue
# 15); pushd with one shared connection, rsync alone (--no-agent); pushd + agent.
# Figures go to stdout and bench/results/remote-<date>.txt.
#
# Usage (from the repository root):  bench/remote.sh
#   FILES=20000 BURST=2000 RUNS=10 bench/remote.sh     a quicker run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FILES=${FILES:-100000}
BURST=${BURST:-10000}
MODIFIED=${MODIFIED:-100}
RUNS=${RUNS:-20}
TMPDIR_BENCH=${TMPDIR_BENCH:-/dev/shm}

for tool in lsyncd rsync sshd ssh-keygen python3; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "bench/remote.sh: needs $tool" >&2; exit 1; }
done
cargo build --release --locked --bin watchd --bin pushd >&2
mkdir -p bench/results
out=bench/results/remote-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $(rsync --version | head -1); $(lsyncd --version 2>&1 | head -1); $(ssh -V 2>&1)"
    python3 bench/remote.py --files "$FILES" --burst "$BURST" --modified "$MODIFIED" \
        --runs "$RUNS" --dir "$TMPDIR_BENCH"
} | tee "$out"
