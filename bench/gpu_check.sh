#!/usr/bin/env bash
# The GPU measurements still open for issues 6 and 7, sized for the device tool's 15 minutes
# (two calls; a machine start costs about 30 s). Run from the repository root on the GPU machine,
# with data/01_raw/cifar10-jpg.tar.gz carried along:
#
#   bash bench/gpu_check.sh 1 "$OUT"   # ~7.5 min: bench/speed.py at full size, then
#                                      # bench/cifar.py seeds 0 and 1, scenarios (a) and (c),
#                                      # with a row for the opt-in log_loss stopping measure
#   bash bench/gpu_check.sh 2 "$OUT"   # ~5.5 min: seed 2 of (a) and (c), then (b) for seed 0
#
# Training is shortened to 40 epochs (40 s each on an H200), as in README's figures.
set -u
part=${1:?usage: gpu_check.sh 1|2 OUT}
out=${2:?usage: gpu_check.sh 1|2 OUT}
export PYTHONPATH=src PYTHONUNBUFFERED=1
common=(--archive data/01_raw/cifar10-jpg.tar.gz --epochs 40 --incremental-gold last
    --threads 8 --verbose)

cifar() {  # cifar NAME ARGS...: one bench/cifar.py run into $out/NAME, its tables on stdout
    local name=$1 seconds=$2
    shift 2
    timeout $((seconds + 20)) python3 bench/cifar.py "${common[@]}" --time-budget "$seconds" \
        --out "$out/$name" "$@" >"$out/$name.txt" 2>&1
    echo "$name rc=$?"
    grep -v '^{' "$out/$name.txt" | grep -v "INFO pgu.core" | tail -c 6000
}

case $part in
1)
    timeout 90 python3 bench/speed.py --workloads cifar --threads 8 >"$out/speed.txt" 2>&1
    echo "speed rc=$?"
    grep -v '^{' "$out/speed.txt" | tail -25
    cifar ac01 330 --seeds 2 --scenarios a,c --variant 'logloss={"sample_measure": "log_loss"}'
    ;;
2)
    cifar ac2 180 --first-seed 2 --seeds 1 --scenarios a,c \
        --variant 'logloss={"sample_measure": "log_loss"}'
    cifar b0 130 --seeds 1 --scenarios b
    ;;
*)
    echo "part must be 1 or 2" >&2
    exit 2
    ;;
esac
