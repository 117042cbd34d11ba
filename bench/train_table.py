"""The tables of bench/train.sh, from the JSON lines of `sluice bench train --json`: one row per
workload, mode and cache fraction; then, per workload and cache fraction, sluice's best mode
against rclone.

    /usr/bin/python3 bench/train_table.py bench/out/train.jsonl [BANDWIDTH]

With the store's bandwidth (the throttle's --bandwidth: 150MB, 1.5GB, 200MiB), a column "link
busy" in both: the store's bytes over what the link could carry in the epoch's wall time
(100%: the link, not the tool, was the bound).
"""
import json
import re
import sys
from collections import OrderedDict

runs = OrderedDict()
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        runs.setdefault((r["workload"], r["mode"], r["cache_fraction"]), []).append(r)


def gib(b):
    return f"{b / (1 << 30):.2f}"




def rate(text):
    """Bytes a second from the throttle's notation (tests/tools/throttle.js)."""
    m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", text.strip())
    units = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "KIB": 1024, "M": 1e6, "MB": 1e6,
             "MIB": 1 << 20, "G": 1e9, "GB": 1e9, "GIB": 1 << 30}
    if not m or m.group(2).upper() not in units:
        sys.exit(f"train_table: bandwidth {text!r}: expected a number and a unit such as 150MB")
    return float(m.group(1)) * units[m.group(2).upper()]


bandwidth = rate(sys.argv[2]) if len(sys.argv) > 2 else 0


def busy(e):
    """The share of the link's capacity over epoch e's wall time that the store sent."""
    if not bandwidth:
        return None
    return e["store_bytes"] / (e["wall_s"] * bandwidth)


def share(values):
    return "-" if None in values else f"{sum(values) / len(values) * 100:.1f}%"


print("| workload | mode | cache | AU epoch 1 | AU epochs 2+ | link busy 2+ | hit rate 2+ | store GiB per epoch 2+ (floor) | p99 wait 2+ |")
print("|---|---|---|---|---|---|---|---|---|")
peers = OrderedDict()  # (workload, fraction) -> mode -> (AU epochs 2+, those epochs)
for (w, mode, frac), eps in runs.items():
    later = [e for e in eps if e["epoch"] >= 2] or eps
    for e in eps:  # the bytes that did not come from the store (as `bench train` reports it)
        e["hit_rate"] = 1 - min(e["store_bytes"], e["bytes_read"]) / e["bytes_read"]
    mean = lambda k: sum(e[k] for e in later) / len(later)
    cache = "-" if mode == "direct" else f"{frac * 100:.0f}%"
    peers.setdefault((w, frac), {})[mode] = (mean("au"), later)
    print(f"| {w} | {mode} | {cache} | {eps[0]['au'] * 100:.1f}% | {mean('au') * 100:.1f}% | "
          f"{share([busy(e) for e in later])} | "
          f"{mean('hit_rate') * 100:.1f}% | {gib(mean('store_bytes'))} ({gib(mean('floor_bytes'))}) | "
          f"{mean('p99_wait_s'):.3f} s |")


# sluice against the peer, per workload and cache size: sluice's best mode over rclone, and
# what the store's bytes leave any cache. A cache of fraction f must fetch the floor,
# (1 - f) x dataset, every epoch; where rclone already keeps the link busy, a tool can gain
# over it at most the ratio of rclone's store bytes to that floor (a little more in AU, which
# leaves each epoch's first step, and the fetching its wait allows, out).
rows = []
for (w, frac), modes in peers.items():
    if "rclone" not in modes or not 0 < frac < 1:
        continue
    mine = {m: v for m, v in modes.items() if m in ("mount", "mount+order")}
    if not mine:
        continue
    best = max(mine, key=lambda m: mine[m][0])
    au, later = mine[best]
    rau, rlater = modes["rclone"]
    floor = sum(e["floor_bytes"] for e in later) / len(later)
    rbytes = sum(e["store_bytes"] for e in rlater) / len(rlater)
    rows.append(f"| {w} | {frac * 100:.0f}% | {best} {au * 100:.1f}% | {rau * 100:.1f}% | "
                f"{f'{au / rau:.2f}x' if rau else '-'} | {share([busy(e) for e in rlater])} | "
                f"{f'{rbytes / floor:.2f}x' if floor else '-'} |")
if rows:
    print()
    print("| workload | cache | sluice's best, AU 2+ | rclone, AU 2+ | sluice / rclone | rclone's link busy | rclone's store bytes / floor |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
