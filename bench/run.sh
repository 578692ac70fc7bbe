#!/usr/bin/env bash
# bench/run.sh: runs every benchmark bench/*.sh (all but this one), in name
# order, from the repository root; `make bench` calls it. The environment
# (DIRS=, FILES=, REPEAT=, ...) passes through to each. Exits non-zero if any
# benchmark failed, after running the rest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
failed=()
for bench in bench/*.sh; do
    [[ $bench == bench/run.sh ]] && continue
    echo "### $bench"
    if ! bash "$bench"; then
        failed+=("$bench")
    fi
done
if ((${#failed[@]})); then
    echo "bench/run.sh: failed: ${failed[*]}" >&2
    exit 1
fi
