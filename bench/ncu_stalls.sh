#!/bin/sh
# bench/ncu_stalls.sh -- where the small-batch kernels of bench_moe's dense
# small shape wait: for each kernel family named in KERNELS, one steady-state
# launch per grid shape with
# its duration, issue-slot use and the warp stall reasons (cycles per issued
# instruction, largest first). Run after perf_small.sh has built build-gpu.
set -u
B=${B:-build-gpu}; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# name:skip:count (skip: launches of that kernel before the ones measured)
KERNELS=${KERNELS:-"skinny_fwd_kernel3:700:7 skinny_bwdx_kernel:700:7 vote_direct_kernel:700:7 step_rows_kernel:100:1 split_sum_kernel:600:6"}
M="gpu__time_duration.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum"
for r in long_scoreboard short_scoreboard barrier membar wait math_pipe_throttle lg_throttle mio_throttle no_instruction dispatch_stall drain imc_miss branch_resolving not_selected selected tex_throttle; do
	M="$M,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
for kk in $KERNELS; do
	k=${kk%%:*}; rest=${kk#*:}; skip=${rest%%:*}; n=${rest#*:}
	ARB_BENCH_ONLY=small ARB_BENCH_BUILD=$B timeout 120 ncu --clock-control none \
		--kernel-name "regex:$k" --launch-skip $skip --launch-count $n \
		--metrics "$M" --csv $B/bench/bench_moe > "$OUT/stall_$k.csv" 2> "$OUT/stall_$k.err"
	python3 - "$OUT/stall_$k.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: print("no rows", sys.argv[1]); sys.exit()
h = rows[0]; ii = h.index("ID"); ki = h.index("Kernel Name"); gi = h.index("Grid Size")
mi = h.index("Metric Name"); vi = h.index("Metric Value")
L = collections.OrderedDict()
for r in rows[1:]:
    d = L.setdefault(r[ii], {"name": r[ki].split("(")[0], "grid": r[gi]})
    d[r[mi]] = float(r[vi].replace(",", ""))
seen = set()
for d in L.values():
    if d["grid"] in seen: continue
    seen.add(d["grid"])
    st = sorted(((k.split("stalled_")[1].split("_per")[0], v) for k, v in d.items()
                 if "stalled" in k), key=lambda x: -x[1])
    print("%-26s grid %-12s %6.1f us issue %4.1f%% warps %4.1f%% inst %d" % (
        d["name"][:26], d["grid"], d["gpu__time_duration.sum"] / 1000,
        d["smsp__issue_active.avg.pct_of_peak_sustained_active"],
        d["sm__warps_active.avg.pct_of_peak_sustained_active"], d["smsp__inst_executed.sum"]))
    print("    " + " ".join("%s %.1f" % (n, v) for n, v in st[:6]))
PY
done
