#!/usr/bin/env bash
# The GPU measurements still open for issues 6 and 7, sized for the device tool's 15 minutes
# (two calls on one warm machine; a machine start costs about a minute). Run from the repository
# root on the GPU machine, with data/01_raw/cifar10-jpg.tar.gz carried along:
#
#   bash bench/gpu_check.sh 1 "$OUT"   # <= 9 min: bench/cifar.py, all three scenarios with the
#                                      # default parameters and a log_loss variant, one process
#                                      # per seed side by side on the one GPU (each with its own
#                                      # time budget), then one merged report
#   bash bench/gpu_check.sh 2 "$OUT"   # <= 4 min: bench/speed.py alone, then seed 0's requests
#                                      # again from part 1's --state-dir (no decoding, no
#                                      # training), so their times are those of an idle GPU
#
# Part 1's request times are measured while three processes share the GPU: only part 2's count
# for the time targets. Training is shortened to 40 epochs (40 s each alone on an H200).
set -u
part=${1:?usage: gpu_check.sh 1|2 OUT}
out=${2:?usage: gpu_check.sh 1|2 OUT}
export PYTHONPATH=src PYTHONUNBUFFERED=1
state=data/06_models/bench-state  # ignored by git: kept on the machine between the two calls
common=(--archive data/01_raw/cifar10-jpg.tar.gz --epochs 40 --incremental-gold all
    --scenarios a,c,b --variant 'logloss={"sample_measure": "log_loss"}'
    --variant-scenarios a,b --state-dir "$state" --verbose)

summary() {  # summary FILE: a run's tables without the JSON line and the core's INFO lines
    grep -v '^{' "$1" | grep -v "INFO pgu.core" | tail -c "${2:-5000}"
}

case $part in
1)
    budget=470
    [ -d data/01_raw/cifar10-jpg/train ] || tar -xzf data/01_raw/cifar10-jpg.tar.gz -C data/01_raw
    for seed in 0 1 2; do
        timeout $((budget + 40)) python3 bench/cifar.py "${common[@]}" --first-seed $seed \
            --seeds 1 --threads 4 --time-budget $budget --out "$out/seed$seed" \
            >"$out/seed$seed.txt" 2>&1 &
        sleep 2  # the first process extracts nothing (done above); stagger the decoding a little
    done
    wait
    for seed in 0 1 2; do
        echo "seed $seed: $(grep -c 'step . done' "$out/seed$seed/log.txt") results"
        grep "skipped\|Error\|error" "$out/seed$seed.txt" | head -5
    done
    python3 bench/cifar.py --merge "$out"/seed{0,1,2}/results.json --out "$out/merged" \
        >"$out/merged.txt" 2>&1
    echo "merge rc=$?"
    summary "$out/merged.txt" 9000
    ;;
2)
    timeout 90 python3 bench/speed.py --workloads cifar --threads 8 >"$out/speed.txt" 2>&1
    echo "speed rc=$?"
    summary "$out/speed.txt" 3000
    if ls "$state"/model-*.safetensors >/dev/null 2>&1; then
        timeout 150 python3 bench/cifar.py "${common[@]}" --seeds 1 --threads 8 \
            --out "$out/seed0-idle" >"$out/seed0-idle.txt" 2>&1
        echo "seed0-idle rc=$?"
        grep "request [0-9.]*s" "$out/seed0-idle/log.txt" | sed 's/.*bench.cifar: //'
    else
        echo "no state from part 1 on this machine: skipping the idle rerun of seed 0"
    fi
    ;;
*)
    echo "part must be 1 or 2" >&2
    exit 2
    ;;
esac
