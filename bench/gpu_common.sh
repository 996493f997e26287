# bench/gpu_common.sh -- sourced by the device-call scripts (gpu_probe.sh,
# perf_small.sh): $OUT and $B, the .device-debs environment, the sm_90a
# architecture and link flags, `st` (elapsed-time stamp) and `build_gpu`
# (make all, the Check runner, the test plugins and the given targets, log
# in $OUT/build.log; exits with the log's tail when the build fails).
set -u
OUT=${OUT:-/tmp/out}; B=build-gpu; mkdir -p "$OUT"
. ./.device-debs/env.sh
ARCH='-gencode=arch=compute_90a,code=sm_90a'
LIBS='-ldl -lm -lpthread -fopenmp -lstdc++'
t0=$(date +%s)
st() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
build_gpu() {
	make BUILD=$B CUDA_ARCH="$ARCH" LDLIBS="$LIBS" -j16 all $B/tests/check_arbcore \
		$(ls tests/plugins/*.c | sed "s|tests/plugins/\(.*\)\.c|$B/tests/plugins/\1.so|") \
		"$@" > "$OUT/build.log" 2>&1 ||
		{ tail -40 "$OUT/build.log"; exit 1; }
}
