#!/bin/sh
# bench/run_gpu.sh -- build on a GPU machine, run the GPU test suite and the
# kernel benchmarks; logs go to $OUT (default ./gpu-logs).
#   sh bench/run_gpu.sh [build-dir]
# Needs nvcc, check and inih (on the lent device: `. .device-debs/env.sh` first).
set -u
B=${1:-build-gpu}
O=${OUT:-gpu-logs}
mkdir -p "$O"
ARCH='-gencode=arch=compute_90a,code=sm_90a'
# -lstdc++: CUDA 13 kernel launch stubs need the C++ runtime when gcc links
LIBS='-ldl -lm -lpthread -fopenmp -lstdc++'
make BUILD="$B" CUDA_ARCH="$ARCH" LDLIBS="$LIBS" -j16 lib "$B/tests/check_arbcore" \
	"$B/bench/bench_linear" "$B/bench/bench_stream" > "$O/build.log" 2>&1 ||
	{ tail -40 "$O/build.log"; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv > "$O/gpu.txt" 2>&1
ARB_TEST_BUILD="$B" ARB_TEST_ONLY=gpu "./$B/tests/check_arbcore" > "$O/check_gpu.log" 2>&1
echo "check rc=$?" >> "$O/check_gpu.log"
grep -E "^[0-9]+%|check rc" "$O/check_gpu.log"
grep -E "Failure|Error|differ|mismatch" "$O/check_gpu.log" | head -30
"./$B/bench/bench_stream" 2>&1 | tee "$O/bench_stream.log"
"./$B/bench/bench_linear" 2>&1 | tee "$O/bench_linear.log"
