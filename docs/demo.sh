#!/usr/bin/env bash
# `make demo`: syncpipe's main job on a local demo tree, nothing remote.
# Runs `watchd demo/src | batchd | pushd demo/dst`, makes the changes a person
# makes (new folders, edits, renames, awkward names, deletes), and shows what
# flowed through each stage and that the copy equals the source.
set -euo pipefail
# `make demo` installs these first as root (DEMO_PACKAGES in the Makefile);
# run directly, or not as root, say exactly what is missing.
missing=""
command -v rsync > /dev/null || missing="$missing rsync"
command -v diff > /dev/null || missing="$missing diffutils"
if [ -n "$missing" ]; then
  echo "demo: needs these Debian packages:$missing" >&2
  echo "  install them with: sudo apt-get install -y$missing (or run \`sudo make demo\`, which does)" >&2
  exit 1
fi
cd "$(dirname "$0")/.."
# DEMO_BIN: where the binaries are (make demo-fresh runs a debug build this way).
bin=${DEMO_BIN:-target/release}
demo=demo
rm -rf "$demo" && mkdir -p "$demo/src/docs" "$demo/dst"
echo "hello" > "$demo/src/docs/readme.txt"
echo "already here before the start" > "$demo/src/old.txt"
mkfifo "$demo/w2b"

# watchd -> (events.jsonl) -> batchd -> (batches.jsonl) -> pushd -> results.jsonl
( "$bin/watchd" "$demo/src" & echo $! > "$demo/watchd.pid"; wait ) \
  | tee "$demo/events.jsonl" > "$demo/w2b" &
"$bin/batchd" -d 300ms < "$demo/w2b" | tee "$demo/batches.jsonl" \
  | "$bin/pushd" "$demo/dst" > "$demo/results.jsonl" &
pipeline=$!
stop() { kill -TERM "$(cat "$demo/watchd.pid" 2>/dev/null)" 2>/dev/null || true; }
trap stop EXIT

wait_for() { # what, condition
  for _ in $(seq 200); do eval "$2" && return 0; sleep 0.05; done
  echo "demo: timed out waiting for $1" >&2; exit 1
}
same() { diff -r "$demo/src" "$demo/dst" > /dev/null 2>&1; }
wait_for "the start-up sync" 'grep -q "\"full\":true" "$demo/results.jsonl" 2>/dev/null'
echo "== start-up sync done: demo/dst has what demo/src had"

(
  cd "$demo/src"
  mkdir -p photos/2026/11 && echo jpeg > photos/2026/11/cat.jpg
  echo "more" >> docs/readme.txt
  mv docs/readme.txt docs/README.txt
  echo x > "name with spaces and \$(touch pwned)"
  echo y > "$(printf 'bad-\377-utf8')"
  echo z > -leading-dash
  mv photos album
  rm old.txt "name with spaces and \$(touch pwned)"
)
wait_for "demo/dst to equal demo/src" same
stop
wait "$pipeline" || true
trap - EXIT

show() { if command -v jq > /dev/null; then jq -c "$2" "$1"; else cat "$1"; fi; }
echo; echo "== watchd's events ($demo/events.jsonl)"
show "$demo/events.jsonl" 'select(.type=="event") | {seq, kind, path, from}'
echo; echo "== batchd's batches ($demo/batches.jsonl)"
show "$demo/batches.jsonl" 'select(.type=="batch") | {first_seq, last_seq, changes: [.changes[] | "\(.op) \(.path)"]}'
echo; echo "== pushd's results ($demo/results.jsonl)"
show "$demo/results.jsonl" '{target, full, status, files, bytes, deleted, renamed, duration_ms}'
echo
echo "== demo/dst equals demo/src: $(same && echo yes || echo NO)"
echo "== nothing was executed from a file name: $([ -e "$demo/src/pwned" ] || [ -e "$demo/dst/pwned" ] || [ -e pwned ] && echo 'NO, pwned exists' || echo yes)"
