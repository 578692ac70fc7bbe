#!/usr/bin/env bash
# Benchmark for batchd: events folded per second and peak memory.
#
# Feeds generated event streams (bench/batchd-gen.py: a header, then creates,
# modifies, attribute changes, deletes and renames over N distinct files) to
# `batchd -d 1h`, so every event of a file lands in one batch written at end of
# input: the fold holds everything, the worst case for memory. Runs:
#   - 1M, 3M and 10M events over 100,000 paths: the speed, and memory that
#     must stay flat as events grow;
#   - 3M events over 10,000 paths: memory must follow paths, not events;
#   - peers on the same 1M-event file, as floors for reading the stream:
#     `wc -l` (just reading) and `jq -c .path` (parsing each JSON line).
# Prints one line per run: wall and CPU seconds, events per second (wall and
# per CPU second), peak RSS. Takes a few minutes (generating 10M events in
# Python is most of it); needs ~1.5 GB in $TMPDIR.
#
# usage: bench/batchd.sh [EVENTS [PATHS]]   (defaults 10000000 100000)
set -euo pipefail

events=${1:-10000000}
paths=${2:-100000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
work=$(mktemp -d "${TMPDIR:-/tmp}/batchd-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin batchd
batchd="$root/target/release/batchd"

echo "generating $events events over $paths paths ..." >&2
python3 "$here/batchd-gen.py" "$events" "$paths" > "$work/big.jsonl"
python3 "$here/batchd-gen.py" $((events * 3 / 10)) $((paths / 10)) > "$work/few-paths.jsonl"
head -n $((events / 10 + 1)) "$work/big.jsonl" > "$work/tenth.jsonl"
head -n $((events * 3 / 10 + 1)) "$work/big.jsonl" > "$work/third.jsonl"

# run NAME EVENTS INPUT COMMAND...: prints wall s, cpu s, events/s, peak RSS.
run() {
    local name=$1 n=$2 input=$3
    shift 3
    local wall cpu rss
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" < "$input" > /dev/null
        read -r wall user sys rss < "$work/time"
        cpu=$(echo "$user + $sys" | bc -l)
    else
        # No GNU time: the kernel's high-water mark, read just before exit.
        local start hwm=0
        start=$(date +%s.%N)
        "$@" < "$input" > /dev/null &
        local pid=$!
        while kill -0 "$pid" 2> /dev/null; do
            hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2> /dev/null || echo "$hwm")
            sleep 0.05
        done
        wait "$pid"
        wall=$(echo "$(date +%s.%N) - $start" | bc -l)
        cpu=NA
        rss=$hwm
    fi
    local per_cpu=NA
    [ "$cpu" != NA ] && per_cpu=$(echo "$n / $cpu" | bc)
    printf '%-34s %9d events %7.2f s wall %7s s cpu %9d ev/s wall %9s ev/cpu-s %8d KB peak RSS\n' \
        "$name" "$n" "$wall" "$cpu" "$(echo "$n / $wall" | bc)" "$per_cpu" "$rss"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2
run "batchd, $((paths)) paths" $((events / 10)) "$work/tenth.jsonl" "$batchd" -d 1h
run "batchd, $((paths)) paths" $((events * 3 / 10)) "$work/third.jsonl" "$batchd" -d 1h
run "batchd, $((paths)) paths" "$events" "$work/big.jsonl" "$batchd" -d 1h
run "batchd, $((paths / 10)) paths" $((events * 3 / 10)) "$work/few-paths.jsonl" "$batchd" -d 1h
run "peer: wc -l" $((events / 10)) "$work/tenth.jsonl" wc -l
run "peer: jq -c .path" $((events / 10)) "$work/tenth.jsonl" jq -c .path
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
