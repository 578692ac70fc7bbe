#!/usr/bin/env bash
# bench/pushd.sh: pushd side by side with lsyncd in one run (issue 4).
#
#   burst    BURST new 4 KiB files plus MODIFIED modified files in a FILES-file
#            tree, local target: seconds until the target equals the source and
#            rsync processes started (both tools run rsync through the same
#            logging wrapper); then the same for deleting the BURST files.
#   latency  one file written, time until it is complete on the target:
#            median and p90 of RUNS, lsyncd at delay 0.
#   scaling  pushd's latency in the FILES-file tree against a SMALL-file tree.
# Tools: lsyncd (default.rsync, delay 0), watchd | pushd, watchd | pushd --direct.
# Figures go to stdout and bench/results/pushd-<date>.txt, ratios last.
#
# Usage (from the repository root):  bench/pushd.sh
#   FILES=20000 BURST=2000 RUNS=10 bench/pushd.sh     a quicker run
#   TMPDIR_BENCH=/dev/shm                             where the trees go (a tmpfs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FILES=${FILES:-100000}
BURST=${BURST:-10000}
MODIFIED=${MODIFIED:-100}
RUNS=${RUNS:-20}
SMALL=${SMALL:-1000}
TMPDIR_BENCH=${TMPDIR_BENCH:-/dev/shm}

for tool in lsyncd rsync python3; do
    command -v "$tool" >/dev/null || { echo "bench/pushd.sh: needs $tool" >&2; exit 1; }
done
cargo build --release --locked --bin watchd --bin pushd >&2
mkdir -p bench/results
out=bench/results/pushd-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $(rsync --version | head -1); $(lsyncd --version 2>&1 | head -1)"
    python3 bench/pushd_vs_lsyncd.py --files "$FILES" --burst "$BURST" --modified "$MODIFIED" \
        --latency-runs "$RUNS" --small "$SMALL" --dir "$TMPDIR_BENCH"
} | tee "$out"
