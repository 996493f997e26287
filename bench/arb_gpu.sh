#!/bin/sh
# bench/arb_gpu.sh -- on a GPU machine: conf/arb.ini (trunk + moe + both
# ARBS-size codebooks + graph) against its trunk alone (the same file with
# every plugin section dropped), same seed, same data, same steps.
#   1. a profiled warm-up of arb.ini (PROFILE_STEPS steps, default 20):
#      per-component step time, GPU memory (nvidia-smi, sampled 2x/s)
#   2. both runs side by side on the one GPU (step times are therefore
#      contended; compare learning at equal steps, not speed)
# env: B (build dir, build-gpu), DATA (.data/tinyshakespeare.txt),
#      STEPS (1500), LIMIT (seconds per learning run, 420), EVAL (250),
#      OUT (logs)
set -u
B=${B:-build-gpu}; DATA=${DATA:-.data/tinyshakespeare.txt}
STEPS=${STEPS:-1500}; LIMIT=${LIMIT:-420}; EVAL=${EVAL:-250}
OUT=${OUT:-runs/arb-gpu}; mkdir -p "$OUT" runs
awk '/^\[/{keep = ($0 ~ /^\[(run|data|model|train|schedule)\]/)} keep' \
	conf/arb.ini > runs/arb-trunk.ini
common="--set data.path=$DATA --set run.resume=false --set train.ckpt_interval=0"
if [ "${PROFILE_STEPS:-20}" -gt 0 ]; then
	rm -rf runs/arb-prof
	nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 \
		> "$OUT/prof_mem.txt" 2>&1 & sm=$!
	$B/arbcore -c conf/arb.ini $common --set run.dir=runs/arb-prof \
		--set train.steps=${PROFILE_STEPS:-20} --set train.log_interval=5 \
		--set train.eval_interval=0 --set train.eval_batches=2 \
		--set run.profile=true > "$OUT/prof.log" 2>&1
	echo "profile rc=$?"
	kill $sm
	echo "peak GPU memory (MiB): $(sort -n "$OUT/prof_mem.txt" | tail -1)"
	grep -E "^data|^step|profile" "$OUT/prof.log" | cut -c1-400 | tail -6
fi
rm -rf runs/arb-learn runs/arb-trunk-learn
for r in arb trunk; do
	if [ $r = arb ]; then c=conf/arb.ini; d=runs/arb-learn
	else c=runs/arb-trunk.ini; d=runs/arb-trunk-learn; fi
	$B/arbcore -c $c $common --set run.dir=$d --set train.steps=$STEPS \
		--set train.time_limit=$LIMIT --set train.eval_interval=$EVAL \
		--set train.log_interval=50 > "$OUT/learn-$r.log" 2>&1 &
done
wait
for r in arb trunk; do
	echo "== $r"; grep -E "^eval|^done" "$OUT/learn-$r.log" | tail -12
	grep -E "^step" "$OUT/learn-$r.log" | tail -1 | cut -c1-200
done
