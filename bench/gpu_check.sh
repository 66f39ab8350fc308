#!/usr/bin/env bash
# The GPU measurement still open for issue 7: the incremental scenario (b) for 3 seeds, with a
# gold standard retrained after every request (15 trainings of 40 epochs, ~40 s each alone on an
# H200). Three chains per seed: the defaults, `quantile` (sample_loss "quantile": on a CPU proxy
# of CIFAR-10 it brought the attack rate of (a) from 15 points below retrained to 1 above, where
# the defaults are 6 below on the real thing; README) and `q05t10` (the quantile loss with a
# finer step, lr 0.05 -> 0.01, and a band of +-0.1: all four (a) targets on the SmallVGG CPU
# proxy, at 3-4 epochs a request). Step 1 of each chain is (a). No baselines here (part 6 runs
# them on (a)): at ~15 s and four more evaluations a step, 3 seeds of (b) would not fit. Once
# part 6 has chosen the default, keep the defaults' chain and drop the others. The `log_loss`
# and `current` chains of earlier plans are gone: (a) measured `log_loss` in run 1, and
# `current` is no longer the default rule.
# A variant costs its requests only (~1.7 s each), not retrainings.
# It needs two calls on one warm machine (a call may run 10 minutes, a machine start costs
# about a minute, 15 minutes in all). Run from the repository root on the GPU machine, with
# data/01_raw/cifar10-jpg.tar.gz carried along:
#
#   bash bench/gpu_check.sh 1 "$OUT"   # ~8 min: seeds 0 and 1 (10 trainings)
#   bash bench/gpu_check.sh 2 "$OUT"   # ~4 min: seed 2 (5 trainings), its request times alone,
#                                      # then one report merged from both parts' results
#   bash bench/gpu_check.sh 3 "$OUT"   # ~1 min: the GPU-only tests of unlearn(..., cuda_graph=
#                                      # True), then bench/profile_request.py, where each phase
#                                      # of a request spends its time (the eager and the graphed
#                                      # epoch, conv rows from layer_rows, MAGMA's eigh)
#   bash bench/gpu_check.sh 4 "$OUT"   # ~1.5 min: bench/speed.py, issue 6's GPU figures again,
#                                      # with the loop's timeline, one profiled request, the
#                                      # CUDA-graph rows and the full statistics from host memory
#                                      # (pinned, non-blocking copies since run 5: not yet timed);
#                                      # its training s/epoch against run 5's 1.577 s measures
#                                      # training from GPU-resident data (fifteenth session)
#   bash bench/gpu_check.sh 5 "$OUT"   # ~3 min: issue 7's (c), one seed: the whole-class
#                                      # request's time (and fidelity) with the current code,
#                                      # with the evaluate pipeline's baselines beside it
#   bash bench/gpu_check.sh 6 "$OUT"   # ~7 min: issue 7's (a) alone for 3 seeds (6 trainings),
#                                      # the defaults beside the quantile-loss candidates, to
#                                      # choose the default that parts 1 and 2 then measure, the
#                                      # defaults replayed as CUDA graphs, and the evaluate
#                                      # pipeline's four baselines (FT, NG, RL, no projection),
#                                      # which CIFAR-10 has not had yet
#   bash bench/gpu_check.sh 7 "$OUT"   # ~1 min, if time is left: bench/determinism.py, whether
#                                      # each phase of a request keeps its bytes on the GPU, by
#                                      # default and with deterministic algorithms, at what cost
#
# Issue 6 misses one target only, the unlearning epoch (x3.0-x4.7 of the x5 asked, H200 run 5 of
# 2026-11-27): parts 3 and 4 (~3 min) run the GPU tests of unlearn(..., cuda_graph=True), the
# candidate (an epoch is bound by kernel launches), and time it beside the eager loop. Issue 7's
# need parts 1 and 2. A session with 15 minutes cannot do all: decide by the notes. The plan of
# 2026-11-27 (twelfth session): parts 3, 4 and 6 in one session (~11.5 min with the machine's
# start), so that issue 6's last target and issue 7's choice of default share one loan; parts 1
# and 2 (issue 7's (b), with whichever default part 6 chose) need a session of their own. As two
# calls on one warm machine (a call returns at most 8 files; these return 3 and 6):
#   run(command='for p in 3 4; do bash bench/gpu_check.sh $p "$OUT"; done', timeout_s=300)
#   run(command='bash bench/gpu_check.sh 6 "$OUT"; bash bench/gpu_check.sh 7 "$OUT"',
#       timeout_s=600, carry=["data/01_raw/cifar10-jpg.tar.gz"])
# Name kind="nvidia-h200" in the first call where one is lent: every figure so far (README,
# speed.py's reference, part 6's time budget at ~40 s a training) is from an H200, and times
# compare only on one card. On an H100 the figures still count, stated with the card's name.
# Part 7 comes last: if the device time runs short, it is the one cut (what a cut call wrote
# under $OUT still comes back).
#
# Part 2's merge reads part 1's results from the machine's disk: call it within the machine's
# idle time (30 s) of part 1, or merge the two results.json files here with --merge.
# Measured on 2026-11-27: three bench processes side by side on one H200 took 113 s per
# 40-epoch training instead of 38-40 s (SmallVGG training already fills the GPU), so running
# seeds side by side gains nothing; their request times were also inflated (3.1 s vs 1.8 s).
set -u
part=${1:?usage: gpu_check.sh 1|2|3|4|5|6|7 OUT}
out=${2:?usage: gpu_check.sh 1|2|3|4|5|6|7 OUT}
export PYTHONPATH=src PYTHONUNBUFFERED=1
state=data/06_models/bench-state  # ignored by git: kept on the machine between the two calls
common=(--archive data/01_raw/cifar10-jpg.tar.gz --epochs 40 --incremental-gold all
    --scenarios b --variant 'quantile={"sample_loss": "quantile"}'
    --variant 'q05t10={"sample_loss": "quantile", "lr_start": 0.05, "lr_end": 0.01, "sample_tolerance": 0.1}'
    --variant-scenarios b
    --baselines none --state-dir "$state" --threads 8 --verbose)

case $part in
1)
    timeout 540 python3 bench/cifar.py "${common[@]}" --seeds 2 --time-budget 500 \
        --out "$state/results-01" >"$out/seeds01.txt" 2>&1
    echo "seeds 0-1 rc=$?"
    cp -r "$state/results-01" "$out/"
    grep "done at\|skipped" "$out/results-01/log.txt"
    ;;
2)
    timeout 280 python3 bench/cifar.py "${common[@]}" --first-seed 2 --seeds 1 \
        --time-budget 260 --out "$out/results-2" >"$out/seed2.txt" 2>&1
    echo "seed 2 rc=$?"
    grep "done at\|skipped\|request [0-9.]*s" "$out/results-2/log.txt" | sed 's/.*bench.cifar: //'
    if [ -f "$state/results-01/results.json" ]; then
        python3 bench/cifar.py --merge "$state/results-01/results.json" \
            "$out/results-2/results.json" --out "$out/merged" >"$out/merged.txt" 2>&1
        echo "merge rc=$?"
        grep -v '^{' "$out/merged.txt" | tail -c 6000
    fi
    ;;
3)
    # the GPU-only tests: unlearn(..., cuda_graph=True), and training from GPU-resident data
    timeout 60 python3 -m pytest -q -p no:cacheprovider tests/core/test_unlearning.py \
        tests/core/test_training.py -k "cuda_graph or gpu" >"$out/graph-tests.txt" 2>&1
    echo "GPU tests rc=$? (0: passed; 1: a failure; 5: none ran)"
    tail -3 "$out/graph-tests.txt"
    timeout 80 python3 bench/profile_request.py >"$out/profile.txt" 2>&1
    echo "profile rc=$?"
    grep "^| \|busy\|^## \|^device\|cuda_graph" "$out/profile.txt"  # a failed capture says so
    ;;
4)
    timeout 150 python3 bench/speed.py --workloads cifar --threads 8 --profile --verbose \
        >"$out/speed.txt" 2>&1
    echo "speed rc=$?"
    grep -v '^{\|^|' "$out/speed.txt" | grep "timeline\|profiled wall\|^## \|cuda_graph" \
        | sed 's/.*bench\.speed //'
    grep -v '^{' "$out/speed.txt" | grep -A30 "^| phase"
    ;;
5)
    timeout 180 python3 bench/cifar.py --archive data/01_raw/cifar10-jpg.tar.gz --epochs 40 \
        --scenarios c --seeds 1 --threads 8 --time-budget 165 --out "$out/cifar-c" \
        >"$out/cifar-c.txt" 2>&1
    echo "cifar (c) rc=$?"
    grep "done at\|request [0-9.]*s\|skipped" "$out/cifar-c/log.txt" | sed 's/.*bench.cifar: //'
    ;;
6)
    # (a)'s attack rate sits 6 points below the retrained model's with the defaults (run 1);
    # the quantile loss closed that gap on the CPU proxies, more so with more, smaller steps
    # (a finer rate, or smaller batches: README). Variants cost a request each, not a training.
    # `graph`: the defaults with unlearn.cuda_graph, the same requests replayed as CUDA graphs
    # (its request time, and its results beside the eager loop's, on real data).
    timeout 480 python3 bench/cifar.py --archive data/01_raw/cifar10-jpg.tar.gz --epochs 40 \
        --scenarios a --seeds 3 --threads 8 --time-budget 420 --variant-scenarios a \
        --variant 'quantile={"sample_loss": "quantile"}' \
        --variant 'q05t10={"sample_loss": "quantile", "lr_start": 0.05, "lr_end": 0.01, "sample_tolerance": 0.1}' \
        --variant 'q32={"sample_loss": "quantile", "batch_size": 32}' \
        --variant 'graph={"cuda_graph": true}' \
        --out "$out/cifar-a" >"$out/cifar-a.txt" 2>&1
    echo "cifar (a) rc=$?"
    grep "done at\|request [0-9.]*s\|skipped\|cuda_graph" "$out/cifar-a/log.txt" \
        | sed 's/.*bench.cifar: //'  # cuda_graph: a capture that failed (the loop ran eagerly)
    # the table, the timing line and each model's verdict on issue 7's four targets
    sed -n '/^\*\*(a) the first/,/^\*\*(a) against the reference/p' "$out/cifar-a/results.md"
    ;;
7)
    for mode in "" --deterministic; do  # one process each: cuBLAS reads its setting at start
        timeout 90 python3 bench/determinism.py $mode >"$out/determinism${mode:+-on}.txt" 2>&1
        echo "determinism ${mode:-(defaults)} rc=$?"
        grep -v '^{' "$out/determinism${mode:+-on}.txt" | tail -n 14
    done
    ;;
*)
    echo "part must be 1, 2, 3, 4, 5, 6 or 7" >&2
    exit 2
    ;;
esac
