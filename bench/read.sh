#!/usr/bin/env bash
#
# bench/read.sh - read throughput of `sluice cat` against plain `cat`, data in the OS page cache.
#
#   ./bench/read.sh SLUICE_BINARY            (make bench: ./bench/read.sh build/sluice)
#
# In a temp dir of its own (removed at the end), with its own sluice.yaml (one file:// mount,
# /bench, over the temp data dir; cache.dir inside the temp dir):
#
#   1. seq:   one SEQ_SIZE file of random bytes.
#             baseline  `cat FILE > /dev/null`, file warm in the OS page cache
#             cold      `sluice cat /bench/seq.bin > /dev/null` after `sluice free` (the source
#                       stays in the OS page cache: this is sluice's own cost of filling its cache)
#             hot       the same again with the cache full
#             verify    sha256 of `sluice cat` output == sha256 of the file
#   2. small: SMALL_COUNT files of SMALL_SIZE bytes each in one directory, read in name order by
#             one process per xargs batch (the same -n/-s batching on both sides):
#             baseline  xargs cat;  cold/hot  xargs sluice cat  (cold after `sluice free -r`)
#             verify    sha256 of the concatenation, once
#
# Each figure is the median of its runs (RUNS for baseline and hot, COLD_RUNS for cold), with
# min and max beside it; `sync` runs (untimed) before every timed run so that the writeback of
# one run's page files does not land in the next. At the end: `ratio NAME VALUE` lines
# (sluice throughput / baseline throughput; 1.0 = as fast as cat) and `sluice cache stats --json`.
#
# Environment (defaults in brackets):
#   SEQ_SIZE [1G]  SMALL_COUNT [10000]  SMALL_SIZE [102400]  SMALL_BATCH [SMALL_COUNT]
#   RUNS [5]  COLD_RUNS [3]  CACHE_SIZE [max(4GiB, 2 x data)]  CACHE_MEMORY [sluice default]
#   BENCH_TMPDIR [$TMPDIR or /tmp]: where the temp dir goes (its filesystem is the disk tier's)
#   KEEP=1: leave the temp dir in place
# A quick run: SEQ_SIZE=64M SMALL_COUNT=500 RUNS=3 COLD_RUNS=1 ./bench/read.sh build/sluice
#
# Needs bash, coreutils, findutils (find, xargs), awk.
set -euo pipefail
export LC_ALL=C

die() { echo "read.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 SLUICE_BINARY"
SLUICE=$1
[ -x "$SLUICE" ] || die "$SLUICE: not an executable file"
case $SLUICE in /*) ;; *) SLUICE=$PWD/$SLUICE ;; esac

SEQ_SIZE=${SEQ_SIZE:-1G}
SMALL_COUNT=${SMALL_COUNT:-10000}
SMALL_SIZE=${SMALL_SIZE:-102400}
SMALL_BATCH=${SMALL_BATCH:-$SMALL_COUNT}
RUNS=${RUNS:-5}
COLD_RUNS=${COLD_RUNS:-3}
XARGS_S=1048576 # bytes of arguments per batch: room for ~50,000 namespace paths

for v in SMALL_COUNT SMALL_SIZE SMALL_BATCH RUNS COLD_RUNS; do
    case ${!v} in '' | *[!0-9]*) die "$v must be a positive integer, got '${!v}'" ;; esac
    [ "${!v}" -gt 0 ] || die "$v must be a positive integer"
done

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/sluice-bench.XXXXXX")
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then echo "(kept $WORK)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATA=$WORK/data
CFG=$WORK/sluice.yaml
ERR=$WORK/stderr
mkdir -p "$DATA/small"

sl() { "$SLUICE" -c "$CFG" "$@"; }
declare -A DESC # what a timed function runs, for error messages

# --- timing helpers ---------------------------------------------------------------------------
now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }

# timed NAME CMD...: run CMD (stdout to /dev/null, stderr to $ERR), append seconds to $WORK/t.NAME.
# A failing command stops the benchmark, showing the command and what it printed.
timed() {
    local name=$1 t0 t1 rc=0
    shift
    sync
    t0=$(now)
    "$@" >/dev/null 2>"$ERR" || rc=$?
    t1=$(now)
    if [ "$rc" -ne 0 ]; then
        echo "read.sh: FAILED (exit $rc): ${DESC[$1]:-$*}" >&2
        sed 's/^/    /' "$ERR" >&2
        exit 1
    elif [ -s "$ERR" ]; then
        echo "read.sh: warning: ${DESC[$1]:-$*} wrote to stderr:" >&2
        sed 's/^/    /' "$ERR" >&2
    fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' >>"$WORK/t.$name"
}

# stats NAME -> "median min max" of the recorded seconds
stats() {
    sort -g "$WORK/t.$1" | awk '{ v[NR] = $1 }
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
              printf "%.6f %.6f %.6f\n", m, v[1], v[NR] }'
}

median() { stats "$1" | awk '{ print $1 }'; }

# report_bytes LABEL NAME BYTES
report_bytes() {
    stats "$2" | awk -v l="$1" -v b="$3" -v n="$(wc -l <"$WORK/t.$2")" '{
        printf "  %-26s %8.3f s  %9.1f MiB/s   (median of %d; min %.3f, max %.3f)\n",
               l, $1, b / 1048576 / $1, n, $2, $3 }'
}

# report_files LABEL NAME FILES BYTES
report_files() {
    stats "$2" | awk -v l="$1" -v f="$3" -v b="$4" -v n="$(wc -l <"$WORK/t.$2")" '{
        printf "  %-26s %8.3f s  %9.0f files/s  %7.1f MiB/s   (median of %d; min %.3f, max %.3f)\n",
               l, $1, f / $1, b / 1048576 / $1, n, $2, $3 }'
}

# ratio BASE NAME: baseline time / sluice time = sluice throughput / baseline throughput
ratio() { awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN { printf "%.3f", a / b }'; }

# --- machine ----------------------------------------------------------------------------------
echo "== machine"
echo "  date:       $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "  kernel:     $(uname -srm)"
echo "  cpu:        $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo '?')"
echo "  nproc:      $(nproc)"
echo "  memory (free -g):"
free -g | sed 's/^/    /'
echo "  temp dir:   $WORK"
df -hT "$WORK" | sed 's/^/    /'
echo "  sluice:     $SLUICE ($("$SLUICE" --version))"

# --- data and config --------------------------------------------------------------------------
echo
echo "== data"
t0=$(now)
head -c "$SEQ_SIZE" /dev/urandom >"$DATA/seq.bin"
SEQ_BYTES=$(stat -c %s "$DATA/seq.bin")
[ "$SEQ_BYTES" -gt 0 ] || die "SEQ_SIZE=$SEQ_SIZE made an empty file"
# One stream of random bytes cut into files: one process, not SMALL_COUNT of them.
head -c "$((SMALL_COUNT * SMALL_SIZE))" /dev/urandom |
    split -b "$SMALL_SIZE" -a "${#SMALL_COUNT}" -d - "$DATA/small/f"
SMALL_BYTES=$((SMALL_COUNT * SMALL_SIZE))
nfiles=$(find "$DATA/small" -type f | wc -l)
[ "$nfiles" -eq "$SMALL_COUNT" ] || die "made $nfiles small files, expected $SMALL_COUNT"
t1=$(now)
awk -v b="$SEQ_BYTES" -v n="$SMALL_COUNT" -v s="$SMALL_SIZE" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
    'BEGIN { printf "  seq:   1 file of %d bytes (%.1f MiB)\n  small: %d files of %d bytes (%.1f MiB)\n  made in %.1f s from /dev/urandom\n",
             b, b / 1048576, n, s, n * s / 1048576, t }'

# File lists, made once and untimed: the same order and the same batching for both sides.
# The baseline runs in $DATA with relative paths (small/f0000); sluice gets /bench/small/f0000.
(cd "$DATA" && find small -type f | sort) >"$WORK/list.fs"
sed 's|^|/bench/|' "$WORK/list.fs" >"$WORK/list.ns"
batches=$(((SMALL_COUNT + SMALL_BATCH - 1) / SMALL_BATCH))
echo "  small files are read $SMALL_BATCH per process ($batches process(es) per run; xargs -n $SMALL_BATCH -s $XARGS_S)"

DATA_MIB=$(((SEQ_BYTES + SMALL_BYTES) / 1048576 + 1))
if [ -z "${CACHE_SIZE:-}" ]; then
    c=$((2 * DATA_MIB))
    [ "$c" -lt 4096 ] && c=4096
    CACHE_SIZE=${c}MiB
fi
{
    echo "cache:"
    echo "  dir: $WORK/cache"
    echo "  size: $CACHE_SIZE"
    [ -n "${CACHE_MEMORY:-}" ] && echo "  memory: $CACHE_MEMORY"
    echo "mounts:"
    echo "  /bench: file://$DATA"
} >"$CFG"
echo
echo "== config ($CFG)"
sed 's/^/  /' "$CFG"

# --- 1. sequential ----------------------------------------------------------------------------
seq_base() { cat "$DATA/seq.bin"; }
seq_sluice() { sl cat /bench/seq.bin; }
seq_free() { sl -q free /bench/seq.bin >/dev/null; }
DESC[seq_base]="cat $DATA/seq.bin > /dev/null"
DESC[seq_sluice]="$SLUICE -c $CFG cat /bench/seq.bin > /dev/null"

echo
echo "== 1. sequential read, one file of $SEQ_BYTES bytes"
cat "$DATA/seq.bin" >/dev/null # warm the OS page cache
cat "$DATA/seq.bin" >/dev/null
for _ in $(seq "$RUNS"); do timed seq_base seq_base; done
for _ in $(seq "$COLD_RUNS"); do
    seq_free
    timed seq_cold seq_sluice
done
for _ in $(seq "$RUNS"); do timed seq_hot seq_sluice; done

report_bytes "baseline (cat, page cache)" seq_base "$SEQ_BYTES"
report_bytes "sluice cold (cache empty)" seq_cold "$SEQ_BYTES"
report_bytes "sluice hot (cache full)" seq_hot "$SEQ_BYTES"
echo "  ratio sluice/baseline throughput: cold $(ratio seq_base seq_cold), hot $(ratio seq_base seq_hot)"

want=$(sha256sum <"$DATA/seq.bin" | awk '{ print $1 }')
got=$(sl cat /bench/seq.bin 2>"$ERR" | sha256sum | awk '{ print $1 }')
if [ "$got" = "$want" ]; then
    echo "  verify: sha256 ok ($want)"
    seq_verify=ok
else
    echo "  verify: SHA256 MISMATCH: file $want, sluice cat $got" >&2
    sed 's/^/    /' "$ERR" >&2
    seq_verify=MISMATCH
fi

# --- 2. small files ---------------------------------------------------------------------------
small_base() { (cd "$DATA" && xargs -n "$SMALL_BATCH" -s "$XARGS_S" cat <"$WORK/list.fs"); }
small_sluice() { xargs -n "$SMALL_BATCH" -s "$XARGS_S" "$SLUICE" -c "$CFG" cat <"$WORK/list.ns"; }
small_free() { sl -q free -r /bench/small >/dev/null; }
DESC[small_base]="(cd $DATA && xargs -n $SMALL_BATCH -s $XARGS_S cat < $WORK/list.fs) > /dev/null"
DESC[small_sluice]="xargs -n $SMALL_BATCH -s $XARGS_S $SLUICE -c $CFG cat < $WORK/list.ns > /dev/null"

echo
echo "== 2. small files, $SMALL_COUNT x $SMALL_SIZE bytes"
small_base >/dev/null # warm the OS page cache
small_base >/dev/null
for _ in $(seq "$RUNS"); do timed small_base small_base; done
for _ in $(seq "$COLD_RUNS"); do
    small_free
    timed small_cold small_sluice
done
for _ in $(seq "$RUNS"); do timed small_hot small_sluice; done

report_files "baseline (cat, page cache)" small_base "$SMALL_COUNT" "$SMALL_BYTES"
report_files "sluice cold (cache empty)" small_cold "$SMALL_COUNT" "$SMALL_BYTES"
report_files "sluice hot (cache full)" small_hot "$SMALL_COUNT" "$SMALL_BYTES"
echo "  ratio sluice/baseline throughput: cold $(ratio small_base small_cold), hot $(ratio small_base small_hot)"

want=$(small_base | sha256sum | awk '{ print $1 }')
got=$(small_sluice 2>"$ERR" | sha256sum | awk '{ print $1 }')
if [ "$got" = "$want" ]; then
    echo "  verify: sha256 of all $SMALL_COUNT files in order ok ($want)"
    small_verify=ok
else
    echo "  verify: SHA256 MISMATCH: cat $want, sluice cat $got" >&2
    sed 's/^/    /' "$ERR" >&2
    small_verify=MISMATCH
fi

# --- summary ----------------------------------------------------------------------------------
echo
echo "== summary (sluice throughput / cat throughput; 1.000 = as fast as cat)"
echo "ratio seq_cold $(ratio seq_base seq_cold)"
echo "ratio seq_hot $(ratio seq_base seq_hot)"
echo "ratio small_cold $(ratio small_base small_cold)"
echo "ratio small_hot $(ratio small_base small_hot)"
echo "verify seq $seq_verify"
echo "verify small $small_verify"
echo
echo "== sluice cache stats --json"
sl cache stats --json

[ "$seq_verify" = ok ] && [ "$small_verify" = ok ]
