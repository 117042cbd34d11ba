#!/bin/bash
# bench/remote.sh - sluice against the best S3 clients, reading from a store "in another region":
# s3rver (tests/tools/s3front.js) behind the throttle (tests/tools/throttle.js) that adds
# per-request latency and caps bandwidth and concurrency. Every tool goes through the same
# throttle in the same run; figures are ratios against the fastest peer and the throttle's
# bandwidth, never bare times.
#
#   ./bench/remote.sh build/sluice
#   LATENCY_MS=20 BANDWIDTH=200MB CONCURRENCY=64 RUNS=3 ./bench/remote.sh build/sluice
#   BIG=256M SMALL_COUNT=1000 LIST_KEYS=20000 ./bench/remote.sh build/sluice   # a quick run
#   CACHE_DIR=/dev/shm/sluice-bench ROWS=1 ./bench/remote.sh build/sluice   # cache on tmpfs, row 1
# sluice is the only tool here that keeps what it reads: its cold rows include writing every
# byte into its cache (CACHE_DIR, default in the bench's temp dir, so on the disk of /tmp).
#
# Rows:
#   1. cold sequential read of one BIG object: sluice cat | aws s3 cp ... - | rclone cat
#   2. cold read of SMALL_COUNT objects of 100 KiB: sluice load -r | aws s3 sync | rclone copy
#   3. listing LIST_KEYS keys (100 directories): sluice ls -R, first and second time |
#      aws s3 ls --recursive | rclone lsf -R
# Datasets are written straight into s3rver's on-disk format (what s3rver itself writes for a
# PutObject: KEY._S3rver_object, its .md5 and metadata), which takes seconds where uploading
# 100,000 keys through the front would take minutes; the 1 GiB object is checked by sha256.
set -euo pipefail

SLUICE=$(realpath "${1:-build/sluice}")
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS="$HERE/../tests/tools"
LATENCY_MS=${LATENCY_MS:-20}
BANDWIDTH=${BANDWIDTH:-200MB}
CONCURRENCY=${CONCURRENCY:-64}
RUNS=${RUNS:-3}
BIG=${BIG:-1G}
SMALL_COUNT=${SMALL_COUNT:-5000}
LIST_KEYS=${LIST_KEYS:-100000}
ROWS=${ROWS:-123}
AWS=/usr/bin/aws

for tool in node "$AWS" rclone; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (make deps; rclone: ./scripts/deps.sh --bench)" >&2; exit 1; }
done
[ -d "$TOOLS/node_modules" ] || { echo "bench: run 'make deps' first (npm packages)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/sluice-bench-remote.XXXXXX")
PIDS=()
. "$HERE/lib.sh"
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK" "${CACHE_DIR:-}"; }
trap cleanup EXIT

# The store is plain http on loopback; a CA bundle setting only trips rclone 1.60's AWS SDK.
unset AWS_CA_BUNDLE AWS_PROFILE AWS_ENDPOINT_URL
export AWS_ACCESS_KEY_ID=sluice-test-key AWS_SECRET_ACCESS_KEY='secret with spaces/+=%&?~'
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_PAGER=
export HOME="$WORK/home"; mkdir -p "$HOME"

echo "seeding datasets (BIG=$BIG, $SMALL_COUNT x 100 KiB, $LIST_KEYS keys)..." >&2
seed_s3rver "$WORK/s3rver/bench" "$BIG" "$SMALL_COUNT" "$LIST_KEYS"

sync # the datasets are on disk before anything is timed
start s3 node --openssl-legacy-provider "$TOOLS/s3front.js" --dir "$WORK/s3rver"; S3_PORT=$PORT
start throttle node "$TOOLS/throttle.js" --upstream "http://127.0.0.1:$S3_PORT" \
    --latency-ms "$LATENCY_MS" --bandwidth "$BANDWIDTH" --concurrency "$CONCURRENCY"
EP="http://127.0.0.1:$PORT"
BIG_SHA=$($AWS --endpoint-url "http://127.0.0.1:$S3_PORT" s3 cp s3://bench/big/object.bin - | sha256sum | cut -c1-64)

CACHE=${CACHE_DIR:-$WORK/cache}
cat > "$WORK/sluice.yaml" <<EOF
cache:
  dir: $CACHE
  size: 8GiB
  memory: 1GiB
mounts:
  /s3:
    uri: s3://bench
    endpoint: $EP
EOF
export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other RCLONE_CONFIG_B_ENDPOINT=$EP \
    RCLONE_CONFIG_B_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_B_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
    RCLONE_CONFIG_B_REGION=us-east-1 RCLONE_CONFIG_B_FORCE_PATH_STYLE=true
S="$SLUICE -c $WORK/sluice.yaml -q"

# median NAME SETUP CMD: runs SETUP then times CMD, RUNS times; prints the median seconds.
median() {
    local setup=$2 cmd=$3 times=()
    for _ in $(seq "$RUNS"); do
        eval "$setup"
        sync # every run starts on a quiet disk: no write-back of the last one's bytes
        local t0; t0=$(now)
        eval "$cmd" || { echo "bench: failed: $cmd" >&2; exit 1; }
        times+=("$(awk -v a="$(now)" -v b="$t0" 'BEGIN {print a - b}')")
    done
    echo "  $1: ${times[*]}" >&2
    printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
BW=$(node -e "
const s='$BANDWIDTH'; const m=/^([\d.]+)\s*([KMG]i?B?|B)?$/i.exec(s); const u=(m[2]||'B').toUpperCase();
console.log(Number(m[1])*({B:1,K:1e3,KB:1e3,KIB:1024,M:1e6,MB:1e6,MIB:1<<20,G:1e9,GB:1e9,GIB:1<<30}[u]))")
BIG_BYTES=$(stat -c %s "$WORK/s3rver/bench/big/object.bin._S3rver_object")

# Every tool meets the same warm store: one untimed pass over each dataset, straight to the
# store, so the first tool timed does not pay for the server's cold file-system cache.
DIRECT="$AWS --endpoint-url http://127.0.0.1:$S3_PORT"
$DIRECT s3 sync s3://bench/small "$WORK/warm" --only-show-errors && rm -rf "$WORK/warm"
$DIRECT s3 ls --recursive s3://bench/list/ > /dev/null

t_sluice=0 t_aws=0 t_rclone=0 s_sluice=0 s_aws=0 s_rclone=0 l_first=0 l_second=0 l_aws=0 l_rclone=0
if [[ $ROWS == *1* ]]; then
echo "1/3 cold sequential read of $BIG..." >&2
t_sluice=$(median sluice "rm -rf $CACHE" "$S cat /s3/big/object.bin > /dev/null")
# The bytes: a hot read serves exactly what the cold read cached.
[ "$($S cat /s3/big/object.bin | sha256sum | cut -c1-64)" = "$BIG_SHA" ] || { echo "bench: sluice read wrong bytes" >&2; exit 1; }
t_aws=$(median aws ":" "$AWS --endpoint-url $EP s3 cp s3://bench/big/object.bin - > /dev/null")
t_rclone=$(median rclone ":" "rclone cat B:bench/big/object.bin > /dev/null")
fi

if [[ $ROWS == *2* ]]; then
echo "2/3 cold read of $SMALL_COUNT x 100 KiB..." >&2
s_sluice=$(median sluice "rm -rf $CACHE" "$S load -r /s3/small")
s_aws=$(median aws "rm -rf $WORK/dl" "$AWS --endpoint-url $EP s3 sync s3://bench/small $WORK/dl --only-show-errors")
s_rclone=$(median rclone "rm -rf $WORK/dl" "rclone copy B:bench/small $WORK/dl")
fi

if [[ $ROWS == *3* ]]; then
echo "3/3 listing $LIST_KEYS keys..." >&2
l_first=$(median sluice "rm -rf $CACHE" "$S ls -R /s3/list > $WORK/ls.txt")
[ "$(grep -c '^k' "$WORK/ls.txt")" = "$LIST_KEYS" ] || { echo "bench: sluice ls -R listed $(grep -c '^k' "$WORK/ls.txt") keys" >&2; exit 1; }
l_second=$(median sluice ":" "$S ls -R /s3/list > /dev/null")
l_aws=$(median aws ":" "$AWS --endpoint-url $EP s3 ls --recursive s3://bench/list/ > $WORK/aws-ls.txt")
[ "$(wc -l < "$WORK/aws-ls.txt")" = "$LIST_KEYS" ] || { echo "bench: aws listed $(wc -l < "$WORK/aws-ls.txt")" >&2; exit 1; }
l_rclone=$(median rclone ":" "rclone lsf -R --files-only B:bench/list > /dev/null")
fi

/usr/bin/python3 - <<EOF
def row(name, ours, peers, unit_bytes=None):
    if not ours:
        return  # not run (ROWS)
    best = min(peers.values())
    cells = [f"sluice {ours:.2f} s"] + [f"{k} {v:.2f} s" for k, v in peers.items()]
    print(f"| {name} | " + " | ".join(cells) + f" | **{best / ours:.2f}x** |")
print(f"Throttle: {int('$LATENCY_MS')} ms per request, $BANDWIDTH/s, $CONCURRENCY requests at once; median of $RUNS runs.")
print()
print("| workload | sluice | aws | rclone | sluice's speed over the fastest peer |")
print("|---|---|---|---|---|")
row("cold read, one $BIG object", $t_sluice, {"aws s3 cp": $t_aws, "rclone cat": $t_rclone})
row("cold read, $SMALL_COUNT x 100 KiB", $s_sluice, {"aws s3 sync": $s_aws, "rclone copy": $s_rclone})
row("ls -R of $LIST_KEYS keys, first", $l_first, {"aws s3 ls --recursive": $l_aws, "rclone lsf -R": $l_rclone})
row("ls -R of $LIST_KEYS keys, second", $l_second, {"aws s3 ls --recursive": $l_aws, "rclone lsf -R": $l_rclone})
print()
if $t_sluice:
    bw = $BIG_BYTES / $t_sluice
    print(f"sluice's cold read of the $BIG object: {bw / 1e6:.0f} MB/s = **{bw / $BW:.2f}** of the throttle's bandwidth (cache in $CACHE)")
EOF
