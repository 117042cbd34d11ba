#!/bin/bash
# The demo of `make demo`: a small ML pipeline run by sluice over a dataset sluice serves, on
# built-in settings (no server to start).
#
#   ingest      uploads 300 image-sized samples into the store, through sluice (`sluice cp`)
#   preprocess  one copy per split (foreach: train, val): reads its images through sluice's
#               cache (the Python binding) and writes a feature file
#   train       logistic regression over the train features, read in random minibatches for
#               a few epochs; params from params.yaml
#   evaluate    the model on the val features: accuracy
#
# Then `sluice report` (what each stage read and wrote, and how) and the cache's figures. The
# pipeline is run a second time (nothing runs: nothing changed) and a third with a new
# learning rate (train and evaluate run, nothing above them).
set -euo pipefail

SLUICE=${1:-build/sluice}
SLUICE=$(cd "$(dirname "$SLUICE")" && pwd)/$(basename "$SLUICE")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO=${DEMO_DIR:-$(pwd)/build/demo}
PY=/usr/bin/python3

rm -rf "$DEMO"
mkdir -p "$DEMO/store" "$DEMO/steps"
cd "$DEMO"

cat > sluice.yaml <<EOF
# The demo's config: one mount over a local folder standing for the store, a cache next to it.
cache:
  dir: $DEMO/cache
  size: 1GiB
  memory: 256MiB
mounts:
  /demo:
    uri: file://$DEMO/store
    metadata_ttl: 0      # the pipeline writes into it: always ask the store
EOF
export SLUICE_CONFIG=$DEMO/sluice.yaml PYTHONPATH=$ROOT/python
# The Python binding loads this build's library.
export SLUICE_LIB=$(dirname "$SLUICE")/src/libsluice.so

cat > params.yaml <<'EOF'
train:
  lr: 0.5
  epochs: 4
  batch: 16
EOF

cat > steps/ingest.py <<'EOF'
"""300 image-sized samples, half of each class; class 1 is brighter."""
import os, random, sys
out = sys.argv[1]
rng = random.Random(1)
os.makedirs(out, exist_ok=True)
for i in range(300):
    label = i % 2
    size = rng.randrange(60_000, 120_000)
    level = 150 if label else 100
    body = bytes(min(255, max(0, int(rng.gauss(level, 40)))) for _ in range(size // 64)) * 64
    with open(f"{out}/{i:04d}-{label}.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + body)
EOF

cat > steps/preprocess.py <<'EOF'
"""Features of one split's images, read through sluice's cache: 16 block means per image."""
import struct, sys
import sluice
split, out = sys.argv[1], sys.argv[2]
sl = sluice.Sluice()
names = sorted(n for n, _ in sl.listdir("/demo/images"))
names = [n for i, n in enumerate(names) if (i % 5 == 0) == (split == "val")]
with open(out, "wb") as f:
    for n in names:
        data = sl.read(f"/demo/images/{n}")[4:]
        k = len(data) // 16
        feats = [sum(data[j * k:(j + 1) * k:97]) / max(1, len(data[j * k:(j + 1) * k:97])) / 255
                 for j in range(16)]
        f.write(struct.pack("16fB", *feats, int(n[-5])))
print(f"{split}: {len(names)} images")
EOF

cat > steps/train.py <<'EOF'
"""Logistic regression by minibatch SGD, each epoch's batches read at random offsets."""
import json, math, os, random, struct, sys
import yaml
p = yaml.safe_load(open("params.yaml"))["train"]
REC = struct.calcsize("16fB")
fd = os.open("features/train.bin", os.O_RDONLY)
n = os.fstat(fd).st_size // REC
w, b = [0.0] * 16, 0.0
rng = random.Random(0)
for epoch in range(p["epochs"]):
    order = list(range(n))
    rng.shuffle(order)
    loss = 0.0
    for s in range(0, n, p["batch"]):
        gw, gb = [0.0] * 16, 0.0
        for i in order[s:s + p["batch"]]:
            *x, y = struct.unpack("16fB", os.pread(fd, REC, i * REC))
            z = sum(a * c for a, c in zip(w, x)) + b
            q = 1 / (1 + math.exp(-z))
            loss -= math.log(q if y else 1 - q)
            gw = [g + (q - y) * c for g, c in zip(gw, x)]
            gb += q - y
        w = [a - p["lr"] * g / p["batch"] for a, g in zip(w, gw)]
        b -= p["lr"] * gb / p["batch"]
    print(f"epoch {epoch + 1}: loss {loss / n:.3f}")
json.dump({"w": w, "b": b}, open("model.json", "w"))
EOF

cat > steps/evaluate.py <<'EOF'
import json, struct
m = json.load(open("model.json"))
right = total = 0
with open("features/val.bin", "rb") as f:
    while rec := f.read(struct.calcsize("16fB")):
        *x, y = struct.unpack("16fB", rec)
        z = sum(a * c for a, c in zip(m["w"], x)) + m["b"]
        right += (z > 0) == bool(y)
        total += 1
json.dump({"accuracy": right / total, "samples": total}, open("metrics.json", "w"))
print(f"accuracy {right / total:.2f} on {total} samples")
EOF

cat > pipeline.yaml <<EOF
# The demo pipeline: \`sluice run\` runs it, \`sluice report\` says how each stage used its data.
stages:
  ingest:
    cmd: $PY steps/ingest.py incoming && $SLUICE cp -r incoming /demo/images && rm -r incoming
    deps: [steps/ingest.py]
    outs: [/demo/images]
  preprocess:
    foreach: [train, val]
    cmd: mkdir -p features && $PY steps/preprocess.py \${item} features/\${item}.bin
    deps: [steps/preprocess.py, /demo/images]
    outs: ['features/\${item}.bin']
    resources: {cpus: 1}
  train:
    cmd: $PY steps/train.py
    deps: [steps/train.py, features/train.bin]
    params: [train.lr, train.epochs, train.batch]
    outs: [model.json]
  evaluate:
    cmd: $PY steps/evaluate.py
    deps: [steps/evaluate.py, model.json, features/val.bin]
    outs: [metrics.json]
EOF

s() { "$SLUICE" "$@"; }

echo "== sluice demo in $DEMO"
echo "-- the pipeline (pipeline.yaml): ingest -> preprocess@train, preprocess@val -> train -> evaluate"
echo "-- first run"
s run
echo
echo "-- what each stage read and wrote (sluice report)"
s report
echo
echo "-- cache figures (sluice cache stats)"
s cache stats
echo
echo "-- second run: nothing changed, nothing runs"
s run
echo
echo "-- a new learning rate: train and evaluate run again, nothing above them"
sed -i 's/lr: 0.5/lr: 1.0/' params.yaml
s run
echo
cat metrics.json
echo
"$PY" - <<'EOF'
import json, sys
m = json.load(open("metrics.json"))
if m["accuracy"] < 0.8:
    sys.exit(f"demo: the model did not learn (accuracy {m['accuracy']:.2f})")
print(f"== the pipeline ran through sluice; the model reached {m['accuracy']:.0%} on val")
EOF
