#!/usr/bin/env bash
# The one prepared device check, for a session that is lent a GPU (see ../.library/device/README.md).
# On the device machine, from the repo root, it runs in order and writes everything under $OUT:
#   1. the CUDA tests of the ops (CPU and GPU give identical parameters and pixels);
#   2. benchmarks/bench_ops.py --device cuda (224x224 float32 batch 256 vs the copy bandwidth);
#   3. benchmarks/bench_train.py --device cuda --batch 512 (goal: >= 40,000 img/s with CutMix on an H100);
#   4. ResNet-20, arms none,cutmix (side by side on the GPU), 1 seed, recipe fast scaled to batch 512,
#      EPOCHS epochs (default 100), on CIFAR-10 as JPEG, to set beside He et al.'s 91.25% at ~160 epochs.
#      Lower EPOCHS if the first call shows the arms cannot finish in 300 s.
# Before the call, on the CPU machine (the data travels as one archive in an ignored folder):
#   mkdir -p .gpu && tar czf .gpu/cifar10-jpeg.tar.gz -C ../shared/data cifar10-jpeg
# Then: device run, command "bash benchmarks/gpu_check.sh", carry [".gpu"], timeout_s 580.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check-out}
EPOCHS=${EPOCHS:-100}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$OUT/log.txt"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/log.txt"

timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/ops/test_ops.py -k "cuda or memory_format or replay" 2>&1 | tail -5 | tee -a "$OUT/log.txt"
timeout 60 "$PY" benchmarks/bench_ops.py --device cuda --seconds 1 --no-peers 2>&1 | tee -a "$OUT/log.txt"
timeout 90 "$PY" benchmarks/bench_train.py --device cuda --batch 512 --steps 100 --seed-steps 0 2>&1 | tee -a "$OUT/log.txt"

if [ -f .gpu/cifar10-jpeg.tar.gz ]; then
  tar xzf .gpu/cifar10-jpeg.tar.gz -C /tmp
  # Both arms at once on the one GPU (each alone leaves it mostly idle at 32x32), so that they get the
  # same number of epochs inside the limit; then, only if both finished, one call that writes the report.
  args=(--data /tmp/cifar10-jpeg --recipe fast --seeds 1 --epochs "$EPOCHS" --batch-size 512 --lr 0.4
        --device cuda --quiet --out "$OUT/compare")
  for arm in none cutmix; do
    timeout 300 "$PY" -m cutmix compare "${args[@]}" --arms "$arm" > "$OUT/compare-$arm.txt" 2>&1 &
  done
  wait
  tail -n 3 "$OUT"/compare-*.txt | tee -a "$OUT/log.txt"
  if [ -f "$OUT/compare/seed-0/none/summary.json" ] && [ -f "$OUT/compare/seed-0/cutmix/summary.json" ]; then
    timeout 60 "$PY" -m cutmix compare "${args[@]}" --arms none,cutmix 2>&1 | tail -4 | tee -a "$OUT/log.txt"
  fi
  for run in "$OUT"/compare/seed-0/*/; do
    [ -f "$run/metrics.jsonl" ] && cp "$run/metrics.jsonl" "$OUT/metrics-$(basename "$run").jsonl"
  done
  # At most 8 files come back: the log, two metrics files, report.md/json and curves.png.
  rm -rf "$OUT/compare/seed-0" "$OUT/compare/preview.png" "$OUT"/compare-*.txt
fi
