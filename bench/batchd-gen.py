#!/usr/bin/env python3
"""Writes a syncpipe event stream for benchmarks: a header, then EVENTS events
spread over PATHS distinct files in PATHS/100 directories: creates of absent
files; modifies, attribute changes, deletes and renames of existing ones
(seeded, so runs compare).

usage: batchd-gen.py EVENTS PATHS [SEED] > stream.jsonl
"""
import random
import sys


def main():
    events = int(sys.argv[1])
    paths = int(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    dirs = max(1, paths // 100)
    names = [f"d{i % dirs}/file {i}.txt" for i in range(paths)]
    # A consistent stream, as a watcher writes it: half the files exist at
    # the start; only existing files are modified, deleted or renamed.
    exists = bytearray(rng.getrandbits(1) for _ in range(paths))
    out = sys.stdout
    out.write('{"type":"header","v":1,"stream":"0123456789abcdef0123456789abcdef",'
              '"root":"/data","host":"bench","ts":"2026-11-21T10:00:00.000Z",'
              '"producer":"batchd-gen/1"}\n')
    ts = '"ts":"2026-11-21T10:00:00.000Z"'
    # For an existing file: 80% modify, 5% attrib, 10% delete, 5% rename.
    kinds = ["modify"] * 80 + ["attrib"] * 5 + ["delete"] * 10 + ["move"] * 5
    buf = []
    randrange = rng.randrange
    for seq in range(1, events + 1):
        i = randrange(paths)
        path = names[i]
        if not exists[i]:
            exists[i] = 1
            buf.append(f'{{"type":"event","seq":{seq},{ts},"kind":"create","path":"{path}",'
                       f'"dir":false}}\n')
        else:
            kind = kinds[randrange(100)]
            if kind == "move":
                j = randrange(paths)
                if j == i:
                    kind = "modify"
                else:
                    exists[i] = 0
                    exists[j] = 1
                    buf.append(f'{{"type":"event","seq":{seq},{ts},"kind":"move",'
                               f'"path":"{names[j]}","dir":false,"from":"{path}"}}\n')
            elif kind == "delete":
                exists[i] = 0
            if kind != "move":
                buf.append(f'{{"type":"event","seq":{seq},{ts},"kind":"{kind}","path":"{path}",'
                           f'"dir":false}}\n')
        if len(buf) >= 100000:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))


if __name__ == "__main__":
    main()
