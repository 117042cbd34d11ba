#!/bin/bash
# bench/mount.sh - the FUSE mount against the limits of this machine, on the same data in the
# same run: the page cache (the files read directly: the physical limit) and libfuse's own
# passthrough_ll example (a FUSE file system that only passes calls on to the kernel: the FUSE
# ceiling). All rows are hot: the data is in the page cache, and in sluice's cache.
#
#   ./bench/mount.sh build/sluice
#   BIG=256M SMALL_COUNT=1000 LIST_KEYS=10000 RUNS=1 ./bench/mount.sh build/sluice   # quick
#   MEMORY=128MiB ./bench/mount.sh build/sluice   # RAM an eighth of the file: the cache disk
#
# sluice runs twice: with metadata_ttl: -1 (an immutable dataset: the kernel keeps file pages
# between opens, so a hot read is a page-cache read behind one FUSE open), and with a TTL
# (every open reads through sluice's own cache: what a mutable dataset gets).
# Rows:
#   1. sequential read of a BIG file (cat)
#   2. 20,000 random 4 KiB and 5,000 random 128 KiB preads of it (seeded offsets, one open)
#   3. cat of SMALL_COUNT files of 100 KiB
#   4. ls -lR of LIST_KEYS entries in 100 directories
set -euo pipefail

SLUICE=$(realpath "${1:-build/sluice}")
HERE=$(cd "$(dirname "$0")" && pwd)
BIG=${BIG:-1G}
SMALL_COUNT=${SMALL_COUNT:-10000}
LIST_KEYS=${LIST_KEYS:-100000}
RUNS=${RUNS:-3}
MEMORY=${MEMORY:-1GiB}   # sluice's cache.memory
EXAMPLES=/usr/share/doc/libfuse3-dev/examples

[ -f "$EXAMPLES/passthrough_ll.c" ] || { echo "bench: libfuse3-dev's examples are missing (make deps)" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/sluice-bench-mount.XXXXXX")
MOUNTS=()
PIDS=()
. "$HERE/lib.sh"
cleanup() {
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    # Never into a mount point still mounted: rm would delete through it.
    grep -q " $WORK/mnt-" /proc/self/mounts && { echo "bench: mounts left in $WORK" >&2; return; }
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building passthrough_ll, seeding (BIG=$BIG, $SMALL_COUNT x 100 KiB, $LIST_KEYS entries)..." >&2
gcc -O2 -o "$WORK/passthrough_ll" "$EXAMPLES/passthrough_ll.c" $(pkg-config fuse3 --cflags --libs)
DATA=$WORK/data
mkdir -p "$DATA/small" "$DATA/list"
/usr/bin/python3 - "$DATA" "$BIG" "$SMALL_COUNT" "$LIST_KEYS" <<'EOF'
import os, sys
root, big, small_count, list_keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
big = int(big[:-1]) * units[big[-1]] if big[-1] in units else int(big)
with open(os.path.join(root, "big.bin"), "wb") as f:
    for i in range(0, big, 1 << 24):
        f.write(os.urandom(min(1 << 24, big - i)))
for i in range(small_count):
    d = os.path.join(root, "small", f"{i // 1000:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"img{i:06d}.jpg"), "wb") as f:
        f.write(os.urandom(100 << 10))
for i in range(list_keys):
    d = os.path.join(root, "list", f"d{i % 100:03d}")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"k{i:07d}"), "w").close()
EOF
sync


P_MNT=$WORK/mnt-passthrough S_MNT=$WORK/mnt-sluice-immutable T_MNT=$WORK/mnt-sluice-ttl
mkdir -p "$P_MNT" "$S_MNT" "$T_MNT"
MOUNTS=("$P_MNT" "$S_MNT" "$T_MNT")
# passthrough_ll holds a descriptor per inode it has looked up: room for the listing row.
(ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$WORK/passthrough_ll" -o source="$DATA" "$P_MNT")
for ttl in -1 60s; do
    cat > "$WORK/sluice$ttl.yaml" <<EOF
cache:
  dir: $WORK/cache
  size: 8GiB
  memory: $MEMORY
mounts:
  /data:
    uri: file://$DATA
    metadata_ttl: $ttl
EOF
done
"$SLUICE" -c "$WORK/sluice-1.yaml" mount "$S_MNT"
"$SLUICE" -c "$WORK/sluice60s.yaml" mount "$T_MNT"

# median CMD: runs CMD RUNS times after one untimed pass (the hot caches); prints the median
# seconds. A CMD that prints a number is timed by that number instead.
median() {
    local cmd=$1 times=() out t0
    eval "$cmd" > /dev/null || { echo "bench: failed: $cmd" >&2; exit 1; }
    for _ in $(seq "$RUNS"); do
        t0=$(now)
        out=$(eval "$cmd") || { echo "bench: failed: $cmd" >&2; exit 1; }
        if [[ $out =~ ^[0-9.]+$ ]]; then times+=("$out"); else times+=("$(awk -v a="$(now)" -v b="$t0" 'BEGIN {print a - b}')"); fi
    done
    printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

declare -A T
BIG_BYTES=$(stat -c %s "$DATA/big.bin")
for mode in pagecache passthrough immutable ttl; do
    case $mode in
        pagecache) root=$DATA ;;
        passthrough) root=$P_MNT ;;
        immutable) root=$S_MNT/data ;;
        ttl) root=$T_MNT/data ;;
    esac
    echo "$mode..." >&2
    T[$mode,seq]=$(median "cat $root/big.bin > /dev/null")
    T[$mode,r4k]=$(median "/usr/bin/python3 $HERE/preads.py $root/big.bin 4096 20000")
    T[$mode,r128k]=$(median "/usr/bin/python3 $HERE/preads.py $root/big.bin 131072 5000")
    T[$mode,small]=$(median "find $root/small -type f -print0 | xargs -0 cat > /dev/null")
    if [ $mode = passthrough ] && [ "$LIST_KEYS" -ge "$(ulimit -n)" ]; then
        T[$mode,ls]=nan # it keeps a descriptor per inode: more entries than it may open
    else
        T[$mode,ls]=$(median "ls -lR $root/list > /dev/null")
    fi
    echo "  ${T[$mode,seq]} ${T[$mode,r4k]} ${T[$mode,r128k]} ${T[$mode,small]} ${T[$mode,ls]}" >&2
done

# The bytes: sluice's mounts serve exactly the file.
want=$(sha256sum < "$DATA/big.bin")
for m in "$S_MNT/data" "$T_MNT/data"; do
    [ "$(sha256sum < "$m/big.bin")" = "$want" ] || { echo "bench: $m served wrong bytes" >&2; exit 1; }
done

{
echo "Hot, median of $RUNS runs, sluice with cache.memory $MEMORY; ratio = the limit's time / sluice's (1.00: as fast as the limit)."
echo
echo "| workload | page cache | passthrough_ll | sluice, metadata_ttl -1 | sluice, metadata_ttl 60s | sluice (-1, 60s) vs passthrough_ll |"
echo "|---|---|---|---|---|---|"
for row in "seq|sequential read, $BIG (cat)" "r4k|20,000 random 4 KiB preads" "r128k|5,000 random 128 KiB preads" "small|cat of $SMALL_COUNT x 100 KiB" "ls|ls -lR of $LIST_KEYS entries"; do
    k=${row%%|*}; name=${row#*|}
    awk -v lim="$(ulimit -n)" -v n="$name" -v pc="${T[pagecache,$k]}" -v pt="${T[passthrough,$k]}" -v im="${T[immutable,$k]}" -v tt="${T[ttl,$k]}" \
        'BEGIN { if (pt == "nan") printf "| %s | %.2f s | cannot (a descriptor per inode; limit %d) | %.2f s | %.2f s | %.2fx, %.2fx the page cache |\n", n, pc, lim, im, tt, pc / im, pc / tt;
                 else printf "| %s | %.2f s | %.2f s | %.2f s | %.2f s | **%.2fx, %.2fx** |\n", n, pc, pt, im, tt, pt / im, pt / tt }'
done
awk -v b="$BIG_BYTES" -v pc="${T[pagecache,seq]}" -v im="${T[immutable,seq]}" -v tt="${T[ttl,seq]}" \
    'BEGIN { printf "\nSequential: page cache %.0f MB/s, sluice %.0f MB/s (-1) and %.0f MB/s (60s).\n", b / pc / 1e6, b / im / 1e6, b / tt / 1e6 }'
}
