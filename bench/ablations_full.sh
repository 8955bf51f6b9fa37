#!/usr/bin/env bash
# The ablations (§3.2-§4.2) with the power to see a point (issue 31): the paper's net and each
# choice removed, on all 60,000 Fashion-MNIST images (the fashion-mnist preset: near its
# plateau, ~9.7% held-out error after 6 epochs), 3 seeds, every run evaluated on the same
# 10,000 test images. Meant for a GPU; rerunning continues where a stopped run left off.
# Usage: bench/ablations_full.sh DEVICE OUT [more `alexnet experiment ablations` flags]
set -euo pipefail
device=${1:?usage: $0 DEVICE OUT [flags...]}
out=${2:?usage: $0 DEVICE OUT [flags...]}
shift 2
exec "${PYTHON:-.venv/bin/python}" -m alexnet experiment ablations --recipe fashion-mnist \
    --data fashion-mnist --seeds 3 --device "$device" --out "$out" --no-progress "$@"
