#!/usr/bin/env bash
# The GPU checks in one run: the tests marked gpu, the training benchmark over full CIFAR-10
# epochs (genlab against the naive loop, both precisions, with and without CUDA graphs, K models
# at once), a sweep against its members one by one (widths 8 and 16, 3 seeds: on CUDA each
# width trains as one grouped model), and a few real epochs of the report's presets, whose
# per-epoch seconds the run folders record. Device, precision and compile are runtime flags
# (--device cuda), not settings of a run. (torch.compile is left out: on an H100 it trained
# 3-13% slower than eager, and compiling costs a minute; add --compile to the benchmark to see
# it.)
#
#   bash benchmarks/gpu.sh [CIFAR10_IMAGE_FOLDER] [OUT]      # defaults: ../shared/data/cifar10-jpeg runs/gpu
#
# Every step runs even if one before it fails; the exit status says whether any failed.
set -uo pipefail
data=${1:-../shared/data/cifar10-jpeg}
out=${2:-runs/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() {
    echo "== $1 ($(date +%T))"
    shift
    "$@" || { echo "== failed: $*"; status=1; }
}
step environment nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step torch python -c "import torch; print(torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
step "tests marked gpu" python -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
step "training benchmark" python benchmarks/bench_training.py --device cuda \
    --images 50000 50000 --windows 2 --engines genlab genlab_fp32 genlab_eager \
    --data "$data" --out "$out/bench_cuda.json"
step "a sweep against its members one by one" python benchmarks/bench_sweep.py \
    --data-dir "$data" --windows 2
step "flip study, report preset, 3 epochs" python -m genlab run robustness --preset report \
    --epochs 3 --data-dir "$data" --device cuda --views none --out "$out/runs"
step "random-label grid, 2 epochs (width 4 runs train as one group)" python -m genlab run \
    random-labels --grid --epochs 2 --dataset cifar10 --data-dir "$data" --device cuda \
    --out "$out/runs"
echo "== done ($(date +%T)), status $status"
exit $status
