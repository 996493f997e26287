#!/bin/sh
# bench/sched_cpu.sh -- scheduler variants of conf/tiny.ini on the books
# (gutenberg), CPU only, two runs at a time with one thread each, same seed,
# same time budget per run. Compare with bench/compare_curves.py (by step).
#   sh bench/sched_cpu.sh TRAIN.txt VAL.txt [seconds per run]
set -u
TR=$1; VA=$2; TL=${3:-720}
A=${ARBCORE:-build/arbcore}
D=runs/sched
mkdir -p $D
C="--set data.path=$TR --set data.val_path=$VA --set run.threads=1 --set train.time_limit=$TL --set train.steps=100000 --set train.eval_interval=100 --set train.ckpt_interval=0"
run() { name=$1; shift; $A -c conf/tiny.ini $C --set run.dir=$D/$name "$@" > $D/$name.log 2>&1; cp $D/$name/metrics.csv $D/$name.csv; }
run sign12 &
run sr64r2 --set schedule.vote=sr --set schedule.threshold=64 --set schedule.sr_R=2 --set schedule.reset=remainder &
wait
run sr64r4 --set schedule.vote=sr --set schedule.threshold=64 --set schedule.sr_R=4 --set schedule.reset=remainder &
run sign12w --set schedule.threshold_start=32 --set schedule.warmup_steps=300 &
wait
python3 bench/compare_curves.py sign12=$D/sign12.csv sr64r2=$D/sr64r2.csv sr64r4=$D/sr64r4.csv sign12w=$D/sign12w.csv
