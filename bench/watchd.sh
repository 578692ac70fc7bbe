#!/usr/bin/env bash
# bench/watchd.sh: watchd side by side with `inotifywait -r -m` (issues 2, 18),
# and in the set-up also with lsyncd (when it is installed).
#
# watchd runs twice everywhere: watchd-inotify (--backend inotify) and
# watchd-fanotify (--backend fanotify: needs root and Linux 5.17+; it is left
# out, with a note, when it cannot run). Kernel memory is the growth of the
# Slab line of /proc/meminfo between start and ready (noisy on a busy machine:
# the inotify marks' slab is merged with others, so no single cache shows it).
#
#   a. watch set-up on a tree of DIRS directories (10 x 100 x N, in a tmpfs):
#      seconds from process start until ready (watchd: its header line;
#      inotifywait: "Watches established."; lsyncd: a line its sync's `init`
#      logs, which lsyncd calls once every watch is added; no startup rsync
#      runs, so only watching is timed), VmRSS / VmHWM and CPU time once
#      ready; a2. the same on one directory with WIDE subdirectories;
#   b. a burst of FILES empty-file creations (bench/burst.rs) spread over
#      BURST_DIRS already-watched directories: the writer's time alone and
#      with each watcher running (its output to a file), on the wall clock
#      and on the CPU (the watcher's in-kernel cost charged to the writer,
#      which a busy machine's CPU contention does not blur), the events each
#      delivered, and for watchd whether every file was reported as `create`
#      or a `rescan` said that some may not have been.
#
# Every figure is the median of REPEAT runs, the tools interleaved within a
# repetition so that machine noise hits them alike. Figures go to stdout and
# to bench/results/watchd-<date>.txt.
#
# Usage (from the repository root):  bench/watchd.sh
#   DIRS=100000 FILES=200000 BURST_DIRS=100 REPEAT=3 bench/watchd.sh
#   WATCHD=path/to/watchd   use that binary instead of building target/release/watchd
#   WIDE=20000              a2: set-up on one directory with that many subdirectories
#   PARTS="setup wide burst" run only some parts
#   TMPDIR_BENCH=/dev/shm   where the trees go (must be a tmpfs to measure watchers, not disks;
#                           a private `mount -t tmpfs` is best: a fanotify file-system mark
#                           anyone else holds on it makes every writer there pay)
#   PIN="0 1"               burst: run the writer on CPU 0 and every watcher on CPU 1 (taskset)
#   BURST_TOOLS="none inotifywait watchd-fanotify"  burst: only these tools (none is the baseline)
#                           floor-inotify, floor-fanotify: bench/floor.rs, watchd's marks and a
#                           reader that never reads (root: the queues are raised while it starts)
#   Environment such as WATCHD_COALESCE_US reaches watchd as it is.
set -euo pipefail

DIRS=${DIRS:-100000}
FILES=${FILES:-200000}
BURST_DIRS=${BURST_DIRS:-100}
REPEAT=${REPEAT:-3}
WIDE=${WIDE:-20000}
PARTS=${PARTS:-setup wide burst}
TMPDIR_BENCH=${TMPDIR_BENCH:-/dev/shm}
READY_TIMEOUT=${READY_TIMEOUT:-300}
PIN=${PIN:-}
read -r PIN_WRITER PIN_WATCHER <<<"$PIN" || true
# on_cpu ROLE: the taskset prefix for the writer or the watchers (nothing without PIN)
on_cpu() {
    local cpu
    [[ $1 == writer ]] && cpu=${PIN_WRITER:-} || cpu=${PIN_WATCHER:-}
    [[ -z $cpu ]] || printf '%s\n' taskset -c "$cpu"
}
# The burst's inotifywait peers: the plain `inotifywait -r -m` the issue names
# (it reports every event, OPEN included), and one asking for the same events
# as watchd's default, the like-for-like comparison.
WATCHD_EVENTS=create,delete,moved_from,moved_to,attrib,close_write,delete_self,move_self

die() {
    echo "bench/watchd.sh: $*" >&2
    exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v inotifywait >/dev/null || die "inotifywait is missing: apt-get install inotify-tools"
[[ $BURST_DIRS -ge 1 && $BURST_DIRS -le 1000 ]] || die "BURST_DIRS must be 1..1000"
[[ $REPEAT -ge 1 ]] || die "REPEAT must be at least 1"
# One watcher at a time holds the tree's watches; the account's other
# inotify users (tests running alongside) need some too. With RAISE_WATCHES=1
# (root) a bigger tree is allowed: fs.inotify.max_user_watches is raised only
# while an inotify-based peer runs and put back right after (and on exit), so
# watchd-fanotify always runs with the machine's own limit.
max_watches=$(</proc/sys/fs/inotify/max_user_watches)
RAISE_WATCHES=${RAISE_WATCHES:-0}
if ((DIRS + 1000 > max_watches)); then
    [[ $RAISE_WATCHES == 1 ]] ||
        die "DIRS=$DIRS needs more inotify watches than fs.inotify.max_user_watches ($max_watches) leaves: lower DIRS, or RAISE_WATCHES=1 (root) to raise it for the inotify peers only"
    [[ -w /proc/sys/fs/inotify/max_user_watches ]] || die "RAISE_WATCHES=1 needs root"
else
    RAISE_WATCHES=0
fi
# watches_for TOOL: the limit TOOL runs with (raised for inotify users only).
watches_for() {
    [[ $RAISE_WATCHES == 1 ]] || return 0
    if [[ $1 == watchd-fanotify ]]; then
        echo "$max_watches" >/proc/sys/fs/inotify/max_user_watches
    else
        echo $((DIRS + 100000)) >/proc/sys/fs/inotify/max_user_watches
    fi
}

if [[ -z ${WATCHD:-} ]]; then
    cargo build --release --quiet --bin watchd || die "cargo build --release failed"
    WATCHD=$PWD/target/release/watchd
fi
[[ -x $WATCHD ]] || die "$WATCHD is not an executable"
BURST=$PWD/target/bench/burst
FLOOR=$PWD/target/bench/floor
for tool in burst floor; do
    if [[ ! -x target/bench/$tool || bench/$tool.rs -nt target/bench/$tool ]]; then
        mkdir -p target/bench
        rustc -O --edition 2021 -o "target/bench/$tool" "bench/$tool.rs" || die "rustc bench/$tool.rs failed"
    fi
done

# The backends this machine can run: fanotify needs root and Linux 5.17+.
WATCHD_TOOLS=watchd-inotify
probe=$(mktemp -d)
if timeout 2 "$WATCHD" --backend fanotify --quiet "$probe" >/dev/null 2>"$probe.err" || [[ $? == 124 ]]; then
    WATCHD_TOOLS+=" watchd-fanotify"
else
    echo "bench/watchd.sh: watchd-fanotify left out: $(cat "$probe.err")" >&2
fi
rm -rf "$probe" "$probe.err"
SETUP_TOOLS="inotifywait $WATCHD_TOOLS"
if command -v lsyncd >/dev/null; then
    SETUP_TOOLS+=" lsyncd"
else
    echo "bench/watchd.sh: lsyncd left out of the set-up: not installed (apt-get install lsyncd)" >&2
fi

mkdir -p bench/results
RESULTS=$PWD/bench/results/watchd-$(date -u +%Y-%m-%dT%H%M%SZ).txt
: >"$RESULTS"
WORK=$(mktemp -d "$TMPDIR_BENCH/syncpipe-bench.XXXXXX")
WATCHER_PID=

# the queue limits as they were (floor-* raises them for a moment)
QUEUES_AT_START=$(cat /proc/sys/fs/inotify/max_queued_events /proc/sys/fs/fanotify/max_queued_events 2>/dev/null || true)
cleanup() {
    if [[ ${BURST_TOOLS:-} == *floor-* && -w /proc/sys/fs/inotify/max_queued_events ]]; then
        read -rd '' qi qf <<<"$QUEUES_AT_START" || true
        echo "$qi" >/proc/sys/fs/inotify/max_queued_events
        echo "$qf" >/proc/sys/fs/fanotify/max_queued_events
    fi
    if [[ -n $WATCHER_PID ]]; then
        kill "$WATCHER_PID" 2>/dev/null || true
        wait "$WATCHER_PID" 2>/dev/null || true
    fi
    [[ $RAISE_WATCHES != 1 ]] || echo "$max_watches" >/proc/sys/fs/inotify/max_user_watches
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

# median of the numbers given as arguments
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# calc EXPR: floating-point arithmetic with awk
calc() { awk "BEGIN { printf \"%.2f\", ($1) }"; }

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# CPU seconds a live process has used so far: "user system"
cpu_secs() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # fields after "pid (comm)"; field 14 utime is the 12th here
    awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f %.2f\n", $12 / t, $13 / t }' <<<"$stat"
}

stop_watcher() {
    kill "$WATCHER_PID" 2>/dev/null || true
    wait "$WATCHER_PID" 2>/dev/null || true
    WATCHER_PID=
}

# start_watcher TOOL ROOT OUT ERR: starts TOOL on ROOT in the background,
# stdout to OUT, stderr to ERR; returns once it says its watches are in place.
start_watcher() {
    local tool=$1 root=$2 out=$3 err=$4 deadline queues
    local pin
    mapfile -t pin < <(on_cpu watcher)
    case $tool in
    watchd-*) "${pin[@]}" "$WATCHD" --backend "${tool#watchd-}" "$root" >"$out" 2>"$err" & ;;
    inotifywait) "${pin[@]}" inotifywait -r -m "$root" >"$out" 2>"$err" & ;;
    inotifywait-e) "${pin[@]}" inotifywait -r -m -e "$WATCHD_EVENTS" "$root" >"$out" 2>"$err" & ;;
    floor-*)
        # a queue that holds the whole burst: the kernel reads the limit
        # when the group is made, so it is put back once the tool is ready
        queues=$(cat /proc/sys/fs/{inotify,fanotify}/max_queued_events)
        tee /proc/sys/fs/{inotify,fanotify}/max_queued_events <<<$((FILES * 4)) >/dev/null ||
            die "$tool needs root (it raises fs.*notify.max_queued_events while it starts)"
        "${pin[@]}" "$FLOOR" "${tool#floor-}" "$root" >"$out" 2>"$err" &
        ;;
    *) die "unknown tool $tool" ;;
    esac
    WATCHER_PID=$!
    deadline=$((SECONDS + READY_TIMEOUT))
    until is_ready "$tool" "$out" "$err"; do
        kill -0 "$WATCHER_PID" 2>/dev/null || die "$tool exited before it was ready: $(head -c 600 "$err")"
        ((SECONDS < deadline)) || die "$tool not ready after ${READY_TIMEOUT}s"
        sleep 0.01
    done
    if [[ $tool == floor-* ]]; then
        read -rd '' qi qf <<<"$queues" || true
        echo "$qi" >/proc/sys/fs/inotify/max_queued_events
        echo "$qf" >/proc/sys/fs/fanotify/max_queued_events
    fi
}

is_ready() {
    case $1 in
    watchd-*) [[ -s $2 ]] ;; # the header line
    *) grep -qs '^Watches established' "$3" ;;
    esac
}

# ---------------------------------------------------------------- a. set-up

# make_tree ROOT N: about N directories under ROOT, 10 x 100 x (N / 1000),
# so the tree has three depths and a mix of fan-outs.
make_tree() {
    local root=$1 n=$2 top=10 mid=100 leaf=0 i j
    if ((n >= 1010)); then
        leaf=$(((n - 1010 + 500) / 1000))
    else
        mid=$(((n - top) / top > 0 ? (n - top) / top : 1))
    fi
    mkdir -p "$root"
    for ((i = 0; i < top; i++)); do
        if ((leaf > 0)); then
            # one mkdir per middle directory keeps the argument list small
            # (a million directories do not fit in one)
            for ((j = 0; j < mid; j++)); do
                eval "mkdir -p \"\$root/t$i/m$j\"/l{0..$((leaf - 1))}"
            done
        else
            eval "mkdir -p \"\$root/t$i\"/m{0..$((mid - 1))}"
        fi
    done
}

slab_kib() { awk '$1 == "Slab:" { print $2 }' /proc/meminfo; }

# measure_setup TOOL ROOT: sets SECS, RSS, HWM and SLAB (KiB), and CAPPED=1
# when TOOL was not ready within READY_TIMEOUT (SECS is then the cap, and the
# memory what it held by then). Results come back in globals, not on stdout,
# so the watcher is this shell's child and the trap can stop it.
measure_setup() {
    local tool=$1 root=$2 start end line pid slab0 deadline
    CAPPED=0
    watches_for "$tool"
    sync
    slab0=$(slab_kib)
    start=$EPOCHREALTIME
    deadline=$((SECONDS + READY_TIMEOUT))
    # not_ready: the read timed out (the tool is still setting up: capped),
    # or the tool ended (a failure).
    not_ready() {
        kill -0 "$pid" 2>/dev/null || die "$tool ended before it was ready"
        ((SECONDS >= deadline)) || die "$tool: unexpected end of its output"
        CAPPED=1
    }
    case $tool in
    watchd-*)
        coproc SETUP { exec "$WATCHD" --backend "${tool#watchd-}" "$root" 2>/dev/null; }
        pid=$SETUP_PID WATCHER_PID=$SETUP_PID
        if IFS= read -r -t "$READY_TIMEOUT" line <&"${SETUP[0]}"; then
            [[ $line == '{"type":"header"'* ]] || die "watchd's first line is not a header: $line"
        else
            not_ready
        fi
        ;;
    lsyncd)
        # Watches only: no action runs at start-up (no startup rsync), and
        # `init`, which lsyncd calls once every watch is in place, says so.
        printf '%s\n' 'settings { nodaemon = true, insist = false }' \
            "sync { source = \"$root\", maxProcesses = 1," \
            '  init = function(event) log("Normal", "READY"); event.inlet.discardEvent(event) end,' \
            '  action = function(inlet) inlet.discardEvent(inlet.getEvent()) end }' >"$WORK/lsyncd.lua"
        coproc SETUP { exec lsyncd "$WORK/lsyncd.lua" 2>&1; }
        pid=$SETUP_PID WATCHER_PID=$SETUP_PID
        while true; do
            IFS= read -r -t $((deadline - SECONDS > 0 ? deadline - SECONDS : 1)) line <&"${SETUP[0]}" || {
                not_ready
                break
            }
            [[ $line == *'Normal: READY' ]] && break
            [[ $line == *'Normal: --- Startup ---' ]] || die "lsyncd: $line"
        done
        ;;
    inotifywait)
        coproc SETUP { exec inotifywait -r -m "$root" 2>&1 >/dev/null; }
        pid=$SETUP_PID WATCHER_PID=$SETUP_PID
        while true; do
            IFS= read -r -t $((deadline - SECONDS > 0 ? deadline - SECONDS : 1)) line <&"${SETUP[0]}" || {
                not_ready
                break
            }
            [[ $line == 'Watches established.'* ]] && break
            [[ $line == 'Setting up watches.'* ]] || die "inotifywait: $line"
        done
        ;;
    esac
    end=$EPOCHREALTIME
    SLAB=$(($(slab_kib) - slab0))
    WATCHER_PID=$pid
    RSS=$(status_kib "$pid" VmRSS)
    HWM=$(status_kib "$pid" VmHWM)
    read -r CPU_USER CPU_SYS < <(cpu_secs "$pid")
    stop_watcher
    SECS=$(calc "$end - $start")
    watches_for watchd-fanotify # back to the machine's own limit
}

# setup_compare TITLE TREE: both tools' set-up on TREE, interleaved, REPEAT
# times; the medians and ratios.
setup_compare() {
    local title=$1 tree=$2 r tool dirs SECS RSS HWM SLAB CPU_USER CPU_SYS CAPPED
    local -A t=() m=() h=() u=() k=() sl=() capped=()
    dirs=$(find "$tree" -type d | wc -l)
    say ""
    say "== $title: $dirs directories (tmpfs), median of $REPEAT =="
    for ((r = 1; r <= REPEAT; r++)); do
        for tool in $SETUP_TOOLS; do
            measure_setup "$tool" "$tree"
            t[$tool]+=" $SECS" m[$tool]+=" $RSS" h[$tool]+=" $HWM" u[$tool]+=" $CPU_USER" k[$tool]+=" $CPU_SYS" sl[$tool]+=" $SLAB"
            ((CAPPED == 0)) || capped[$tool]=1
            say "   run $r $(printf '%-16s' "$tool") ${SECS} s$( ((CAPPED == 0)) || echo " (NOT READY: capped at READY_TIMEOUT=$READY_TIMEOUT s)")" \
                " VmRSS $((RSS / 1024)) MiB  VmHWM $((HWM / 1024)) MiB" \
                " slab +$((SLAB / 1024)) MiB  cpu user ${CPU_USER} s sys ${CPU_SYS} s"
        done
    done
    local ti ri si
    # shellcheck disable=SC2086 # the lists are words on purpose
    ti=$(median ${t[inotifywait]}) ri=$(median ${m[inotifywait]}) si=$(median ${sl[inotifywait]})
    say "   $(printf '%-16s %10s %9s %10s %9s %10s %9s %10s %8s' tool 'ready s' ratio 'RSS MiB' ratio 'slab MiB' ratio 'RSS+slab' ratio)"
    for tool in $SETUP_TOOLS; do
        local ts rs ss
        # shellcheck disable=SC2086
        ts=$(median ${t[$tool]}) rs=$(median ${m[$tool]}) ss=$(median ${sl[$tool]})
        say "   $(printf '%-16s %10s %9s %10s %9s %10s %9s %10s %8s' "$tool" "$ts" "$(calc "$ts / $ti")" \
            "$(calc "$rs / 1024")" "$(calc "$rs / $ri")" "$(calc "$ss / 1024")" "$(calc "$ss / ($si == 0 ? 1 : $si)")" \
            "$(calc "($rs + $ss) / 1024")" "$(calc "($rs + $ss) / ($ri + $si)")")$([[ -z ${capped[$tool]:-} ]] || echo "  capped: at least this")"
    done
    say "   (ratios against inotifywait; per directory: inotifywait $(calc "$ti * 1e6 / $dirs") us," \
        "$(calc "($ri + $si) * 1024 / $dirs") B of RSS+slab)"
}

part_setup() {
    make_tree "$WORK/tree" "$DIRS"
    setup_compare "a. watch set-up, 10 x 100 x N tree" "$WORK/tree"
    say "   target (issue 18): watchd-fanotify/inotifywait <= 0.05 on time, <= 0.25 on memory"
    rm -rf "$WORK/tree"
}

# One directory holding WIDE subdirectories (a maildir, a cache): a tree
# index that searches siblings one by one shows here as quadratic time.
part_wide() {
    mkdir -p "$WORK/wide"
    (cd "$WORK/wide" && seq -f 'dir%06g' 1 "$WIDE" | xargs mkdir)
    setup_compare "a2. watch set-up, one directory with $WIDE subdirectories" "$WORK/wide"
    rm -rf "$WORK/wide"
}

# ---------------------------------------------------------------- b. burst

# burst_once TOOL N: one burst; sets WRITER and WRITER_CPU (s), LINES, CREATES (distinct
# files reported created), RESCANS, DRAIN (s from the writer's end until the
# watcher's output and CPU time stopped growing) and CPU (the watcher's CPU s).
burst_once() {
    local tool=$1 n=$2 root=$WORK/burst.$2 out=$WORK/out.$2 err=$WORK/err.$2
    local d done_at last_change size prev
    CREATES=0 RESCANS=0 LINES=0 CPU=0 DRAIN=0
    mkdir -p "$root"
    for ((d = 0; d < BURST_DIRS; d++)); do mkdir "$root/$(printf 'd%03d' "$d")"; done
    [[ $tool == none ]] || start_watcher "$tool" "$root" "$out" "$err"
    local pin
    mapfile -t pin < <(on_cpu writer)
    read -r WRITER WRITER_CPU < <("${pin[@]}" "$BURST" "$root" "$FILES" "$BURST_DIRS")
    if [[ $tool != none ]]; then
        # Wait until the watcher has written everything: neither its output
        # nor its CPU time has grown for a second (a watcher still busy with
        # a big batch writes nothing for a while, but burns CPU).
        done_at=$EPOCHREALTIME last_change=$done_at prev=-1
        while true; do
            size="$(stat -c %s "$out") $(cpu_secs "$WATCHER_PID")"
            if [[ $size != "$prev" ]]; then
                prev=$size last_change=$EPOCHREALTIME
            elif [[ $(calc "$EPOCHREALTIME - $last_change >= 1") != 0.00 ]]; then
                break
            fi
            sleep 0.1
        done
        DRAIN=$(calc "$last_change - $done_at")
        CPU=$(cpu_secs "$WATCHER_PID" | awk '{ printf "%.2f", $1 + $2 }')
        stop_watcher
        LINES=$(wc -l <"$out")
        if [[ $tool == watchd-* ]]; then
            LINES=$((LINES - 1)) # the header
            CREATES=$(grep -oE '"kind":"create","path":"d[0-9]{3}/f[0-9]{7}"' "$out" | sort -u | wc -l)
            RESCANS=$(grep -c '"kind":"rescan"' "$out" || true)
        elif [[ $tool == floor-* ]]; then
            CREATES=0 # it reads nothing: only the writer's figures count
        else
            CREATES=$(grep -E ' CREATE f[0-9]{7}$' "$out" | sort -u | wc -l)
        fi
    fi
    rm -rf "$root" "$out" "$err"
}

part_burst() {
    local tools=${BURST_TOOLS:-"none inotifywait inotifywait-e ${WATCHD_TOOLS}"} tool r n=0
    [[ " $tools " == *" none "* && " $tools " == *" inotifywait "* ]] ||
        die "BURST_TOOLS must hold none and inotifywait (the baseline and the reference)"
    local WRITER WRITER_CPU LINES CREATES RESCANS DRAIN CPU
    local -A W=() P=() L=() C=() S=() D=() U=()
    say ""
    say "== b. burst: $FILES empty files created over $BURST_DIRS watched directories (tmpfs), median of $REPEAT =="
    [[ -z $PIN ]] || say "   pinned: the writer on CPU $PIN_WRITER, every watcher on CPU $PIN_WATCHER (taskset)"
    [[ -z ${WATCHD_COALESCE_US:-} ]] || say "   WATCHD_COALESCE_US=$WATCHD_COALESCE_US"
    say "   inotifywait   = inotifywait -r -m ROOT (every event, OPEN included)"
    say "   inotifywait-e = inotifywait -r -m -e $WATCHD_EVENTS ROOT (watchd's default set)"
    for ((r = 1; r <= REPEAT; r++)); do
        for tool in $tools; do
            burst_once "$tool" $((n++))
            W[$tool]+=" $WRITER" P[$tool]+=" $WRITER_CPU" L[$tool]+=" $LINES" C[$tool]+=" $CREATES" S[$tool]+=" $RESCANS"
            D[$tool]+=" $DRAIN" U[$tool]+=" $CPU"
            say "   run $r $(printf '%-14s' "$tool") writer ${WRITER} s (cpu ${WRITER_CPU} s)  lines $LINES  creates $CREATES" \
                " rescans $RESCANS  drain ${DRAIN} s  watcher cpu ${CPU} s"
        done
    done
    local base pbase wm pm
    local -A slow=() pslow=()
    # shellcheck disable=SC2086 # the lists are words on purpose
    base=$(median ${W[none]}) pbase=$(median ${P[none]})
    say "   $(printf '%-14s %9s %9s %9s %9s %8s %8s %8s %7s %7s' tool 'writer s' slowdown \
        'cpu s' 'cpu slow' lines creates rescans 'drain' 'w. cpu')"
    for tool in $tools; do
        # shellcheck disable=SC2086
        wm=$(median ${W[$tool]}) pm=$(median ${P[$tool]})
        slow[$tool]=$(calc "($wm / $base - 1) * 100")
        pslow[$tool]=$(calc "($pm / $pbase - 1) * 100")
        # shellcheck disable=SC2086
        say "   $(printf '%-14s %9s %8s%% %9s %8s%% %8s %8s %8s %7s %7s' "$tool" "$wm" "${slow[$tool]}" \
            "$pm" "${pslow[$tool]}" "$(median ${L[$tool]})" "$(median ${C[$tool]})" \
            "$(median ${S[$tool]})" "$(median ${D[$tool]})" "$(median ${U[$tool]})")"
    done
    ratio() { calc "${1} / (${2} == 0 ? 1 : ${2})"; }
    local w
    local wtools=() iw_e=inotifywait-e
    for w in $WATCHD_TOOLS; do [[ " $tools " != *" $w "* ]] || wtools+=("$w"); done
    [[ " $tools " == *" inotifywait-e "* ]] || iw_e=inotifywait
    local rtools=("${wtools[@]}")
    for w in floor-inotify floor-fanotify; do [[ " $tools " != *" $w "* ]] || rtools+=("$w"); done
    for w in "${rtools[@]}"; do
        say "   slowdown ratio $w/inotifywait: wall $(ratio "${slow[$w]}" "${slow[inotifywait]}")," \
            "writer cpu $(ratio "${pslow[$w]}" "${pslow[inotifywait]}")  (target <= 0.50);" \
            "vs $iw_e: wall $(ratio "${slow[$w]}" "${slow[$iw_e]}")," \
            "writer cpu $(ratio "${pslow[$w]}" "${pslow[$iw_e]}")"
    done
    # Nothing missing silently: in every watchd run, all files reported as
    # created, or a rescan emitted.
    local complete=0 rescued=0 silent=0 cs ss i
    for w in "${wtools[@]}"; do
        read -ra cs <<<"${C[$w]}"
        read -ra ss <<<"${S[$w]}"
        for i in "${!cs[@]}"; do
            if ((cs[i] == FILES)); then
                ((complete += 1))
            elif ((ss[i] > 0)); then
                ((rescued += 1))
            else
                ((silent += 1))
            fi
        done
    done
    say "   watchd completeness over $REPEAT runs x (${wtools[*]}): all $FILES creates reported in $complete," \
        "some missing but a rescan emitted in $rescued, missing SILENTLY in $silent"
    say "   inotifywait creates reported (of $FILES):${C[inotifywait]}  (-e:${C[inotifywait-e]:-}; it loses events on overflow without a word)"
    ((silent == 0)) || say "   FAIL: watchd lost events without a rescan"
}

# ---------------------------------------------------------------- main

say "watchd benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "   command: DIRS=$DIRS WIDE=$WIDE FILES=$FILES BURST_DIRS=$BURST_DIRS REPEAT=$REPEAT PARTS=\"$PARTS\"" \
    "RAISE_WATCHES=$RAISE_WATCHES READY_TIMEOUT=$READY_TIMEOUT bench/watchd.sh"
say "   machine: $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)," \
    "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
    "trees in $(stat -f -c %T "$WORK")"
say "   watchd: $WATCHD ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))," \
    "$(inotifywait --help 2>&1 | head -1)," \
    "max_user_watches $(</proc/sys/fs/inotify/max_user_watches), max_queued_events $(</proc/sys/fs/inotify/max_queued_events)"
for part in $PARTS; do
    case $part in
    setup) part_setup ;;
    wide) part_wide ;;
    burst) part_burst ;;
    *) die "unknown part $part (PARTS=\"setup wide burst\")" ;;
    esac
done
say ""
say "load at the end: $(cut -d' ' -f1-3 /proc/loadavg); results in ${RESULTS#"$PWD"/}"
