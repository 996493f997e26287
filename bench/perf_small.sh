#!/bin/sh
# bench/perf_small.sh -- one device call for the small-batch path: build for
# sm_90a, the GPU test suite, bench_moe (and its small shapes with each newer
# kernel family off: ARB_CUDA_LEGACY A/B lines), bench_linear, then ncu kernel
# durations of the moe small shape aggregated per kernel name (top 30, so
# that the output comes back as text). Needs .device-debs.
. ./bench/gpu_common.sh
st build
build_gpu $B/bench/bench_moe $B/bench/bench_linear
if [ -z "${SKIP_CHECK:-}" ]; then
st check
ARB_TEST_BUILD=$PWD/$B timeout ${CHECK_S:-200} $B/tests/check_arbcore > "$OUT/check.log" 2>&1
echo "check rc=$?"
grep -E "^[0-9]+%" "$OUT/check.log"; grep -E ":[FE]:" "$OUT/check.log" | head -20
fi
st bench_moe
ARB_BENCH_BUILD=$B timeout 100 $B/bench/bench_moe > "$OUT/bench_moe.log" 2>&1; echo "rc=$?"; grep -v "^#" "$OUT/bench_moe.log"
# A/B in the same call: the small shapes with each newer kernel family off
for lg in vote step bwdx skinny; do
	echo "-- ARB_CUDA_LEGACY=$lg"
	ARB_CUDA_LEGACY=$lg ARB_BENCH_ONLY=small ARB_BENCH_BUILD=$B timeout 60 $B/bench/bench_moe 2>&1 | grep "shape=small "
done
st bench_linear
timeout 120 $B/bench/bench_linear > "$OUT/bench_linear.log" 2>&1; echo "rc=$?"; grep -E "M=1 |M=16 |step|bwd_x|vote" "$OUT/bench_linear.log"
if [ -z "${SKIP_NCU:-}" ]; then
st ncu
# one steady iteration's worth of kernels of the dense small shape: skip the
# first 3000 launches (first iterations), take 400
ARB_BENCH_ONLY=small ARB_BENCH_BUILD=$B timeout 120 ncu --clock-control none --cache-control none \
	--metrics gpu__time_duration.sum --csv --launch-skip ${NCU_SKIP:-3000} \
	--launch-count ${NCU_N:-400} $B/bench/bench_moe > "$OUT/ncu.csv" 2> "$OUT/ncu.err"
echo "ncu rc=$?"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: print("no ncu rows"); sys.exit()
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value"); ui = h.index("Metric Unit")
gi = h.index("Grid Size")
tot = collections.defaultdict(float); cnt = collections.Counter()
seq = []
for r in rows[1:]:
    name = r[ki].split("(")[0][:60]
    v = float(r[vi].replace(",", "")); u = r[ui]
    us = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[u] * v
    seq.append((name, us, r[gi]))
    tot[name] += us; cnt[name] += 1
s = sum(tot.values())
print("kernels %d, total %.1f us" % (sum(cnt.values()), s))
for k, v in sorted(tot.items(), key=lambda x: -x[1])[:30]:
    print("%9.1f us %5d  %s" % (v, cnt[k], k))
# one iteration in launch order: the launches after the first step's
# workspace collection, up to the next
c = [i for i, x in enumerate(seq) if x[0].startswith("ws_collect")]
a, b = (c[0] + 1, c[1] + 1) if len(c) > 1 else (0, min(len(seq), 48))
print("-- one iteration in launch order (us, grid)")
for n, us, g in seq[a:b]:
    print("%7.1f %-14s %s" % (us, g, n))
PY
fi
st done
