#!/bin/bash
# The demo of `make demo`: a sample dataset read twice through sluice, on built-in settings.
#
# The dataset stands for what a training job reads: a few hundred image-sized files (read
# whole, in a new order each epoch) and one columnar file (read as its footer plus a few
# column chunks, the way Parquet readers do). Epoch 1 finds an empty cache and reads the store;
# epoch 2 is served from the cache. The figures come from `sluice cache stats --json`.
set -euo pipefail

SLUICE=${1:-build/sluice}
SLUICE=$(cd "$(dirname "$SLUICE")" && pwd)/$(basename "$SLUICE")
DEMO=${DEMO_DIR:-$(pwd)/build/demo}
PY=/usr/bin/python3

rm -rf "$DEMO"
mkdir -p "$DEMO/dataset/images"
cd "$DEMO"

echo "== sluice demo in $DEMO"
echo "-- making the sample dataset: 300 image-sized files and one 64 MiB columnar file"
"$PY" - <<'EOF'
import os, random, struct
rng = random.Random(1)
for i in range(300):
    size = rng.randrange(60_000, 180_000)            # JPEG-sized samples
    with open(f"dataset/images/{i:05d}.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + rng.randbytes(size - 4))
# A columnar file: 8 row groups of 8 column chunks, then a footer that says where each is.
chunks, off = [], 4
with open("dataset/features.parquet", "wb") as f:
    f.write(b"PAR1")
    for rg in range(8):
        for col in range(8):
            n = 1 << 20
            f.write(rng.randbytes(n))
            chunks.append((off, n))
            off += n
    footer = b"".join(struct.pack("<QQ", o, n) for o, n in chunks)
    f.write(footer + struct.pack("<I", len(footer)) + b"PAR1")
EOF

cat > sluice.yaml <<EOF
# The demo's config: one mount over the local dataset, a cache next to it.
cache:
  dir: $DEMO/cache
  size: 1GiB
  memory: 256MiB
mounts:
  /demo:
    uri: file://$DEMO/dataset
    metadata_ttl: -1      # an immutable dataset: metadata is fetched once
EOF

s() { "$SLUICE" -c "$DEMO/sluice.yaml" "$@"; }
stats() { s cache stats --json; }

# One epoch: every image once in a seeded order, then the columnar reads.
epoch() {
    local seed=$1
    s ls /demo/images | "$PY" -c "
import random, sys
names = sys.stdin.read().split()
random.Random($seed).shuffle(names)
print('\n'.join('/demo/images/' + n for n in names))" > order.txt
    xargs -a order.txt "$SLUICE" -c "$DEMO/sluice.yaml" cat > /dev/null
    # Columnar: the footer, then columns 2 and 5 of every row group (random ranges).
    local size
    size=$(s stat --json /demo/features.parquet | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["size"])')
    s cat --offset $((size - 1036)) --length 1036 /demo/features.parquet > /dev/null
    for rg in 0 1 2 3 4 5 6 7; do
        for col in 2 5; do
            s cat --offset $((4 + (rg * 8 + col) * 1048576 + 4096)) --length 65536 \
                /demo/features.parquet > /dev/null
        done
    done
}

report() {
    "$PY" - "$1" "$2" "$3" <<'EOF'
import json, sys
label, before, after = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
d = {k: after[k] - before[k] for k in ("hits", "misses", "ufs_bytes_read", "ufs_requests")}
reads = d["hits"] + d["misses"]
print(f"   {label}: {reads} pages read: {d['hits']} hits, {d['misses']} misses "
      f"(hit rate {100 * d['hits'] / max(reads, 1):.0f}%), "
      f"{d['ufs_bytes_read'] / 2**20:.1f} MiB from the store in {d['ufs_requests']} requests")
EOF
}

echo "-- namespace"
s ls -l /demo
t0=$(stats)
echo "-- epoch 1 (cold cache)"
epoch 1
t1=$(stats)
report "epoch 1" "$t0" "$t1"

echo "-- epoch 2 (new order, warm cache)"
epoch 2
t2=$(stats)
report "epoch 2" "$t1" "$t2"

echo "-- what is cached"
s ls -l /demo
s stat /demo/features.parquet | sed -n '4,5p'
echo "-- cache figures (sluice cache stats)"
s cache stats

"$PY" - "$t1" "$t2" <<'EOF'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if b["hits"] - a["hits"] <= 0 or b["ufs_bytes_read"] != a["ufs_bytes_read"]:
    sys.exit("demo: epoch 2 was not served from the cache")
print("== epoch 2 was served from the cache: no store reads")
EOF
