#!/bin/sh
# bench/arb_ablate.sh -- on a GPU machine: which part of conf/arb.ini costs
# learning? Runs side by side on the one GPU (step times are contended:
# compare val bpb at equal steps only), same seed and data, STEPS steps
# (default 300), eval every EVAL (100):
#   trunk        conf/arb.ini with every plugin section dropped
#   vq           trunk + [vq:shared]
#   vq-zero      trunk + [vq:shared] with out_init = zero
#   moe          trunk + [moe]
#   arb-zero     conf/arb.ini, out_init = zero for both vq and the graph,
#                max_scan = MAX_SCAN (default 1024) for both vq
#   graph        trunk + [vq:shared] + [graph] + [moe:graph_experts] (zero
#                out_init, max_scan as arb-zero)
#   graph-noexp  the same without the experts (graph.experts empty)
#   graph-p0     graph with ponder = 0
#   kg           trunk + [vq:shared] + [vq:kg] (zero out_init)
#   no-graph     arb-zero without [graph] and [moe:graph_experts]
# env: B (build-gpu), DATA (.data/tinyshakespeare.txt), OUT (runs/ablate),
#      ONLY (names), EXTRA (more --set for every run)
set -u
B=${B:-build-gpu}; DATA=${DATA:-.data/tinyshakespeare.txt}
STEPS=${STEPS:-300}; EVAL=${EVAL:-100}; OUT=${OUT:-runs/ablate}
MS=${MAX_SCAN:-1024}
mkdir -p "$OUT" runs
keep() { awk -v re="^\\\\[(run|data|model|train|schedule$1)\\\\]" \
	'/^\[/{keep = ($0 ~ re)} keep' conf/arb.ini; }
keep "" > runs/ab-trunk.ini
keep "|vq:shared" > runs/ab-vq.ini
keep "|moe" > runs/ab-moe.ini
keep "|vq:shared|graph|moe:graph_experts" > runs/ab-graph.ini
keep "|vq:shared|vq:kg" > runs/ab-kg.ini
keep "|moe|vq:shared|vq:kg" > runs/ab-nograph.ini
Z="--set vq:shared.out_init=zero --set vq:shared.max_scan=$MS"
ZK="--set vq:kg.out_init=zero --set vq:kg.max_scan=$MS"
ZG="--set graph.out_init=zero"
common="--set data.path=$DATA --set run.resume=false --set train.ckpt_interval=0 \
--set train.steps=$STEPS --set train.eval_interval=$EVAL --set train.log_interval=50 ${EXTRA:-}"
for r in ${ONLY:-arb-zero vq vq-zero moe trunk}; do
	case $r in
	trunk) a="-c runs/ab-trunk.ini" ;;
	vq) a="-c runs/ab-vq.ini" ;;
	vq-zero) a="-c runs/ab-vq.ini --set vq:shared.out_init=zero" ;;
	moe) a="-c runs/ab-moe.ini" ;;
	arb-zero) a="-c conf/arb.ini $Z $ZK $ZG" ;;
	graph) a="-c runs/ab-graph.ini $Z $ZG" ;;
	graph-noexp) a="-c runs/ab-graph.ini $Z $ZG --set graph.experts=" ;;
	graph-p0) a="-c runs/ab-graph.ini $Z $ZG --set graph.ponder=0" ;;
	kg) a="-c runs/ab-kg.ini $Z $ZK" ;;
	no-graph) a="-c runs/ab-nograph.ini $Z $ZK" ;;
	esac
	rm -rf runs/ab-$r
	$B/arbcore $a $common --set run.dir=runs/ab-$r > "$OUT/$r.log" 2>&1 &
done
wait
for r in ${ONLY:-arb-zero vq vq-zero moe trunk}; do
	printf '%-9s' $r
	grep -E "^eval step" "$OUT/$r.log" | awk '{printf " %s:%s", $3, $9}'
	grep -E "^step" "$OUT/$r.log" | tail -1 | grep -o "[0-9.]* [m]*s/step" | sed 's/^/  /'
	grep -E "^step" "$OUT/$r.log" | tail -1 | grep -o "vq.shared.ppl=[0-9.]*\|vq.shared.scan=[0-9]*" | tr '\n' ' '
	echo
done
