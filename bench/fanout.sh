#!/usr/bin/env bash
# bench/fanout.sh: one source, TARGETS local targets, a burst of BURST files
# (issue 17), same run, ratios against the pull replicas:
#   push    one watchd | batchd | pushd with TARGETS targets
#   pull    TARGETS pull replicas via JetStream (relayd subscribe | batchd | pushd --from)
#   lsyncd  one lsyncd with TARGETS sync{} blocks
#   tiers   source -> TIER1 pull replicas -> the rest pulling from them (--upstream-state)
# Figures: seconds until every target equals the source; CPU seconds of the
# source's processes, the broker's and the replicas'; file bytes read from
# the source. Figures go to stdout and bench/results/fanout-<date>.txt.
#
# Usage (from the repository root):  bench/fanout.sh
#   TARGETS=20 BURST=2000 bench/fanout.sh       a quicker run
#   TMPDIR_BENCH=/dev/shm                        where the trees go (a tmpfs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGETS=${TARGETS:-20}
BURST=${BURST:-10000}
TIER1=${TIER1:-4}
DELAY=${DELAY:-1}
SETUPS=${SETUPS:-push,pull,lsyncd,tiers}
TMPDIR_BENCH=${TMPDIR_BENCH:-/dev/shm}
BIN=${BIN:-target/release}    # BIN=target/debug: skip the release build (CPU figures then flatter nothing)

for tool in lsyncd rsync python3; do
    command -v "$tool" >/dev/null || { echo "bench/fanout.sh: needs $tool" >&2; exit 1; }
done
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null ||
    { echo "bench/fanout.sh: needs nats-server" >&2; exit 1; }
if [ "$BIN" = target/release ]; then
    cargo build --release --locked --features relay --bin watchd --bin batchd --bin pushd --bin relayd >&2
fi
mkdir -p bench/results
out=bench/results/fanout-$(date -u +%Y%m%dT%H%M%SZ).txt
{
    echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $(rsync --version | head -1); $(lsyncd --version 2>&1 | head -1); targets $TARGETS, burst $BURST, tier-1 $TIER1, delay $DELAY, binaries $BIN"
    python3 bench/fanout.py --targets "$TARGETS" --burst "$BURST" --tier1 "$TIER1" \
        --delay "$DELAY" --setups "$SETUPS" --dir "$TMPDIR_BENCH" --bin "$BIN"
} | tee "$out"
