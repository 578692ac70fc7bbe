#!/usr/bin/env bash
# `make demo`: syncpipe's main job on a local demo tree, nothing remote.
# Starts the pipeline on demo/src, makes a few changes a person would make,
# and shows the stream as it flows.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
demo=demo
rm -rf "$demo" && mkdir -p "$demo/src/docs" "$demo/dst"
echo "hello" > "$demo/src/docs/readme.txt"

echo "== watchd $demo/src   (stream on stdout; Ctrl-C to stop early)"
"$bin/watchd" "$demo/src" > "$demo/stream.jsonl" &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
# READY means the header is out: wait for it rather than sleeping.
for _ in $(seq 100); do [ -s "$demo/stream.jsonl" ] && break; sleep 0.05; done

(
  cd "$demo/src"
  mkdir -p photos/2026/11 && echo jpeg > photos/2026/11/cat.jpg
  echo "more" >> docs/readme.txt
  mv docs/readme.txt docs/README.txt
  echo x > "name with spaces and \$(touch pwned)"
  echo y > "$(printf 'bad-\377-utf8')"
  mv photos album
  rm "name with spaces and \$(touch pwned)"
)
sleep 0.5
kill -TERM $watcher && wait $watcher || true
trap - EXIT
cat "$demo/stream.jsonl"
echo "== $(grep -c '"type":"event"' "$demo/stream.jsonl") events; nothing ran: $( [ -e "$demo/src/pwned" ] && echo 'NO, pwned exists' || echo ok)"
