#!/usr/bin/env bash
# bench/plugins_cpu.sh -- does each component plugin help the tiny trunk?
# Four CPU runs on one text with the same seed and the same number of steps,
# one thread each, JOBS at a time (default 2):
#
#   a-trunk    conf/tiny.ini (trunk alone)
#   b-moe      conf/tiny.ini + [moe] of conf/arb-tiny.ini (block 1's SwiGLU
#              replaced by top-2 of 4 experts, rank 8, shared 768 hidden)
#   c-vq       conf/tiny.ini + [vq:shared] of conf/arb-tiny.ini (4096 x 64
#              after the last block, dead-code reseeding every 200 steps)
#   d-arb      conf/arb-tiny.ini (moe + vq:kg + vq:shared + graph)
#
# Usage:  bench/plugins_cpu.sh [run|summary]
#   env:  BIN (build/arbcore), DATA (/work/shared/data/tinyshakespeare.txt),
#         STEPS (400), EVAL (50), OUT (runs/plugins-cpu), JOBS (2),
#         ONLY (space-separated run names, default all four)
# `run` deletes and re-creates OUT/<name> for each run, then prints the
# summary; `summary` only reads OUT/*/metrics.csv and prints the table of
# bench/plugins-learning.md (val bpb at every EVAL steps, best, wall time,
# ms/step). Each run's log is OUT/<name>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-build/arbcore}
DATA=${DATA:-/work/shared/data/tinyshakespeare.txt}
STEPS=${STEPS:-400}
EVAL=${EVAL:-50}
OUT=${OUT:-runs/plugins-cpu}
JOBS=${JOBS:-2}
ONLY=${ONLY:-"d-arb c-vq b-moe a-trunk"}   # longest first: better packing

common=(--set "data.path=$DATA" --set run.threads=1 --set run.seed=1
	--set "train.steps=$STEPS" --set train.time_limit=0
	--set "train.eval_interval=$EVAL" --set train.eval_batches=8
	--set train.ckpt_interval=0 --set train.log_interval=50)

args_of() {
	case "$1" in
	a-trunk) echo "-c conf/tiny.ini" ;;
	b-moe) echo "-c conf/tiny.ini --set moe.layers=1 --set moe.experts=4" \
		"--set moe.top_k=2 --set moe.rank=8 --set moe.balance=0.01" ;;
	c-vq) echo "-c conf/tiny.ini --set vq:shared.layers=2" \
		"--set vq:shared.size=4096 --set vq:shared.dim=64" \
		"--set vq:shared.dead_after=200" ;;
	d-arb) echo "-c conf/arb-tiny.ini" ;;
	*) echo "unknown run $1" >&2; return 1 ;;
	esac
}

run_one() {
	local name=$1 dir="$OUT/$1"
	rm -rf "$dir"
	mkdir -p "$OUT"
	# shellcheck disable=SC2046
	"$BIN" $(args_of "$name") "${common[@]}" --set "run.dir=$dir" \
		>"$OUT/$name.log" 2>&1 && echo "$name: done" ||
		echo "$name: FAILED (exit $?), see $OUT/$name.log"
	# the model's weight count and audit line, for the table
	"$BIN" $(args_of "$name") "${common[@]}" --set "run.dir=$dir" audit \
		>"$OUT/$name.audit" 2>&1 || true
}

summary() {
	python3 - "$OUT" "$EVAL" $ONLY <<'EOF'
import csv, os, re, sys
out, ev, names = sys.argv[1], int(sys.argv[2]), sorted(sys.argv[3:])
rows = {}
for n in names:
    p = os.path.join(out, n, "metrics.csv")
    if not os.path.exists(p):
        print(f"{n}: no metrics.csv"); continue
    with open(p) as f:
        rows[n] = list(csv.DictReader(f))
steps = sorted({int(r["step"]) for rs in rows.values() for r in rs
                if r["val_bpb"] and int(r["step"]) % ev == 0})
hdr = ["run"] + [f"@{s}" for s in steps] + ["best (step)", "wall s",
       "ms/step (wall/steps)", "ms/step (train, median)", "weights"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for n, rs in rows.items():
    val = {int(r["step"]): float(r["val_bpb"]) for r in rs if r["val_bpb"]}
    best = min(val.items(), key=lambda kv: kv[1]) if val else None
    last = rs[-1]
    wall = float(last["time_s"])
    ms = 1000 * wall / int(last["step"])
    bps = sorted(float(r["bytes_per_s"]) for r in rs if r["bytes_per_s"])
    # predicted bytes per step = batch * ctx * 3 (tiny trunk: 16 * 64 * 3)
    tms = 1000 * 3072 / bps[len(bps) // 2] if bps else float("nan")
    w = "?"
    a = os.path.join(out, n + ".log")
    if os.path.exists(a):
        m = re.search(r"model: (\d+) ternary weights", open(a).read())
        if m: w = f"{int(m.group(1)):,}"
    cells = [n] + [f"{val[s]:.3f}" if s in val else "-" for s in steps]
    cells += [f"{best[1]:.3f} ({best[0]})" if best else "-", f"{wall:.0f}",
              f"{ms:.0f}", f"{tms:.0f}", w]
    print("| " + " | ".join(cells) + " |")
EOF
}

case "${1:-run}" in
run)
	[ -x "$BIN" ] || { echo "no $BIN (build first, or BIN=...)" >&2; exit 2; }
	[ -r "$DATA" ] || { echo "cannot read $DATA" >&2; exit 2; }
	echo "$(date -u +%FT%TZ) steps=$STEPS jobs=$JOBS bin=$BIN data=$DATA"
	for n in $ONLY; do
		while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
		echo "$(date -u +%T) start $n"
		run_one "$n" &
	done
	wait
	echo "$(date -u +%FT%TZ) all done"
	summary
	;;
summary) summary ;;
*) echo "usage: $0 [run|summary]" >&2; exit 2 ;;
esac
