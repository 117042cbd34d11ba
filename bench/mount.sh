#!/bin/bash
# bench/mount.sh - the FUSE mount against the limits of this machine, on the same data in the
# same run: the page cache (the files read directly: the physical limit) and libfuse's own
# passthrough_ll example (a FUSE file system that only passes calls on to the kernel: the FUSE
# ceiling), run twice: as it comes (every open drops the kernel's pages of the file, so every
# read is a FUSE request) and with -o cache=always (the kernel keeps them between opens). All rows are hot: the data is in the page cache, and in sluice's cache.
#
#   ./bench/mount.sh build/sluice
#   BIG=256M SMALL_COUNT=1000 LIST_KEYS=10000 RUNS=1 ./bench/mount.sh build/sluice   # quick
#   MEMORY=128MiB ./bench/mount.sh build/sluice   # RAM an eighth of the file: the cache disk
#
# sluice mounts the directory with a 60 s metadata_ttl and is timed twice: as it runs (the
# kernel keeps the pages of a file's version between opens, so a hot read is a page-cache read
# behind one FUSE open), and with the kernel's pages of the files dropped before each run
# (posix_fadvise DONTNEED, bench/dropcache.py), so that sluice answers every read itself from
# its own cache: what a job gets whose data the kernel has let go. A second sluice mount of
# the same files with metadata_ttl -1 (an immutable dataset: day-long kernel timeouts,
# keep_cache, cached listings) is the "immutable" column, and a third one mounted `-o ro` as
# well (the "readonly" column: the kernel opens files itself, no OPEN/FLUSH/RELEASE requests):
# the issue's re-read goal is these against the page cache.
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


P_MNT=$WORK/mnt-passthrough K_MNT=$WORK/mnt-passthrough-kept S_MNT=$WORK/mnt-sluice
I_MNT=$WORK/mnt-sluice-immutable
R_MNT=$WORK/mnt-sluice-readonly
mkdir -p "$P_MNT" "$K_MNT" "$S_MNT" "$I_MNT" "$R_MNT"
MOUNTS=("$P_MNT" "$K_MNT" "$S_MNT" "$I_MNT" "$R_MNT")
# passthrough_ll holds a descriptor per inode it has looked up: room for the listing row.
(ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$WORK/passthrough_ll" -o source="$DATA" "$P_MNT")
(ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$WORK/passthrough_ll" -o source="$DATA",cache=always "$K_MNT")
cat > "$WORK/sluice.yaml" <<EOF
cache:
  dir: $WORK/cache
  size: 8GiB
  memory: $MEMORY
mounts:
  /data:
    uri: file://$DATA
    metadata_ttl: 60s
EOF
"$SLUICE" -c "$WORK/sluice.yaml" mount "$S_MNT"
sed -e 's/metadata_ttl: 60s/metadata_ttl: -1/' -e "s|$WORK/cache|$WORK/cache-immutable|" \
    "$WORK/sluice.yaml" > "$WORK/sluice-immutable.yaml"
"$SLUICE" -c "$WORK/sluice-immutable.yaml" mount "$I_MNT"
sed -e "s|$WORK/cache-immutable|$WORK/cache-readonly|" "$WORK/sluice-immutable.yaml" > "$WORK/sluice-readonly.yaml"
"$SLUICE" -c "$WORK/sluice-readonly.yaml" mount -o ro "$R_MNT"

MODES="pagecache passthrough passthrough_kept kept dropped immutable readonly"
# root MODE: where MODE reads the files; prep MODE: what runs untimed before each of its runs.
root() {
    case $1 in
        pagecache) echo "$DATA" ;;
        passthrough) echo "$P_MNT" ;;
        passthrough_kept) echo "$K_MNT" ;;
        kept|dropped) echo "$S_MNT/data" ;;
        immutable) echo "$I_MNT/data" ;;
        readonly) echo "$R_MNT/data" ;;
    esac
}
prep() { [ "$1" != dropped ] || /usr/bin/python3 "$HERE/dropcache.py" "$(root "$1")"; }

# row KEY CMD: times CMD (which reads under $root) for every mode: one untimed pass each (the
# hot caches), then RUNS rounds that time each mode in turn, so that a drift of the machine
# shifts every mode alike; sets T[MODE,KEY] to the median seconds. A CMD that prints a number
# is timed by that number instead.
declare -A T
row() {
    local key=$1 cmd=$2 mode out t0 root
    declare -A times
    for mode in $MODES; do
        root=$(root "$mode"); eval "$cmd" > /dev/null || { echo "bench: failed: $cmd" >&2; exit 1; }
    done
    for _ in $(seq "$RUNS"); do
        for mode in $MODES; do
            root=$(root "$mode"); prep "$mode"
            t0=$(now)
            out=$(eval "$cmd") || { echo "bench: failed: $cmd ($mode)" >&2; exit 1; }
            [[ $out =~ ^[0-9.]+$ ]] || out=$(awk -v a="$(now)" -v b="$t0" 'BEGIN {print a - b}')
            times[$mode]="${times[$mode]:-} $out"
        done
    done
    for mode in $MODES; do
        T[$mode,$key]=$(printf '%s\n' ${times[$mode]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        echo "  $key $mode:${times[$mode]}" >&2
    done
}

BIG_BYTES=$(stat -c %s "$DATA/big.bin")
row seq 'cat $root/big.bin > /dev/null'
row r4k '/usr/bin/python3 $HERE/preads.py $root/big.bin 4096 20000'
row r128k '/usr/bin/python3 $HERE/preads.py $root/big.bin 131072 5000'
row small 'find $root/small -type f -print0 | xargs -0 cat > /dev/null'
if [ "$LIST_KEYS" -ge "$(ulimit -n)" ]; then
    # passthrough_ll keeps a descriptor per inode: more entries than it may open.
    MODES="pagecache kept dropped immutable readonly"
    T[passthrough,ls]=nan T[passthrough_kept,ls]=nan
fi
row ls 'ls -lR $root/list > /dev/null'

# The bytes: sluice's mounts serve exactly the file.
want=$(sha256sum < "$DATA/big.bin")
/usr/bin/python3 "$HERE/dropcache.py" "$S_MNT/data/big.bin"
[ "$(sha256sum < "$S_MNT/data/big.bin")" = "$want" ] || { echo "bench: sluice served wrong bytes" >&2; exit 1; }
/usr/bin/python3 "$HERE/dropcache.py" "$R_MNT/data/big.bin"
[ "$(sha256sum < "$R_MNT/data/big.bin")" = "$want" ] || { echo "bench: sluice -o ro served wrong bytes" >&2; exit 1; }

{
echo "Hot, median of $RUNS runs (each round times every column in turn), sluice with cache.memory $MEMORY; ratio = the limit's time / sluice's (1.00: as fast as the limit)."
echo
echo "| workload | page cache | passthrough_ll, cache=always | sluice | passthrough_ll | sluice, kernel's pages dropped | sluice over passthrough_ll (cache=always; dropped vs as it comes) | sluice, ttl -1 | sluice, ttl -1, -o ro | against the page cache (ttl -1; ro) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for row in "seq|sequential read, $BIG (cat)" "r4k|20,000 random 4 KiB preads" "r128k|5,000 random 128 KiB preads" "small|cat of $SMALL_COUNT x 100 KiB" "ls|ls -lR of $LIST_KEYS entries"; do
    k=${row%%|*}; name=${row#*|}
    awk -v lim="$(ulimit -n)" -v n="$name" -v pc="${T[pagecache,$k]}" -v pk="${T[passthrough_kept,$k]}" -v pt="${T[passthrough,$k]}" -v im="${T[kept,$k]}" -v tt="${T[dropped,$k]}" -v iv="${T[immutable,$k]}" -v ro="${T[readonly,$k]}" \
        'BEGIN { if (pt == "nan") printf "| %s | %.2f s | cannot (a descriptor per inode; limit %d) | %.2f s | cannot | %.2f s | %.2fx, %.2fx the page cache | %.2f s | %.2f s | **%.2f, %.2f** |\n", n, pc, lim, im, tt, pc / im, pc / tt, iv, ro, pc / iv, pc / ro;
                 else printf "| %s | %.2f s | %.2f s | %.2f s | %.2f s | %.2f s | **%.2fx, %.2fx** | %.2f s | %.2f s | **%.2f, %.2f** |\n", n, pc, pk, im, pt, tt, pk / im, pt / tt, iv, ro, pc / iv, pc / ro }'
done
awk -v b="$BIG_BYTES" -v pc="${T[pagecache,seq]}" -v im="${T[kept,seq]}" -v tt="${T[dropped,seq]}" \
    'BEGIN { printf "\nSequential: page cache %.0f MB/s, sluice %.0f MB/s (as it runs), %.0f MB/s (kernel pages dropped).\n", b / pc / 1e6, b / im / 1e6, b / tt / 1e6 }'
awk -v pc="${T[pagecache,small]}" -v im="${T[kept,small]}" -v pc2="${T[pagecache,seq]}" -v im2="${T[kept,seq]}" \
    'BEGIN { printf "sluice against the page cache (re-reads of unchanged files): sequential %.2f, small files %.2f.\n", pc2 / im2, pc / im }'
}
