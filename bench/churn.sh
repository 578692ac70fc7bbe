#!/usr/bin/env bash
# bench/churn.sh: seeded random churn (issue 10), pushd next to lsyncd in one
# run: ROUNDS rounds plus KILL_ROUNDS rounds with kill -9 of a random stage
# midway, OPS operations each, both tools at batchd's DELAY. Prints rounds
# converged, median and worst seconds from the last change to convergence,
# and the ratios. Figures go to stdout and bench/results/churn-<date>.txt.
#
# Usage (from the repository root):  bench/churn.sh
#   ROUNDS=3 KILL_ROUNDS=1 OPS=300 bench/churn.sh     a quicker run
#   SEED=N                                          replay a run
#   PUSHD_ARGS='--max-delete 1000000'               extra pushd flags
#   TMPDIR_BENCH=/dev/shm                           where the trees go
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-10}
KILL_ROUNDS=${KILL_ROUNDS:-4}
OPS=${OPS:-500}
DELAY=${DELAY:-0.2}
TMPDIR_BENCH=${TMPDIR_BENCH:-/dev/shm}

for tool in lsyncd rsync python3; do
    command -v "$tool" >/dev/null || { echo "bench/churn.sh: needs $tool (apt-get install -y $tool)" >&2; exit 1; }
done
cargo build --release --locked --bin watchd --bin batchd --bin pushd >&2
mkdir -p bench/results
out=bench/results/churn-$(date -u +%Y%m%dT%H%M%SZ).txt
seed=()
[[ -n ${SEED:-} ]] && seed=(--seed "$SEED")
{
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $(rsync --version | head -1); $(lsyncd --version 2>&1 | head -1)"
    python3 bench/churn.py --rounds "$ROUNDS" --kill-rounds "$KILL_ROUNDS" --ops "$OPS" \
        --delay "$DELAY" --dir "$TMPDIR_BENCH" --pushd-args "${PUSHD_ARGS:-}" "${seed[@]}"
} | tee "$out"
