#!/usr/bin/env bash
# `make demo-fresh`: `make demo`'s install path on a machine without rsync,
# without changing this one. As root, in a private mount namespace: an
# overlay over / (its writes land in a tmpfs that goes away), rsync purged
# there with dpkg, then `make demo-deps` (which must notice rsync is missing
# and install it with apt-get: network needed) and the demo itself.
# DEMO_BIN: the binaries the demo runs (default target/release, which the
# make target builds first).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${DEMO_BIN:-$repo/target/release}
if [ "$(id -u)" != 0 ]; then
  echo "demo-fresh: needs root (a mount namespace and an overlay of /)" >&2
  exit 1
fi
work=$(mktemp -d /tmp/syncpipe-fresh.XXXXXX)
trap 'rm -rf "$work"' EXIT
unshare --mount --propagation private -- bash -euo pipefail -c '
work=$1 repo=$2 bin=$3
mount -t tmpfs tmpfs "$work"
mkdir "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
for d in proc sys dev; do mount --rbind "/$d" "$work/root/$d"; done
mount -t tmpfs tmpfs "$work/root/run"
# The paths reach the shell in the chroot as arguments, never pasted into its
# script: a path holding a quote or $(...) stays a path.
chroot "$work/root" /bin/bash -euo pipefail -c "
  repo=\$1 bin=\$2
  dpkg --purge --force-depends rsync > /dev/null 2>&1
  if command -v rsync > /dev/null; then echo \"demo-fresh: rsync is still there\" >&2; exit 1; fi
  echo \"== demo-fresh: rsync removed in the overlay; make demo-deps as root\"
  cd \"\$repo\"
  make -s demo-deps
  command -v rsync > /dev/null || { echo \"demo-fresh: make demo-deps did not install rsync\" >&2; exit 1; }
  echo \"== demo-fresh: rsync installed: \$(rsync --version | head -n 1)\"
  DEMO_BIN=\"\$bin\" bash docs/demo.sh > \"/tmp/demo.out\" 2>&1 || { cat /tmp/demo.out; exit 1; }
  grep -E \"^== \" /tmp/demo.out
  grep -q \"demo/dst equals demo/src: yes\" /tmp/demo.out
" demo-fresh-chroot "$repo" "$bin"
echo "== demo-fresh: ok (nothing on this machine changed: the overlay is gone)"
' demo-fresh "$work" "$repo" "$bin"
