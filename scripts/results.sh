#!/usr/bin/env bash
# Reproduces the README's "Results": both recipes, arms none and cutmix, on CIFAR-10 as JPEG.
# Hours on a 2-core CPU. Every command resumes where it stopped: re-run this script after any
# interruption. Runs go outside the work tree (RESULTS_DIR, default ~/cutmix-runs); the reports are
# then copied into docs/results/ by hand.
#   bash scripts/results.sh [seed|fast|all]    (DATA=cifar10 to download the official tarball instead)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg}
OUT=${RESULTS_DIR:-$HOME/cutmix-runs}
which=${1:-all}
bash scripts/setup.sh
if [ "$which" = seed ] || [ "$which" = all ]; then
  .venv/bin/cutmix compare --data "$DATA" --recipe seed --arms none,cutmix --seeds "${SEED_SEEDS:-1}" \
    --out "$OUT/seed-recipe"
fi
if [ "$which" = fast ] || [ "$which" = all ]; then
  .venv/bin/cutmix compare --data "$DATA" --recipe fast --arms none,cutmix --seeds "${FAST_SEEDS:-3}" \
    --out "$OUT/fast-recipe"
fi
