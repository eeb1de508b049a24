#!/usr/bin/env bash
# Every GPU check of this project in one prepared script, in stages, each under `timeout`, each writing a log and a
# small JSON under $OUT (default ./gpu_out). Run from the repository root on the lent machine:
#
#   bash bench/gpu_checks.sh bench       # <= 8 min (stage limits): the throughput targets of docs/benchmarks.md, both --augment_on
#   bash bench/gpu_checks.sh compile     # <= 5 min: does --compile pay? (fp16, device augmentation)
#   bash bench/gpu_checks.sh learn       # <= 9 min: bench/learning_evidence.py --preset gpu
# Each fits one 10-minute device command; the lent machine's 15 minutes hold `bench` and `compile`, or `learn`.
#   TINY=1 DEVICE=cpu bash bench/gpu_checks.sh bench   # the same stages with tiny sizes, to try the script on a CPU
#
# A stage that fails or times out is logged and the next one still runs; `summary.json` lists each stage's exit code.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
declare -A STATUS

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s): $*" | tee "$OUT/$name.log"
    local start=$SECONDS
    timeout "$seconds" "$@" >>"$OUT/$name.log" 2>&1
    STATUS[$name]=$?
    echo "== $name: exit ${STATUS[$name]} after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
    tail -n 6 "$OUT/$name.log"
}

if [ "$TINY" = 1 ]; then
    ARCH=vit_tiny; BATCH=4; SIZE=64; DIMS=(--out_dim 1024 --out_dim_c 256); E2E=(--workers 1 --e2e_images 16)
    STEPS=(--steps 2 --phase_steps 1 --warmup 1 --e2e_steps 2); CLUSTER_B=(4); PHOTO=(--cases 8x64 --repeats 2)
    SMOKE=(--synthetic_num_images 32 --batch_size_per_gpu 8 --global_crops_size 64 --num_workers 1)
else
    ARCH=vit_small; BATCH=128; SIZE=224; DIMS=(); E2E=(--workers 14 --e2e_images 2560)
    STEPS=(--steps 20 --phase_steps 5 --warmup 5 --e2e_steps 40); CLUSTER_B=(16 64 128)
    PHOTO=(--cases 256x224 1280x96 --repeats 20)
    SMOKE=(--synthetic_num_images 1024 --batch_size_per_gpu 128 --global_crops_size 96 --num_workers 8)
fi

case "${1:-bench}" in
bench)
    stage env 30 bash -c "nvidia-smi || true; python -c 'import torch, timm; print(torch.__version__, timm.__version__, \
torch.cuda.is_available() and torch.cuda.get_device_name(0))'; lscpu | grep -E 'Model name|^CPU\(s\)'"
    stage photometric 60 python bench/bench_photometric.py --device "$DEVICE" "${PHOTO[@]}"
    stage clustering 60 python bench/bench_clustering.py --device "$DEVICE" --batch_sizes "${CLUSTER_B[@]}" \
        --repeats 20 --teacher_repeats 5
    stage train_bf16 240 python bench/bench_train.py --archs "$ARCH" --device "$DEVICE" --precision bf16 \
        --batch "$BATCH" --size "$SIZE" "${DIMS[@]}" "${STEPS[@]}" "${E2E[@]}" --augment_on cpu device \
        --json "$OUT/train_bf16.json"
    stage torchrun_smoke 90 python -m torch.distributed.run --standalone --nproc_per_node=1 main_croc.py \
        --dataset_type synthetic --synthetic_cache true --synthetic_size 128 --arch vit_tiny --out_dim 4096 \
        --out_dim_c 1024 --epochs 2 --precision bf16 --augment_on device "${SMOKE[@]}" \
        --output_dir "$OUT/torchrun_smoke" --device "$DEVICE"
    ;;
compile)
    stage train_fp16_compile 300 python bench/bench_train.py --archs "$ARCH" --device "$DEVICE" --precision fp16 \
        --compile --batch "$BATCH" --size "$SIZE" "${DIMS[@]}" "${STEPS[@]}" --e2e_steps 0 --augment_on device \
        --json "$OUT/train_fp16_compile.json"
    ;;
learn)
    stage learning_evidence 540 python bench/learning_evidence.py --preset gpu --output_dir "$OUT/learning_evidence"
    ;;
*)
    echo "usage: bash bench/gpu_checks.sh {bench|compile|learn}" >&2
    exit 2
    ;;
esac

python - "$OUT" "$(declare -p STATUS)" <<'EOF'
import json, re, sys
out, declared = sys.argv[1], sys.argv[2]
status = {k: int(v) for k, v in re.findall(r'\[(\w+)\]="?(\d+)"?', declared)}
json.dump(status, open(f"{out}/summary.json", "w"), indent=1)
print("summary:", status)
EOF
