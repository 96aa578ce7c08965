#!/usr/bin/env bash
# Reproduces the README's "Results": both recipes, arms none and cutmix, on CIFAR-10 as JPEG.
# Hours on a 2-core CPU. Every command resumes where it stopped: re-run this script after any
# interruption. Two runs train side by side (--jobs 2, one thread each: faster in all on 2 cores than
# one run on both). Runs go outside the work tree (RESULTS_DIR, default ~/cutmix-runs); the reports are
# then copied into docs/results/ by hand. Runs already committed there are restored, not retrained.
#   bash scripts/results.sh [seed|fast|all]    (DATA=cifar10 to download the official tarball instead)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg}
OUT=${RESULTS_DIR:-$HOME/cutmix-runs}
which=${1:-all}
bash scripts/setup.sh
# Finished runs committed in docs/results count as done when their options match (no retraining).
for recipe in seed fast; do
  .venv/bin/python scripts/restore_runs.py "docs/results/$recipe-recipe" "$OUT/$recipe-recipe" \
    -- --data "$DATA" --recipe "$recipe" || true
done
if [ "$which" = seed ] || [ "$which" = all ]; then
  .venv/bin/cutmix compare --data "$DATA" --recipe seed --arms none,cutmix --seeds "${SEED_SEEDS:-3}" --robustness \
    --jobs "${JOBS:-2}" --out "$OUT/seed-recipe"
fi
if [ "$which" = fast ] || [ "$which" = all ]; then
  .venv/bin/cutmix compare --data "$DATA" --recipe fast --arms none,cutmix --seeds "${FAST_SEEDS:-3}" --robustness \
    --jobs "${JOBS:-2}" --out "$OUT/fast-recipe"
fi
