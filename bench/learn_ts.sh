#!/bin/sh
# bench/learn_ts.sh -- conf/small-gpu.ini on tinyshakespeare with sign votes
# (threshold 12) and sr votes (R 2, threshold 64), two runs side by side on
# one GPU (each slower than alone). Usage on the device: sh bench/learn_ts.sh [s]
set -u
TL=${1:-540}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" runs/learn
. ./.device-debs/env.sh
make BUILD=build-gpu CUDA_ARCH='-gencode=arch=compute_90a,code=sm_90a' -j16 all \
	> runs/learn/build.log 2>&1 || { tail -40 runs/learn/build.log; exit 1; }
A=build-gpu/arbcore
C="--set data.path=.data/tinyshakespeare.txt --set train.time_limit=$TL --set run.threads=6"
$A -c conf/small-gpu.ini $C --set run.dir=runs/learn/ts2-sign12 > runs/learn/ts2-sign12.log 2>&1 &
$A -c conf/small-gpu.ini $C --set run.dir=runs/learn/ts2-sr64 --set schedule.vote=sr \
	--set schedule.threshold=64 --set schedule.sr_R=2 --set schedule.reset=remainder \
	> runs/learn/ts2-sr64.log 2>&1 &
wait
for r in ts2-sign12 ts2-sr64; do cp runs/learn/$r/metrics.csv runs/learn/$r.csv; done
tar czf "$OUT/learn_ts.tar.gz" runs/learn/ts2-*.csv runs/learn/ts2-*.log
for r in ts2-sign12 ts2-sr64; do echo "== $r"; grep -E "^(eval|done)" runs/learn/$r.log | tail -4; done
python3 bench/compare_curves.py sign12=runs/learn/ts2-sign12.csv sr64=runs/learn/ts2-sr64.csv | tail -30
