#!/usr/bin/env bash
# bench/bisync.sh: bisync side by side with `unison -batch` and `rclone bisync`
# (issue 5), in one run on the same machine, reported as ratios.
#
# Two local replicas in a tmpfs (so the tools are measured, not a disk): a
# holds FILES small files in directories of 100, b starts empty.
#   first     the first sync (everything copied a -> b);
#   nochange  a sync with nothing to do;
#   changes   a sync after CHANGES/2 edits and CHANGES/2 new files on each side.
# Each figure is wall seconds and peak RSS (GNU time's %M) of one run; the
# tools take turns phase by phase so machine noise hits them alike. After the
# last phase each tool's two replicas must be identical (diff -r), or the
# script fails. Figures go to stdout and to bench/results/bisync-<time>.txt.
#
# Usage (from anywhere):  bench/bisync.sh
#   FILES=50000 CHANGES=100 bench/bisync.sh
#   BISYNC=path/to/bisync   use that binary instead of building target/release/bisync
#   TOOLS="bisync unison"   only some tools
#   TMPDIR_BENCH=/dev/shm   where the trees go
set -euo pipefail

FILES=${FILES:-50000}
CHANGES=${CHANGES:-100}
TOOLS=${TOOLS:-bisync unison rclone}
TMPDIR_BENCH=${TMPDIR_BENCH:-/dev/shm}

die() {
    echo "bench/bisync.sh: $*" >&2
    exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install time"
for tool in $TOOLS; do
    case $tool in
    bisync) ;;
    unison | rclone) command -v "$tool" >/dev/null || die "$tool is missing: apt-get install $tool" ;;
    *) die "unknown tool $tool" ;;
    esac
done
if [[ -z ${BISYNC:-} ]]; then
    cargo build --release --quiet --bin bisync || die "cargo build --release failed"
    BISYNC=$PWD/target/release/bisync
fi

work=$(mktemp -d "$TMPDIR_BENCH/bisync-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The source tree, made once and copied for each tool.
mkdir "$work/seed"
for ((i = 0; i < FILES; i++)); do
    ((i % 100 == 0)) && mkdir "$work/seed/d$((i / 100))"
    printf 'file %d of the benchmark tree\n%0100d\n' "$i" "$i" >"$work/seed/d$((i / 100))/f$i"
done

run_tool() { # tool phase: the command line for one sync
    local tool=$1 phase=$2 a=$work/$1/a b=$work/$1/b
    case $tool in
    bisync) "$BISYNC" --state-dir "$work/$tool/state" --max-delete 100% "$a" "$b" ;;
    unison) UNISON=$work/$tool/state unison -batch "$a" "$b" ;;
    rclone)
        local first=()
        [[ $phase == first ]] && first=(--resync)
        RCLONE_CONFIG=$work/$tool/rclone.conf rclone bisync "$a" "$b" \
            --workdir "$work/$tool/state" "${first[@]}"
        ;;
    esac
}

ok_exit() { # tool code: whether the exit code means success
    case $1:$2 in
    *:0 | bisync:9) return 0 ;; # bisync: 9 synced
    *) return 1 ;;
    esac
}

declare -A secs mem
measure() { # tool phase
    local tool=$1 phase=$2 code=0
    /usr/bin/time -f '%e %M' -o "$work/time" bash -c "$(declare -f run_tool); $(declare -p work BISYNC); run_tool $tool $phase" \
        >"$work/$tool.out" 2>&1 || code=$?
    ok_exit "$tool" "$code" || {
        tail -5 "$work/$tool.out" >&2
        die "$tool failed in phase $phase (exit $code)"
    }
    read -r s kb < <(tail -1 "$work/time")
    secs[$tool:$phase]=$s
    mem[$tool:$phase]=$((kb / 1024))
}

change_side() { # dir tag offset
    local dir=$1 tag=$2 off=$3 i
    for ((i = 0; i < CHANGES / 2; i++)); do
        local n=$((off + i * 97 % (FILES / 2)))
        printf 'edited on %s\n' "$tag" >>"$dir/d$((n / 100))/f$n"
        printf 'new on %s\n' "$tag" >"$dir/d$((n / 100))/new-$tag-$i"
    done
}

for tool in $TOOLS; do
    mkdir -p "$work/$tool/state" "$work/$tool/b"
    cp -a "$work/seed" "$work/$tool/a"
    touch "$work/$tool/rclone.conf"
done
for phase in first nochange changes; do
    for tool in $TOOLS; do
        if [[ $phase == changes ]]; then
            change_side "$work/$tool/a" a 0
            change_side "$work/$tool/b" b $((FILES / 2))
        fi
        measure "$tool" "$phase"
    done
done
for tool in $TOOLS; do
    diff -r "$work/$tool/a" "$work/$tool/b" >/dev/null || die "$tool left the replicas different"
done

mkdir -p bench/results
out=bench/results/bisync-$(date -u +%Y-%m-%dT%H%M%SZ).txt
{
    echo "bisync vs unison -batch vs rclone bisync: $FILES files, $CHANGES changes per side, $TMPDIR_BENCH"
    echo "$(uname -r), $(nproc) cores; $("$BISYNC" --version); $(unison -version 2>/dev/null | head -1); $(rclone version 2>/dev/null | head -1)"
    printf '%-9s' phase
    for tool in $TOOLS; do printf '%16s' "$tool s/MiB"; done
    for tool in $TOOLS; do [[ $tool != bisync ]] && printf '%23s' "bisync/$tool time,mem"; done
    echo
    for phase in first nochange changes; do
        printf '%-9s' "$phase"
        for tool in $TOOLS; do printf '%10s/%5s' "${secs[$tool:$phase]}" "${mem[$tool:$phase]}"; done
        for tool in $TOOLS; do
            [[ $tool == bisync ]] && continue
            printf '%23s' "$(awk -v a="${secs[bisync:$phase]}" -v b="${secs[$tool:$phase]}" \
                -v c="${mem[bisync:$phase]}" -v d="${mem[$tool:$phase]}" \
                'BEGIN { printf "%.2f,%.2f", (b > 0 ? a / b : 0), (d > 0 ? c / d : 0) }')"
        done
        echo
    done
} | tee "$out"
