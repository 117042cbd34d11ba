#!/bin/bash
# bench/run.sh - `sluice run` against make and Snakemake (Debian's), on the same DAGs, in one
# run. Each figure is the median of ROUNDS, and each is printed as a ratio against the others:
#
#   dag1000   a DAG of 1,000 stages that each touch one file, 10 layers of 100, each stage
#             reading one file of the layer above (-j = the machine's cores for all three):
#             what the tool costs per stage when the work is nothing
#   noop      the second run of an unchanged pipeline whose one stage reads 10,000 files of
#             200 KiB (2 GiB): the goal is under 1 s and 10x Snakemake
#   hash      the first run of that pipeline (sluice hashes the 2 GiB: its stat fast path is
#             empty) against `sha256sum` of the same files, one process per core (xargs -P),
#             the page cache warm for both
#
#   ./bench/run.sh build/sluice
#   ROUNDS=5 FILES=2000 ./bench/run.sh build/sluice     # smaller
set -euo pipefail

SLUICE=$(realpath "${1:-build/sluice}")
ROUNDS=${ROUNDS:-3}
FILES=${FILES:-10000}
FILE_KB=${FILE_KB:-200}
CORES=$(nproc)
for tool in make snakemake sha256sum; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (./scripts/deps.sh --bench)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/sluice-bench-run.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# median CMD...: runs CMD ROUNDS times (after one untimed run of PREP if set), prints the median
# seconds. PREP runs before each round (untimed): it resets what the round must find.
median() {
    local times=()
    for _ in $(seq "$ROUNDS"); do
        [ -n "${PREP:-}" ] && eval "$PREP"
        local t0 t1
        t0=$(date +%s.%N)
        "$@" > "$WORK/out" 2>&1 || { echo "bench: $* failed:" >&2; tail -20 "$WORK/out" >&2; exit 1; }
        t1=$(date +%s.%N)
        times+=("$(echo "$t1 - $t0" | bc)")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f\n", a[int((NR + 1) / 2)] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", b / a }'; }

# ---- dag1000 -----------------------------------------------------------------------------
D=$WORK/dag
mkdir -p "$D"
/usr/bin/python3 - "$D" <<'EOF'
import sys
d = sys.argv[1]
N, W = 1000, 100
with open(f"{d}/pipeline.yaml", "w") as f:
    f.write("stages:\n")
    for i in range(N):
        deps = f", deps: [o/s{i - W}]" if i >= W else ""
        f.write(f"  s{i}: {{cmd: touch o/s{i}, outs: [o/s{i}]{deps}}}\n")
with open(f"{d}/Makefile", "w") as f:
    f.write("all: " + " ".join(f"o/s{i}" for i in range(N)) + "\n")
    for i in range(N):
        dep = f" o/s{i - W}" if i >= W else ""
        f.write(f"o/s{i}:{dep}\n\t@mkdir -p o && touch $@\n")
with open(f"{d}/Snakefile", "w") as f:
    f.write(f"""rule all:
    input: expand("o/s{{i}}", i=range({N}))
rule s:
    input: lambda w: [f"o/s{{int(w.i) - {W}}}"] if int(w.i) >= {W} else []
    output: "o/s{{i}}"
    shell: "touch {{output}}"
""")
EOF
cd "$D"
PREP="rm -rf $D/o $D/.sluice $D/sluice.lock $D/.snakemake"
t_sl=$(median "$SLUICE" -q run --cpus "$CORES")
t_mk=$(median make -r -s -j "$CORES")
t_sm=$(median snakemake -q -j "$CORES")
unset PREP
echo "dag1000: 1,000 stages of touch, -j $CORES: sluice ${t_sl}s, make ${t_mk}s, snakemake ${t_sm}s"
echo "  sluice: $(ratio "$t_sl" "$t_sm") faster than snakemake, $(ratio "$t_sl" "$t_mk") of make's speed" \
     "($(awk -v t="$t_sl" 'BEGIN { printf "%.2f", t }') ms a stage)"
cd - > /dev/null

# ---- noop and hash ------------------------------------------------------------------------
P=$WORK/data
mkdir -p "$P/in"
echo "making $FILES files of $FILE_KB KiB..." >&2
/usr/bin/python3 - "$P/in" "$FILES" "$FILE_KB" <<'EOF'
import os, sys
d, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = os.urandom(kb * 1024)
for i in range(n):
    sub = f"{d}/{i // 1000:03d}"
    os.makedirs(sub, exist_ok=True)
    with open(f"{sub}/{i:06d}.bin", "wb") as f:
        f.write(block[i % 1024:] + block[:i % 1024])  # each file different
EOF
sleep 1.2 # older than a timestamp tick: the hashes of files this new are not trusted later
cat > "$P/pipeline.yaml" <<'EOF'
stages:
  train:
    cmd: echo trained > model.txt
    deps: [in]
    outs: [model.txt]
EOF
(cd "$P/in" && find . -type f | sed 's|^\./|in/|' | sort) > "$WORK/inputs"
{
    echo "INPUTS := \$(shell cat $WORK/inputs)"
    echo "model.txt: \$(INPUTS)"
    printf '\techo trained > model.txt\n'
} > "$P/Makefile"
cat > "$P/Snakefile" <<EOF
INPUTS = open("$WORK/inputs").read().split()
rule train:
    input: INPUTS
    output: "model.txt"
    shell: "echo trained > model.txt"
EOF
cd "$P"
cat in/*/* > /dev/null # the page cache warm, for every tool alike
PREP="rm -rf $P/.sluice $P/sluice.lock $P/model.txt"
t_hash=$(median "$SLUICE" -q run)
PREP="rm -f $P/sums"
t_sha=$(median sh -c "cd in && find . -type f -print0 | xargs -0 -P $CORES -n 100 sha256sum > ../sums")
t_sha1=$(median sh -c "cd in && find . -type f -print0 | xargs -0 sha256sum > ../sums")
unset PREP
bytes=$(du -sb --apparent-size in | cut -f1)
gib=$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1073741824 }')
echo "hash: first run over $FILES files, $gib GiB (page cache warm): sluice ${t_hash}s," \
     "sha256sum x$CORES ${t_sha}s, sha256sum x1 ${t_sha1}s"
echo "  sluice: $(ratio "$t_hash" "$t_sha") the speed of sha256sum x$CORES," \
     "$(ratio "$t_hash" "$t_sha1") of one sha256sum;" \
     "$(awk -v b="$bytes" -v t="$t_hash" 'BEGIN { printf "%.2f GiB/s", b / t / 1073741824 }')"

# The no-op re-run: each tool has run once, and nothing changed.
"$SLUICE" -q run > /dev/null
"$SLUICE" -q run > /dev/null # the entries of the first run trusted from here
make -r -s > /dev/null
snakemake -q -j 1 > /dev/null 2>&1
t_noop=$(median "$SLUICE" -q run)
t_mk=$(median make -r -s)
t_sm=$(median snakemake -q -j 1)
grep -q trained model.txt
echo "noop: re-run of an unchanged pipeline over $FILES inputs: sluice ${t_noop}s, make ${t_mk}s," \
     "snakemake ${t_sm}s"
echo "  sluice: $(ratio "$t_noop" "$t_sm") faster than snakemake, $(ratio "$t_noop" "$t_mk") of make's speed" \
     "(goal: under 1 s and 10x snakemake)"
cd - > /dev/null
