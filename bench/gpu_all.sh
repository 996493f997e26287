#!/bin/sh
# bench/gpu_all.sh -- on a GPU machine: build everything, run the whole Check
# suite (GPU cases included) and the plugin benchmarks beside their PyTorch
# peers. Logs in $OUT/gpu_all.tar.gz; summary on stdout.
set -u
OUT=${OUT:-/tmp/out}
B=build-gpu
L=runs/gpu-all
mkdir -p "$OUT" $L
. ./.device-debs/env.sh
ARCH='-gencode=arch=compute_90a,code=sm_90a'
make BUILD=$B CUDA_ARCH="$ARCH" -j16 all $B/tests/check_arbcore $(ls tests/plugins/*.c | sed "s|tests/plugins/\(.*\)\.c|$B/tests/plugins/\1.so|") $B/bench/bench_moe \
	$B/bench/bench_vq $B/bench/bench_graph > $L/build.log 2>&1 || { tail -40 $L/build.log; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.total --format=csv > $L/gpu.txt 2>&1
ARB_TEST_BUILD=$PWD/$B timeout 240 $B/tests/check_arbcore > $L/check.log 2>&1
echo "check rc=$?" >> $L/check.log
grep -E "^[0-9]+%|check rc|GPU found" $L/check.log
grep -E ":[FE]:" $L/check.log | head -20
for b in "bench_moe" "bench_graph" "bench_vq 1"; do
	echo "== $b"; ARB_BENCH_BUILD=$B timeout 100 $B/bench/$b > $L/$(echo $b | cut -d' ' -f1).log 2>&1; echo "rc=$?"
	tail -25 $L/$(echo $b | cut -d' ' -f1).log
done
for p in moe_torch graph_torch; do
	echo "== $p"; PYTHONUNBUFFERED=1 timeout 100 python3 bench/$p.py > $L/$p.log 2>&1; echo "rc=$?"
	tail -15 $L/$p.log
done
tar czf "$OUT/gpu_all.tar.gz" $L
