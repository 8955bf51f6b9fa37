#!/usr/bin/env bash
# What to run on a GPU machine, in one go from the source tree (no install): the gpu tests,
# bench_step.py and bench_data.py --images 8192 (README, "On one GPU"). Each is bounded by
# `timeout` so that one hang cannot eat the others' time; outputs go to ${OUT:-gpu-checks}/.
# About 6.5 minutes on an H200, most of it torch.compile's first compilations.
#
#     bash bench/gpu_checks.sh
set -u
out=${OUT:-gpu-checks}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
run() {  # run NAME SECONDS COMMAND...: the command's output to the terminal and $out/NAME.txt
    local name=$1 seconds=$2
    shift 2
    echo "=== $name: $*"
    local start=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.txt"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda)'
# Only the files that hold gpu tests (found, not listed, so a new one is not missed): the GPU
# machine's image lacks some of the dev extras that collecting the whole suite could need.
mapfile -t gpu_test_files < <(grep -rl "pytest.mark.gpu" tests --include="test_*.py" | sort)
run gpu_tests 170 python3 -m pytest -q -p no:cacheprovider -m gpu "${gpu_test_files[@]}"
run bench_step 200 python3 bench/bench_step.py
run bench_data 180 python3 bench/bench_data.py --images 8192
