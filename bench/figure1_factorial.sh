#!/usr/bin/env bash
# Figure 1's factorial (§3.1, issue 31): {raw, standardised} inputs × {cuda-convnet, kaiming}
# init, ReLU against tanh and the linear floor, 3 seeds each, on a fixed subset of
# Fashion-MNIST. Usage: bench/figure1_factorial.sh OUT [extra relu-vs-tanh flags...]
# CONDITIONS="raw:kaiming ..." runs only those (several such calls can share the CPU's cores).
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
mkdir -p "$out"
for condition in ${CONDITIONS:-raw:cuda-convnet standardised:kaiming raw:kaiming \
                                standardised:cuda-convnet}; do
    scale=${condition%%:*}
    init=${condition#*:}
    case $condition in  # the sweeps' first rates: network, then linear baseline
        raw:cuda-convnet) lrs=3e-4,1e-3,3e-3 linear=3e-6,1e-5,3e-5 ;;
        raw:kaiming) lrs=3e-5,1e-4,3e-4 linear=3e-6,1e-5,3e-5 ;;
        *) lrs=0.003,0.01,0.03 linear=0.001,0.003,0.01 ;;
    esac
    started=$SECONDS
    "$python" -m alexnet experiment relu-vs-tanh "${common[@]}" --input-scale "$scale" \
        --init "$init" --lrs "$lrs" --linear-lrs "$linear" --out "$out/$scale-$init" "$@" \
        > "$out/$scale-$init.txt" 2>&1
    echo "$scale × $init: $((SECONDS - started)) s" >> "$out/wall-times.txt"
done
