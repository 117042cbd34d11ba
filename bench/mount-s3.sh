#!/bin/bash
# bench/mount-s3.sh - sluice's FUSE mount against the FUSE peers on one S3 store, in one run:
# `rclone mount --vfs-cache-mode full` and `s3fs -o use_cache`, all three over s3rver behind
# the throttle (tests/tools/throttle.js: a store "in another region"). Each tool mounts with
# its defaults and its own cache; cold rows start from an empty cache and a fresh mount, hot
# rows read again what the tool has cached. Ratios are against the fastest peer. sluice runs
# twice: with its defaults, and with metadata_ttl: -1 (what an immutable training dataset is
# mounted with: the kernel keeps file pages between opens).
#
#   ./bench/mount-s3.sh build/sluice
#   SMALL_RUNS=1 ./bench/mount-s3.sh build/sluice     # one cold run of the small objects
#   BIG=256M SMALL_COUNT=1000 LIST_KEYS=5000 RUNS=1 ./bench/mount-s3.sh build/sluice   # quick
#   ONLY="sluice sluice-1" ./bench/mount-s3.sh build/sluice   # sluice's rows alone (no ratios)
#   LIMIT=600 ./bench/mount-s3.sh build/sluice      # stop a command after 600 s (default 300)
#
# Rows:
#   1. cold sequential read of a BIG object (cat), and hot
#   2. hot random preads of it: 20,000 of 4 KiB, 5,000 of 128 KiB (seeded offsets, one open)
#   3. SMALL_COUNT objects of 100 KiB read by 32 readers (find | xargs -P 32 cat), cold and hot
#   4. ls -lR of LIST_KEYS keys in 100 directories, hot (the second listing)
# All tools use the store's own key pair (S3RVER): s3fs cannot take a secret with spaces.
# Each peer runs with its defaults but one: rclone gets --use-server-modtime (below).
set -euo pipefail

SLUICE=$(realpath "${1:-build/sluice}")
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS="$HERE/../tests/tools"
LATENCY_MS=${LATENCY_MS:-20}
BANDWIDTH=${BANDWIDTH:-200MB}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-3}
SMALL_RUNS=${SMALL_RUNS:-$RUNS}   # the cold small-object row takes minutes a run for the peers
BIG=${BIG:-1G}
SMALL_COUNT=${SMALL_COUNT:-10000}
LIST_KEYS=${LIST_KEYS:-100000}
ONLY=${ONLY:-sluice sluice-1 rclone s3fs}
LIMIT=${LIMIT:-300}   # seconds a command may run before it is stopped and shown as "> LIMIT s"
OVER=1e9

for tool in node $(echo "$ONLY" | grep -ow 'rclone\|s3fs'); do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (./scripts/deps.sh --bench)" >&2; exit 1; }
done
[ -d "$TOOLS/node_modules" ] || { echo "bench: run 'make deps' first (npm packages)" >&2; exit 1; }

. "$HERE/lib.sh"
s3_mounts_workdir mount-s3


echo "seeding (BIG=$BIG, $SMALL_COUNT x 100 KiB, $LIST_KEYS keys)..." >&2
seed_s3rver "$WORK/s3rver/bench" "$BIG" "$SMALL_COUNT" "$LIST_KEYS"
sync
start s3 node --openssl-legacy-provider "$TOOLS/s3front.js" --dir "$WORK/s3rver"; S3_PORT=$PORT
start throttle node "$TOOLS/throttle.js" --upstream "http://127.0.0.1:$S3_PORT" \
    --latency-ms "$LATENCY_MS" --bandwidth "$BANDWIDTH" --concurrency "$CONCURRENCY"
EP="http://127.0.0.1:$PORT"
BIG_BYTES=$(stat -c %s "$WORK/s3rver/bench/big/object.bin._S3rver_object")
BIG_SHA=$(sha256sum < "$WORK/s3rver/bench/big/object.bin._S3rver_object")

# sluice.yaml: the defaults; sluice-1.yaml: an immutable dataset (metadata_ttl -1).
for name in sluice sluice-1; do
    ttl=""; [ "$name" = sluice-1 ] && ttl="    metadata_ttl: -1"
    cat > "$WORK/$name.yaml" <<EOF
cache:
  dir: $WORK/cache-$name
  size: 8GiB
  memory: 1GiB
mounts:
  /s3:
    uri: s3://bench
    endpoint: $EP
$ttl
EOF
done
echo "S3RVER:S3RVER" > "$WORK/s3fs.pass"; chmod 600 "$WORK/s3fs.pass"
export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other RCLONE_CONFIG_B_ENDPOINT=$EP \
    RCLONE_CONFIG_B_ACCESS_KEY_ID=S3RVER RCLONE_CONFIG_B_SECRET_ACCESS_KEY=S3RVER \
    RCLONE_CONFIG_B_REGION=us-east-1 RCLONE_CONFIG_B_FORCE_PATH_STYLE=true

# mount TOOL: a fresh mount with an empty cache; sets ROOT to where the bucket's keys are.
mount_tool() {
    local tool=$1 m=$WORK/mnt-$1
    umount "$m" 2>/dev/null || true
    rm -rf "$WORK/cache-$tool"; mkdir -p "$m"
    case $tool in
        sluice|sluice-1) "$SLUICE" -c "$WORK/$tool.yaml" mount "$m"; export ROOT=$m/s3 ;;
        # --use-server-modtime: without it rclone reads each object's time with a HEAD of its
        # own (its S3 docs say so), and its first `ls -lR` of 100,000 keys took over 20 minutes.
        rclone) rclone mount B:bench "$m" --vfs-cache-mode full --cache-dir "$WORK/cache-rclone" \
                    --use-server-modtime --daemon -q
                export ROOT=$m ;;
        s3fs) s3fs bench "$m" -o passwd_file="$WORK/s3fs.pass" -o url="$EP" -o use_path_request_style \
                -o endpoint=us-east-1 -o use_cache="$WORK/cache-s3fs"; export ROOT=$m ;;
    esac
    for _ in $(seq 100); do [ -e "$ROOT/big" ] && return 0; sleep 0.1; done
    echo "bench: $tool did not mount" >&2; exit 1
}

# timed CMD: seconds CMD took (or the number it printed); $OVER if it ran past $LIMIT seconds
# and was stopped.
timed() {
    local t0 out rc=0; t0=$(now)
    out=$(timeout "$LIMIT" bash -c "$1") || rc=$?
    [ "$rc" = 124 ] && { echo "$OVER"; return; }
    [ "$rc" = 0 ] || { echo "bench: failed: $1" >&2; exit 1; }
    if [[ $out =~ ^[0-9.]+$ ]]; then echo "$out"; else awk -v a="$(now)" -v b="$t0" 'BEGIN {print a - b}'; fi
}
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

SMALL_READ="find \$ROOT/small -type f -print0 | xargs -0 -P 32 -n 50 cat > /dev/null"
declare -A T
for tool in $ONLY; do
    echo "$tool..." >&2
    cold_seq=() cold_small=() hot_seq=() hot_small=() r4k=() r128k=() ls=()
    for _ in $(seq "$RUNS"); do
        mount_tool "$tool"; cold_seq+=("$(timed "cat $ROOT/big/object.bin > /dev/null")")
    done
    for _ in $(seq "$SMALL_RUNS"); do
        mount_tool "$tool"; cold_small+=("$(timed "$SMALL_READ")")
    done
    mount_tool "$tool"
    [ "$(sha256sum < "$ROOT/big/object.bin")" = "$BIG_SHA" ] || { echo "bench: $tool read wrong bytes" >&2; exit 1; }
    eval "$SMALL_READ"
    # The first listing, untimed; a tool that cannot list them all within the limit is not
    # timed listing them again (s3fs asks for each key's attributes with a HEAD of its own).
    list_over=""; timeout "$LIMIT" ls -lR "$ROOT/list" > /dev/null || list_over=1
    for _ in $(seq "$RUNS"); do
        hot_seq+=("$(timed "cat $ROOT/big/object.bin > /dev/null")")
        r4k+=("$(timed "/usr/bin/python3 $HERE/preads.py $ROOT/big/object.bin 4096 20000")")
        r128k+=("$(timed "/usr/bin/python3 $HERE/preads.py $ROOT/big/object.bin 131072 5000")")
        hot_small+=("$(timed "$SMALL_READ")")
        if [ -n "$list_over" ]; then ls+=("$OVER"); else ls+=("$(timed "ls -lR $ROOT/list > /dev/null")"); fi
    done
    T[$tool,cold_seq]=$(med "${cold_seq[@]}"); T[$tool,hot_seq]=$(med "${hot_seq[@]}")
    T[$tool,r4k]=$(med "${r4k[@]}"); T[$tool,r128k]=$(med "${r128k[@]}")
    T[$tool,cold_small]=$(med "${cold_small[@]}"); T[$tool,hot_small]=$(med "${hot_small[@]}")
    T[$tool,ls]=$(med "${ls[@]}")
    echo "  cold seq ${cold_seq[*]} | cold small ${cold_small[*]} | hot seq ${hot_seq[*]} | r4k ${r4k[*]} | r128k ${r128k[*]} | hot small ${hot_small[*]} | ls ${ls[*]}" >&2
    umount "$WORK/mnt-$tool"
done

echo "Throttle: $LATENCY_MS ms per request, $BANDWIDTH/s, $CONCURRENCY at once; median of $RUNS runs ($SMALL_RUNS for the cold small objects); a command stopped after $LIMIT s."
echo
echo "| workload | sluice | sluice, ttl -1 | rclone mount | s3fs | sluice (defaults, ttl -1) over the fastest peer |"
echo "|---|---|---|---|---|---|"
for row in "cold_seq|cold sequential read, $BIG" "hot_seq|hot sequential read, $BIG" \
           "r4k|hot: 20,000 random 4 KiB preads" "r128k|hot: 5,000 random 128 KiB preads" \
           "cold_small|cold: $SMALL_COUNT x 100 KiB, 32 readers" "hot_small|hot: $SMALL_COUNT x 100 KiB, 32 readers" \
           "ls|hot: ls -lR of $LIST_KEYS keys"; do
    k=${row%%|*}; name=${row#*|}
    awk -v n="$name" -v s="${T[sluice,$k]:-}" -v i="${T[sluice-1,$k]:-}" -v r="${T[rclone,$k]:-}" \
        -v f="${T[s3fs,$k]:-}" -v limit="$LIMIT" -v over="$OVER" '
            function t(x) { return x == "" ? "-" : x + 0 >= over + 0 ? "> " limit " s (stopped)" : sprintf("%.2f s", x) }
            function x(b, y) { return b + 0 >= over + 0 ? sprintf("> %.0fx", limit / y) : sprintf("%.2fx", b / y) }
            BEGIN { best = r == "" ? f : f == "" || r + 0 < f + 0 ? r : f
            ratio = best == "" || s == "" || i == "" ? "-" : sprintf("**%s, %s**", x(best, s), x(best, i))
            printf "| %s | %s | %s | %s | %s | %s |\n", n, t(s), t(i), t(r), t(f), ratio }'
done
[ -n "${T[sluice,cold_seq]:-}" ] &&
    awk -v b="$BIG_BYTES" -v s="${T[sluice,cold_seq]}" 'BEGIN { printf "\nsluice cold sequential: %.0f MB/s\n", b / s / 1e6 }'
