#!/bin/sh
# bench/learn_gpu.sh -- the learning batch of bench/learning.md on one GPU.
#
# Runs, side by side on the same GPU (so each is slower than alone):
#   ts-sign12   arbcore conf/small-gpu.ini on tinyshakespeare (sign votes, threshold 12)
#   ts-float    bench/float_ref.py, same architecture and steps, AdamW, bf16
#   gb-sign12   arbcore on the gutenberg books (train 64 MB prefix, val.txt)
#   gb-sr64     arbcore, sr votes (R 2, threshold 64, remainder kept)
#   gb-float    float_ref on the gutenberg books
# Data (git-ignored, carried to the device): .data/tinyshakespeare.txt,
# .data/gutenberg-train-64M.txt.xz, .data/gutenberg-val.txt.
# Usage on the device: sh bench/learn_gpu.sh [seconds]   (writes $OUT/learn.tar.gz)
set -u
TL=${1:-540}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" runs/learn
. ./.device-debs/env.sh
make BUILD=build-gpu CUDA_ARCH='-gencode=arch=compute_90a,code=sm_90a' -j16 all \
	> runs/learn/build.log 2>&1 || { tail -40 runs/learn/build.log; exit 1; }
xz -dc .data/gutenberg-train-64M.txt.xz > /tmp/gb-train.txt || exit 1
A=build-gpu/arbcore
TS="--set data.path=.data/tinyshakespeare.txt"
GB="--set data.path=/tmp/gb-train.txt --set data.val_path=.data/gutenberg-val.txt"
COMMON="--set train.time_limit=$TL --set run.threads=4"
$A -c conf/small-gpu.ini $TS $COMMON --set run.dir=runs/learn/ts-sign12 > runs/learn/ts-sign12.log 2>&1 &
$A -c conf/small-gpu.ini $GB $COMMON --set run.dir=runs/learn/gb-sign12 > runs/learn/gb-sign12.log 2>&1 &
$A -c conf/small-gpu.ini $GB $COMMON --set run.dir=runs/learn/gb-sr64 \
	--set schedule.vote=sr --set schedule.threshold=64 --set schedule.sr_R=2 \
	--set schedule.reset=remainder > runs/learn/gb-sr64.log 2>&1 &
PYTHONUNBUFFERED=1 python3 bench/float_ref.py --config conf/small-gpu.ini --data .data/tinyshakespeare.txt \
	--time-limit $TL --bf16 --out runs/learn/ts-float.csv > runs/learn/ts-float.log 2>&1 &
PYTHONUNBUFFERED=1 python3 bench/float_ref.py --config conf/small-gpu.ini --data /tmp/gb-train.txt \
	--val-path .data/gutenberg-val.txt --time-limit $TL --bf16 --out runs/learn/gb-float.csv > runs/learn/gb-float.log 2>&1 &
wait
for r in ts-sign12 gb-sign12 gb-sr64; do cp runs/learn/$r/metrics.csv runs/learn/$r.csv 2>/dev/null; done
tar czf "$OUT/learn.tar.gz" runs/learn/*.csv runs/learn/*.log
for r in ts-sign12 ts-float gb-sign12 gb-sr64 gb-float; do
	echo "== $r"; grep -E "^(step|eval|val)" runs/learn/$r.log | tail -3
done
python3 bench/compare_curves.py ternary=runs/learn/ts-sign12.csv float=runs/learn/ts-float.csv | tail -12
python3 bench/compare_curves.py sign12=runs/learn/gb-sign12.csv sr64=runs/learn/gb-sr64.csv float=runs/learn/gb-float.csv | tail -14
