#!/usr/bin/env bash
# Benchmark for batchd: events folded per second and peak memory.
#
# Feeds generated event streams (bench/batchd-gen.py: a header, then creates,
# modifies, attribute changes, deletes and renames over N distinct files) to
# `batchd -d 1h`, so every event of a file lands in one batch written at end of
# input: the fold holds everything, the worst case for memory. Runs:
#   - 1M, 5M and 10M events over 100,000 paths: the speed, and memory that
#     must level off as events grow (it rises while the fold fills: pending
#     paths, plus at most one record per renamed path that existed when the
#     batch opened);
#   - 3M events over 10,000 paths: memory must follow paths, not events;
#   - peers on the same 1M-event file, as floors for reading the stream:
#     `wc -l` (just reading) and `jq -c .path` (parsing each JSON line).
# Prints one line per run: wall and CPU seconds (both threads: stdin parsing
# and folding), events per second (wall, per CPU second, and per second of the
# main thread's CPU, i.e. folding on one core, from `batchd -v`), peak RSS. Takes a few minutes (generating 10M events in
# Python is most of it); needs ~1.5 GB in $TMPDIR.
#
# usage: bench/batchd.sh [EVENTS [PATHS]]   (defaults 10000000 100000)
#   BATCHD=path/to/batchd   use that binary instead of building target/release/batchd
#                           (to compare two builds on the same input)
set -euo pipefail

events=${1:-10000000}
paths=${2:-100000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
work=$(mktemp -d "${TMPDIR:-/tmp}/batchd-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -n "${BATCHD:-}" ]; then
    batchd=$BATCHD
else
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin batchd
    batchd="$root/target/release/batchd"
fi

echo "generating $events events over $paths paths ..." >&2
python3 "$here/batchd-gen.py" "$events" "$paths" > "$work/big.jsonl"
python3 "$here/batchd-gen.py" $((events * 3 / 10)) $((paths / 10)) > "$work/few-paths.jsonl"
head -n $((events / 10 + 1)) "$work/big.jsonl" > "$work/tenth.jsonl"
head -n $((events / 2 + 1)) "$work/big.jsonl" > "$work/half.jsonl"

# run NAME EVENTS INPUT COMMAND...: prints wall s, cpu s, events/s, peak RSS.
run() {
    local name=$1 n=$2 input=$3
    shift 3
    local wall cpu rss
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" < "$input" > /dev/null 2> "$work/err"
        read -r wall user sys rss < "$work/time"
        cpu=$(echo "$user + $sys" | bc -l)
    else
        # No GNU time: the kernel's high-water mark, read just before exit.
        local start hwm=0
        start=$(date +%s.%N)
        "$@" < "$input" > /dev/null 2> "$work/err" &
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
    local per_cpu=NA fold=NA
    [ "$cpu" != NA ] && per_cpu=$(echo "$n / $cpu" | bc)
    # batchd -v says how much CPU its main thread (the fold) used.
    local main_cpu
    main_cpu=$(sed -n 's/.*main thread \([0-9.]*\) s CPU.*/\1/p' "$work/err")
    [ -n "$main_cpu" ] && fold=$(echo "$n / $main_cpu" | bc)
    printf '%-22s %9d ev %7.2f s wall %6s s cpu %8d ev/s wall %8s ev/cpu-s %8s ev/s folding (1 core) %7d KB peak\n' \
        "$name" "$n" "$wall" "$cpu" "$(echo "$n / $wall" | bc)" "$per_cpu" "$fold" "$rss"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2
run "batchd, $((paths)) paths" $((events / 10)) "$work/tenth.jsonl" "$batchd" -v -d 1h --settle 0
run "batchd, $((paths)) paths" $((events / 2)) "$work/half.jsonl" "$batchd" -v -d 1h --settle 0
run "batchd, $((paths)) paths" "$events" "$work/big.jsonl" "$batchd" -v -d 1h --settle 0
run "batchd, $((paths / 10)) paths" $((events * 3 / 10)) "$work/few-paths.jsonl" "$batchd" -v -d 1h --settle 0
run "peer: wc -l" $((events / 10)) "$work/tenth.jsonl" wc -l
run "peer: jq -c .path" $((events / 10)) "$work/tenth.jsonl" jq -c .path
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
