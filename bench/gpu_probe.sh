#!/bin/sh
# bench/gpu_probe.sh -- one device call: build for sm_90a, the whole Check
# suite (GPU cases included), the core and moe benchmarks, per-kernel
# durations (ncu) of the moe small shape and of a skinny forward, and a short
# conf/arb.ini run (ARBS-size codebooks) with its GPU memory sampled.
# Every log goes to $OUT as it is written.  Needs .device-debs and .data.
. ./bench/gpu_common.sh
st build
build_gpu $B/bench/bench_moe $B/bench/bench_stream $B/bench/bench_linear
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
st check
ARB_TEST_BUILD=$PWD/$B timeout ${CHECK_S:-200} $B/tests/check_arbcore > "$OUT/check.log" 2>&1
echo "check rc=$?" >> "$OUT/check.log"
grep -E "^[0-9]+%|check rc|GPU" "$OUT/check.log"; grep -E ":[FE]:" "$OUT/check.log" | head -20
if [ -z "${SKIP_BENCH:-}" ]; then
st bench_moe
ARB_BENCH_BUILD=$B timeout 100 $B/bench/bench_moe > "$OUT/bench_moe.log" 2>&1; echo "rc=$?"; grep -v "^#" "$OUT/bench_moe.log"
st bench_stream
timeout 60 $B/bench/bench_stream > "$OUT/bench_stream.log" 2>&1; echo "rc=$?"; tail -12 "$OUT/bench_stream.log"
st bench_linear
timeout 90 $B/bench/bench_linear > "$OUT/bench_linear.log" 2>&1; echo "rc=$?"; tail -30 "$OUT/bench_linear.log"
fi
if [ -z "${SKIP_NCU:-}" ]; then
st ncu
ARB_BENCH_BUILD=$B timeout 90 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
	--launch-count ${NCU_MOE:-500} $B/bench/bench_moe > "$OUT/ncu_moe.csv" 2> "$OUT/ncu_moe.err"; echo "ncu moe rc=$?"
timeout 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
	--launch-count 60 $B/bench/bench_linear > "$OUT/ncu_linear.csv" 2> "$OUT/ncu_linear.err"; echo "ncu linear rc=$?"
fi
if [ -n "${ARB_S:-}" ]; then
st arb
nvidia-smi --query-gpu=memory.used --format=csv,noheader -lms 500 > "$OUT/arb_mem.txt" 2>&1 & sm=$!
timeout $ARB_S $B/arbcore -c conf/arb.ini --set data.path=.data/tinyshakespeare.txt \
	--set run.dir=runs/arb-smoke --set run.resume=false --set train.steps=${ARB_STEPS:-40} \
	--set train.log_interval=5 --set train.eval_interval=0 --set train.eval_batches=4 \
	--set train.ckpt_interval=0 > "$OUT/arb_smoke.log" 2>&1; echo "arb rc=$?"
kill $sm; tail -15 "$OUT/arb_smoke.log"; sort -n "$OUT/arb_mem.txt" | tail -1
fi
st done
