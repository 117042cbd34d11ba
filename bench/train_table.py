"""The table of bench/train.sh: one row per workload, mode and cache fraction, from the JSON
lines of `sluice bench train --json`.

    /usr/bin/python3 bench/train_table.py bench/out/train.jsonl
"""
import json
import sys
from collections import OrderedDict

runs = OrderedDict()
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        runs.setdefault((r["workload"], r["mode"], r["cache_fraction"]), []).append(r)


def gib(b):
    return f"{b / (1 << 30):.2f}"


print("| workload | mode | cache | AU epoch 1 | AU epochs 2+ | hit rate 2+ | store GiB per epoch 2+ (floor) | p99 wait 2+ |")
print("|---|---|---|---|---|---|---|---|")
for (w, mode, frac), eps in runs.items():
    later = [e for e in eps if e["epoch"] >= 2] or eps
    for e in eps:  # the bytes that did not come from the store (as `bench train` reports it)
        e["hit_rate"] = 1 - min(e["store_bytes"], e["bytes_read"]) / e["bytes_read"]
    mean = lambda k: sum(e[k] for e in later) / len(later)
    cache = "-" if mode == "direct" else f"{frac * 100:.0f}%"
    print(f"| {w} | {mode} | {cache} | {eps[0]['au'] * 100:.1f}% | {mean('au') * 100:.1f}% | "
          f"{mean('hit_rate') * 100:.1f}% | {gib(mean('store_bytes'))} ({gib(mean('floor_bytes'))}) | "
          f"{mean('p99_wait_s'):.3f} s |")
