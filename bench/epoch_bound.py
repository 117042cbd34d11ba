"""The best hit rate any cache can reach on training epochs: Belady's optimal policy (it knows
every read to come and evicts what is read again last), on epochs that each read every item
once in a new seeded order.

    /usr/bin/python3 bench/epoch_bound.py [ITEMS CACHE [EPOCHS [SEED]]]

Prints the hit rate per epoch. Every hit of an epoch is of an item kept since the epoch
before, so of one in the cache when the epoch began: no policy beats cache / items, and this
one reaches it in every epoch after the first (which starts with the cache empty). A cache of a quarter of the dataset must fetch three quarters of it every
epoch, whatever it is told of the order (docs/benchmarks.md, the training section).
"""
import heapq
import random
import sys


def belady(items, cache, epochs, seed):
    rnd = random.Random(seed)
    reads = []
    for _ in range(epochs):
        order = list(range(items))
        rnd.shuffle(order)
        reads += order
    never = len(reads)
    next_use, seen = [never] * len(reads), {}
    for i in range(len(reads) - 1, -1, -1):
        next_use[i] = seen.get(reads[i], never)
        seen[reads[i]] = i
    held = {}     # item -> when it is read next
    furthest = []  # (-next read, item), stale entries skipped
    hits = [0] * epochs
    for i, item in enumerate(reads):
        if item in held:
            hits[i // items] += 1
        held[item] = next_use[i]
        heapq.heappush(furthest, (-next_use[i], item))
        while len(held) > cache:  # the one read again last goes (the new one, if it is that)
            when, victim = heapq.heappop(furthest)
            if held.get(victim) == -when:
                del held[victim]
    return [h / items for h in hits]


def main():
    usage = "epoch_bound: expected ITEMS CACHE [EPOCHS [SEED]] with 0 < CACHE <= ITEMS"
    try:
        args = [int(a) for a in sys.argv[1:]]
    except ValueError:
        sys.exit(usage)
    if len(args) not in (0, 2, 3, 4):
        sys.exit(usage)
    items, cache = (args[0], args[1]) if len(args) >= 2 else (160, 40)
    epochs = args[2] if len(args) >= 3 else 6
    seed = args[3] if len(args) >= 4 else 1
    if not 0 < cache <= items or epochs < 1:
        sys.exit(usage)
    rates = belady(items, cache, epochs, seed)
    print(f"{items} items, a cache of {cache} ({cache / items:.1%}), seed {seed}: hit rate by epoch")
    print("  " + "  ".join(f"{r:.1%}" for r in rates))


if __name__ == "__main__":
    main()
