# bench/lib.sh - what the benchmark scripts share. Source it after setting WORK (the run's temp
# folder) and PIDS=() (servers to stop on exit), or call s3_mounts_workdir.

now() { date +%s.%N; }

# start NAME ARGS...: runs a server that prints "PORT n" once it listens; sets PORT.
start() {
    local name=$1; shift
    "$@" > "$WORK/$name.port" 2> "$WORK/$name.err" &
    PIDS+=($!)
    for _ in $(seq 100); do
        PORT=$(awk '/^PORT/{print $2}' "$WORK/$name.port" 2>/dev/null)
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    echo "bench: $name did not start: $(cat "$WORK/$name.err")" >&2; exit 1
}

# seed_s3rver DIR BIG SMALL_COUNT LIST_KEYS: the benchmarks' bucket, written straight into
# s3rver's on-disk format (what s3rver itself writes for a PutObject: KEY._S3rver_object, its
# .md5 and metadata), which takes seconds where uploading 100,000 keys would take minutes:
# big/object.bin (BIG bytes), small/NNN/imgNNNNNN.jpg (SMALL_COUNT x 100 KiB), and
# list/dNNN/kNNNNNNN (LIST_KEYS empty keys in 100 directories).
seed_s3rver() {
    mkdir -p "$1"
    /usr/bin/python3 - "$@" <<'PY'
import hashlib, json, os, sys
root, big, small_count, list_keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
big = int(big[:-1]) * units[big[-1]] if big[-1] in units else int(big)
def put(key, chunks):
    path = os.path.join(root, key + "._S3rver_object")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    md5 = hashlib.md5()
    with open(path, "wb") as f:
        for c in chunks:
            md5.update(c); f.write(c)
    with open(path + ".md5", "w") as f: f.write(md5.hexdigest())
    with open(os.path.join(root, key + "._S3rver_metadata.json"), "w") as f:
        json.dump({"content-type": "application/octet-stream"}, f)
put("big/object.bin", (os.urandom(min(1 << 22, big - i)) for i in range(0, big, 1 << 22)))
for i in range(small_count):
    put(f"small/{i // 1000:03d}/img{i:06d}.jpg", [os.urandom(100 << 10)])
for i in range(list_keys):
    put(f"list/d{i % 100:03d}/k{i:07d}", [b""])
PY
}

# s3rver_adopt SRC DIR: moves the files below SRC into s3rver's on-disk format under DIR (a
# bucket's folder), keys relative to SRC.
s3rver_adopt() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import hashlib, json, os, sys
src, dst = sys.argv[1], sys.argv[2]
for d, _, files in os.walk(src):
    for name in files:
        rel = os.path.relpath(os.path.join(d, name), src)
        path = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        md5 = hashlib.md5()
        with open(os.path.join(d, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                md5.update(chunk)
        os.rename(os.path.join(d, name), path + "._S3rver_object")
        with open(path + "._S3rver_object.md5", "w") as f: f.write(md5.hexdigest())
        with open(path + "._S3rver_metadata.json", "w") as f:
            json.dump({"content-type": "application/octet-stream"}, f)
PY
}

# s3_mounts_workdir NAME: for a benchmark of mounts over the test S3 store: WORK, a temp folder
# removed at exit once the mounts in it (WORK/mnt-*) are gone and the servers started with
# `start` are stopped; HOME inside it, and the store's own key pair in the environment.
s3_mounts_workdir() {
    WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/sluice-bench-$1.XXXXXX")
    PIDS=()
    trap s3_mounts_cleanup EXIT
    unset AWS_CA_BUNDLE AWS_PROFILE AWS_ENDPOINT_URL
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
    export AWS_EC2_METADATA_DISABLED=true HOME="$WORK/home"
    mkdir -p "$HOME"
}
s3_mounts_cleanup() {
    for m in "$WORK"/mnt-*; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # Never into a mount point still mounted: rm would delete through it.
    grep -q " $WORK/mnt-" /proc/self/mounts && { echo "bench: mounts left in $WORK" >&2; return; }
    rm -rf "$WORK"
}
