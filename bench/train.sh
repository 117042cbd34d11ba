#!/bin/bash
# bench/train.sh - `sluice bench train` (simulated accelerators, MLPerf Storage style) over a
# store in another region: s3rver behind the throttle (tests/tools/throttle.js), 150 MB/s and
# 20 ms a request by default. For each workload and cache fraction, in one run:
#
#   direct       sluice's S3 client reading the store with no cache: no disk tier, 64 MiB of
#                RAM (what a loader that reads the store itself gets)
#   mount        `sluice mount`, policy epoch, cache.size = fraction x dataset
#   mount+order  the same, each epoch's order written to MOUNT/.sluice/order first; with
#                ORDER_AHEAD=1 an epoch ahead: the next epoch's order is appended (>>) when an
#                epoch starts, and the window runs on into it (default 0: each at its start)
#   mount-lru    the mount with policy lru (at 50% only: the contrast to epoch)
#   rclone       `rclone mount --vfs-cache-mode full --vfs-cache-max-size fraction x dataset`
#                (in bytes, "B": rclone reads a bare number as KiB)
#
# The kernel's page cache is dropped before every epoch (--between-epochs): the datasets are
# scaled to this machine, smaller than its RAM, and must read as a dataset larger than RAM
# would (MLPerf Storage asks for 5x RAM). Store bytes are the throttle's count of what it sent.
#
#   ./bench/train.sh build/sluice                                  # every workload
#   WORKLOADS=resnet-mini FRACTIONS="0.5" ./bench/train.sh build/sluice
#   SCALE_unet3d=0.1 EPOCHS=2 ./bench/train.sh build/sluice         # smaller
#
# Prints a table per workload and writes every epoch's JSON to $OUT (bench/out/train.jsonl).
set -euo pipefail

SLUICE=$(realpath "${1:-build/sluice}")
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS="$HERE/../tests/tools"
LATENCY_MS=${LATENCY_MS:-20}
BANDWIDTH=${BANDWIDTH:-150MB}
CONCURRENCY=${CONCURRENCY:-64}
ORDER_AHEAD=${ORDER_AHEAD:-0}
EPOCHS=${EPOCHS:-3}
WORKLOADS=${WORKLOADS:-unet3d-mini resnet-mini cosmoflow-mini}
FRACTIONS=${FRACTIONS:-0.25 0.5 1}
MODES=${MODES:-direct mount mount+order mount-lru rclone}
# The workloads scaled to a 2-core machine with one virtual disk: about 1 GB each.
SCALE_unet3d=${SCALE_unet3d:-0.2}       # 32 files of 32 MiB
SCALE_resnet=${SCALE_resnet:-0.2}       # 9,600 files of 114,660 B
SCALE_cosmoflow=${SCALE_cosmoflow:-0.02} # 400 files of 2.8 MB
OUT=${OUT:-$HERE/out/train.jsonl}

for tool in node rclone; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (./scripts/deps.sh --bench)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench: run as root (it drops the page cache between epochs)" >&2; exit 1; }
[ -d "$TOOLS/node_modules" ] || { echo "bench: run 'make deps' first (npm packages)" >&2; exit 1; }

. "$HERE/lib.sh"
s3_mounts_workdir train
mkdir -p "$(dirname "$OUT")"
: > "$OUT"


# The datasets, made by sluice itself and moved into s3rver's on-disk format (bench/lib.sh).
echo "making the datasets..." >&2
mkdir -p "$WORK/s3rver/bench"
declare -A BYTES
for w in $WORKLOADS; do
    short=${w%-mini}; scale_var=SCALE_$short
    "$SLUICE" -q bench train --workload "$w" --make-dataset "$WORK/gen/$w" --scale "${!scale_var}"
    BYTES[$w]=$(du -sb --apparent-size "$WORK/gen/$w" | cut -f1)
    s3rver_adopt "$WORK/gen/$w" "$WORK/s3rver/bench/$w"
done
sync
start s3 node --openssl-legacy-provider "$TOOLS/s3front.js" --dir "$WORK/s3rver"; S3_PORT=$PORT
start throttle node "$TOOLS/throttle.js" --upstream "http://127.0.0.1:$S3_PORT" \
    --latency-ms "$LATENCY_MS" --bandwidth "$BANDWIDTH" --concurrency "$CONCURRENCY"
EP="http://127.0.0.1:$PORT"
STORE_BYTES="curl -s $EP/__throttle__/stats | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[\"bytes_down\"])'"
DROP="sync; echo 3 > /proc/sys/vm/drop_caches"

export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other RCLONE_CONFIG_B_ENDPOINT=$EP \
    RCLONE_CONFIG_B_ACCESS_KEY_ID=S3RVER RCLONE_CONFIG_B_SECRET_ACCESS_KEY=S3RVER \
    RCLONE_CONFIG_B_REGION=us-east-1 RCLONE_CONFIG_B_FORCE_PATH_STYLE=true

# config NAME SIZE POLICY MEMORY: a sluice config with a fresh cache.
config() {
    rm -rf "$WORK/cache-$1"
    cat > "$WORK/$1.yaml" <<EOF
cache:
  dir: $WORK/cache-$1
  size: $2
  memory: $4
mounts:
  /s3:
    uri: s3://bench
    endpoint: $EP
    concurrency: 64
    metadata_ttl: -1
    policy: $3
EOF
}

# run WORKLOAD MODE FRACTION BYTES: one run of EPOCHS epochs, its JSON lines appended to $OUT.
run() {
    local w=$1 mode=$2 frac=$3 bytes=$4 size m=$WORK/mnt-$2 data args=() extra=()
    size=$(awk -v f="$frac" -v b="$bytes" 'BEGIN { printf "%.0f", f * b }')
    mkdir -p "$m"
    case $mode in
        direct)
            config direct 1GiB epoch 64MiB
            rm -rf "$WORK/cache-direct"; : > "$WORK/cache-direct" # a file: no disk tier
            args=(-c "$WORK/direct.yaml"); data=/s3/$w ;;
        mount|mount+order|mount-lru)
            local pol=epoch; [ "$mode" = mount-lru ] && pol=lru
            config "$mode" "$size" "$pol" 512MiB
            "$SLUICE" -c "$WORK/$mode.yaml" mount "$m"
            args=(-c "$WORK/$mode.yaml"); data=$m/s3/$w
            [ "$mode" = mount+order ] &&
                extra+=(--order-file "$m/.sluice/order" --order-ahead "$ORDER_AHEAD") ;;
        rclone)
            rm -rf "$WORK/cache-rclone"
            # Its size limit is enforced when it polls the cache (every minute by default):
            # every second here, or a short run never sees it. The size in bytes says so ("B"):
            # a bare number is KiB to rclone, a limit 1,024 times the one meant.
            # --use-server-modtime: the object's time from the listing, not a HEAD of each.
            rclone mount B:bench "$m" --vfs-cache-mode full --vfs-cache-max-size "${size}B" \
                --vfs-cache-poll-interval 1s --use-server-modtime \
                --cache-dir "$WORK/cache-rclone" --daemon -q
            for _ in $(seq 100); do [ -e "$m/$w" ] && break; sleep 0.1; done
            data=$m/$w ;;
    esac
    "$SLUICE" "${args[@]}" -q bench train --workload "$w" --data "$data" --epochs "$EPOCHS" \
        --mode "$mode" --cache-fraction "$frac" --store-bytes-cmd "$STORE_BYTES" \
        --between-epochs "$DROP" --json "${extra[@]}" 2> "$WORK/err" | tee -a "$OUT" > "$WORK/last.jsonl" ||
        { echo "bench: $w $mode $frac failed: $(cat "$WORK/err")" >&2; exit 1; }
    awk -v w="$w" -v m="$mode" -v f="$frac" '{ printf "  %s %s %s: %s\n", w, m, f, $0 }' "$WORK/last.jsonl" >&2
    # What the tool's cache held at the end, against the size it was given.
    local held
    # du fails when the tool evicts a file while du walks its cache: not a failure of the run.
    held=$(du -s -B1 "$WORK/cache-$mode" 2>/dev/null | cut -f1) || true
    echo "  $w $mode $frac: its cache held ${held:-0} bytes at the end (limit $size)" >&2
    grep -q " $m " /proc/mounts && umount "$m"
    return 0
}

for w in $WORKLOADS; do
    bytes=${BYTES[$w]}
    for mode in $MODES; do
        for frac in $FRACTIONS; do
            [ "$mode" = direct ] && [ "$frac" != "$(echo "$FRACTIONS" | awk '{print $1}')" ] && continue
            [ "$mode" = mount-lru ] && [ "$frac" != 0.5 ] && continue
            run "$w" "$mode" "$([ "$mode" = direct ] && echo 0 || echo "$frac")" "$bytes"
        done
    done
done

echo "Throttle: $LATENCY_MS ms a request, $BANDWIDTH/s, $CONCURRENCY at once; $EPOCHS epochs, page cache dropped before each."
echo
/usr/bin/python3 "$HERE/train_table.py" "$OUT" "$BANDWIDTH"
