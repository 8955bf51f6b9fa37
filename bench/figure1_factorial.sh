#!/usr/bin/env bash
# Figure 1's factorial (§3.1, issue 31): {raw, standardised} inputs × {cuda-convnet, kaiming}
# init, ReLU against tanh and the linear floor, 3 seeds each, on a fixed subset of
# Fashion-MNIST. Usage: bench/figure1_factorial.sh OUT [extra relu-vs-tanh flags...]
# Rates start where each input scale needs them (raw pixels are ~60× standardised ones); every
# sweep widens itself until its chosen rate lies inside it. The paper's own condition first.
set -euo pipefail
out=${1:?usage: $0 OUT [flags...]}
shift
python=${PYTHON:-.venv/bin/python}
common=(--data fashion-mnist --train-subset 4000 --batch-size 32 --epochs 5 --seeds 3
        --linear-epochs 20 --sweep-epochs 1
        --target 0.35 --target 0.3 --target 0.25 --target 0.2 --target 0.15 --target 0.12
        --target 0.1 --target 0.08)
run() {  # scale init lrs linear-lrs
    local started=$SECONDS
    "$python" -m alexnet experiment relu-vs-tanh "${common[@]}" --input-scale "$1" --init "$2" \
        --lrs "$3" --linear-lrs "$4" --out "$out/$1-$2" "${extra[@]}" > "$out/$1-$2.txt" 2>&1
    echo "$1 × $2: $((SECONDS - started)) s" >> "$out/wall-times.txt"
}
extra=("$@")
mkdir -p "$out"
run raw cuda-convnet 3e-4,1e-3,3e-3 3e-6,1e-5,3e-5
run standardised kaiming 0.003,0.01,0.03 0.001,0.003,0.01
run raw kaiming 3e-5,1e-4,3e-4 3e-6,1e-5,3e-5
run standardised cuda-convnet 0.003,0.01,0.03 0.001,0.003,0.01
