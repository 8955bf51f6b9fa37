#!/usr/bin/env bash
# What to run on a GPU machine, in one go from the source tree (no install), in at most ten
# minutes: the gpu tests; the training step with its batch on the device (bench_device_step.py:
# four variants at batch 128-1,024, the towers split and grouped, CUDA graphs against plain
# compilation); the end-to-end rates from a prepared store of JPEGs and of raw pixels
# (bench_data.py); the GPU ablations on all of Fashion-MNIST (ablations_full.sh: its four IDX
# files in $FASHION_MNIST, default data/fashion-mnist, carried to the GPU machine; 18 runs of 8
# epochs outlast their 55 s here, which shows them starting: ablations_full.sh alone, with the
# same output folder, runs them to the end over several calls). Each part is bounded by `timeout`
# (the limits add up to 555 s; a part past its limit gets SIGINT, so that pytest still writes its
# report and the sweep keeps the batch sizes it measured, and SIGKILL 5 s later) so that one hang
# cannot eat the others' time; outputs go to ${GPU_CHECKS_DIR:-gpu-checks}/, and gpu_results.py
# gathers them into results.json there. Where $OUT is set (the device tool's folder of files to
# bring back, at most 8), results.json and a tarball of the outputs but checkpoints go there.
#
#     bash bench/gpu_checks.sh
#     bash bench/gpu_checks.sh --device cpu --tiny   # the same parts on tiny shapes, no gpu tests
set -u
device=cuda
tiny=0
while [ $# -gt 0 ]; do
    case $1 in
        --device) device=$2; shift 2 ;;
        --tiny) tiny=1; shift ;;
        *) echo "gpu_checks.sh: unknown option $1 (--device NAME, --tiny)" >&2; exit 2 ;;
    esac
done
out=${GPU_CHECKS_DIR:-gpu-checks}
export PYTHON=${PYTHON:-python3}  # ablations_full.sh reads it too
python=$PYTHON
fashion_mnist=${FASHION_MNIST:-data/fashion-mnist}  # e.g. /usr/share/datasets/fashion-mnist
mkdir -p "$out"
: > "$out/parts.tsv"
export PYTHONPATH=src PYTHONUNBUFFERED=1
run() {  # run NAME SECONDS COMMAND...: output to the terminal and $out/NAME.txt, status to parts.tsv
    local name=$1 seconds=$2
    shift 2
    echo "=== $name: $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=5 "$seconds" "$@" 2>&1 | tee "$out/$name.txt"
    local status=${PIPESTATUS[0]}
    echo "=== $name: exit $status after $((SECONDS - start)) s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$seconds" >> "$out/parts.tsv"
}
if [ "$tiny" = 1 ]; then  # every command line below, on shapes a CPU runs in seconds
    sizes=(--image-size 72 --crop-size 64 --rounds 1 --steps 1 --warmup 1)
    sweep=(--batch-sizes 2,4 "${sizes[@]}")
    at_128=(--batch-sizes 2 "${sizes[@]}")
    jpeg=(--images 40 --batch-size 4 --repeats 1 --workers 0)  # 10 classes, 4 images each
    raw=("${jpeg[@]}")
    ablations=(--seeds 1 --epochs 1 --batch-size 4 --workers 0 --set data.train_subset=8)
else
    sweep=(--batch-sizes 128,256,512,1024 --budget-s 90)
    at_128=(--batch-sizes 128)
    jpeg=(--images 4096 --repeats 2)
    raw=(--images 2048 --repeats 2)
    ablations=()
fi
"$python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision",
    torchvision.__version__, "cuda", torch.version.cuda)' | tee "$out/versions.txt"
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        | tee -a "$out/versions.txt"
    # Only the files that hold gpu tests (found, not listed, so a new one is not missed): the GPU
    # machine's image lacks some of the dev extras that collecting the whole suite could need.
    mapfile -t gpu_test_files < <(grep -rl "pytest.mark.gpu" tests --include="test_*.py" | sort)
    run gpu_tests 150 "$python" -m pytest -q -p no:cacheprovider -m gpu \
        --junitxml="$out/gpu_tests.xml" "${gpu_test_files[@]}"
fi
step=("$python" bench/bench_device_step.py --device "$device")
run step_sweep 140 "${step[@]}" "${sweep[@]}" --variants paper,paper-no-lrn,one-tower,owt \
    --json "$out/step_sweep.json" --profile-dir "$out/step_profiles"
run towers 45 "${step[@]}" "${at_128[@]}" --variants paper-split,paper-grouped \
    --json "$out/towers.json" --profile-dir "$out/towers_profiles"
run cuda_graphs 50 "${step[@]}" "${at_128[@]}" --variants paper,owt \
    --compile-mode reduce-overhead --json "$out/cuda_graphs.json" \
    --profile-dir "$out/cuda_graphs_profiles"
run store_jpeg 75 "$python" bench/bench_data.py --device "$device" --format jpeg "${jpeg[@]}"
run store_raw 40 "$python" bench/bench_data.py --device "$device" --format raw "${raw[@]}"
run ablations 55 bash bench/ablations_full.sh "$device" "$out/ablations" \
    --data "fashion-mnist:$fashion_mnist" "${ablations[@]}"
"$python" bench/gpu_results.py "$out"
if [ -n "${OUT:-}" ]; then
    cp "$out/results.json" "$OUT/"
    tar czf "$OUT/gpu-checks.tar.gz" --exclude="*.pt" -C "$out" .
fi
