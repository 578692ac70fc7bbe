#!/usr/bin/env python3
"""Where pushd's time after the last change goes, from rounds kept by
`bench/churn.py --keep` (issue 10).

For each kept round directory:
  wait      last change -> start of the last transfer (batchd's window, the
            queue behind a transfer in progress, reading the batch)
  transfer  the last transfer's duration_ms (pushd's result record)
The rest of churn.py's figure is the bench noticing (it compares the trees
every 20 ms). Also the number of transfers in the round (pushd's result
records; for lsyncd its rsync runs, "Calling rsync" lines in lsyncd.log).

Usage: bench/churn-profile.py DIR...   (the "# kept DIR" lines of churn.py)
"""

import datetime
import json
import os
import statistics
import sys


def ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def profile(work):
    try:
        with open(os.path.join(work, "last-change")) as fh:
            last = float(fh.read())
    except OSError:
        return None
    outs = sorted(f for f in os.listdir(work) if f.endswith("-pushd.out"))
    if not outs:
        log = os.path.join(work, "lsyncd.log")
        runs = sum("Calling rsync" in line for line in open(log, errors="replace")) if os.path.exists(log) else 0
        return {"tool": "lsyncd", "transfers": runs}
    records = []
    for name in outs:
        for line in open(os.path.join(work, name), "rb"):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("type") == "result":
                records.append(r)
    after = [r for r in records if ts(r["ts"]) >= last]
    if not after:
        return {"tool": "pushd", "transfers": len(records)}
    final = max(after, key=lambda r: ts(r["ts"]))
    end = ts(final["ts"])
    took = final["duration_ms"] / 1000
    return {
        "tool": "pushd",
        "transfers": len(records),
        "after_last": len(after),
        "wait": end - took - last,
        "transfer": took,
    }


def main():
    dirs = sys.argv[1:]
    rows = [(d, profile(d)) for d in dirs]
    waits, transfers = [], []
    for d, p in rows:
        if p is None:
            continue
        if "wait" in p:
            waits.append(p["wait"])
            transfers.append(p["transfer"])
            print(f"{p['tool']:7} {os.path.basename(d)}: {p['transfers']} transfers ({p['after_last']} after the last change), "
                  f"wait {p['wait']:.3f}s, last transfer {p['transfer']:.3f}s")
        else:
            print(f"{p['tool']:7} {os.path.basename(d)}: {p['transfers']} transfers")
    if waits:
        print(f"median: wait {statistics.median(waits):.3f}s, last transfer {statistics.median(transfers):.3f}s")


if __name__ == "__main__":
    main()
