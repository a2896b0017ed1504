#!/usr/bin/env bash
# Reproduce the SpineOVF demo bundle Resources/Models/ovf-demo/ and its evaluation.
#
#   Utilities/train_ovf_demo.sh [WORK_DIR]                  (default build/ovf-demo; run from anywhere)
#   Utilities/train_ovf_demo.sh --summary-only [WORK_DIR]   (steps 1 and 2b only)
#
# 1. 320 synthetic spine CTs (DICOM) from seed 300: balanced labels, 85 % train / 15 % val,
#    mixed fracture grades, shapes, orientations and scanners (mskai.ovf.phantoms).
# 2. `mskai train ovf --recipe demo` on the CPU (fixed seed; bitwise reproducible on the
#    same CPU build of torch); the bundle records the summary of its training slices that
#    later analyses are compared with (mskai.distribution, issue 14).
# 2b. --summary-only: the shipped bundle keeps its weights (sha256 unchanged) and gets that
#    summary from the same training phantoms (mskai.ovf.training.add_distribution_summary);
#    this is how the bundle trained before the summary existed got it.
# 3. The bundle is copied to Resources/Models/ovf-demo and registered (sha256) in
#    Resources/Models/registry.json.
# 4. 100 fresh phantoms from seed 401 (never used in training) and `mskai evaluate ovf`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SUMMARY_ONLY=0
if [ "${1:-}" = "--summary-only" ]; then SUMMARY_ONLY=1; shift; fi
WORK="${1:-build/ovf-demo}"
TRAIN_SEED=300
TEST_SEED=401

if [ "$SUMMARY_ONLY" = 1 ] && [ -f "$WORK/train-data/dataset.csv" ]; then
    echo "== 1. training phantoms already in $WORK/train-data"
else
    echo "== 1. training phantoms (seed $TRAIN_SEED) -> $WORK/train-data"
    "$PYTHON" -c "from mskai.ovf.phantoms import make_ovf_dataset; \
make_ovf_dataset('$WORK/train-data', n_cases=320, seed=$TRAIN_SEED, fracture_fraction=0.5, \
split=(0.85, 0.15, 0.0), fmt='dicom', size='small')"
fi

if [ "$SUMMARY_ONLY" = 1 ]; then
    echo "== 2b. the training-distribution summary of Resources/Models/ovf-demo (weights unchanged)"
    "$PYTHON" - "$WORK/train-data/dataset.csv" <<'PY'
import sys

from mskai.bundles import load_bundle
from mskai.ovf.training import add_distribution_summary

before = load_bundle("Resources/Models/ovf-demo").weights[0]["sha256"]
summary = add_distribution_summary("Resources/Models/ovf-demo", sys.argv[1])
bundle = load_bundle("Resources/Models/ovf-demo")
bundle.verify()
assert bundle.weights[0]["sha256"] == before, "the weights changed"
print(f"summary of {summary['n_train']} slices, threshold {summary['threshold']}; weights sha256 {before} unchanged")
PY
    exit 0
fi

echo "== 2. training with the demo recipe -> $WORK/train"
"$PYTHON" -m mskai train ovf --data "$WORK/train-data/dataset.csv" --recipe demo \
    --output "$WORK/train" --device cpu

echo "== 3. install the bundle in Resources/Models/ovf-demo and register it"
"$PYTHON" -c "from mskai.bundles import ship_bundle; ship_bundle('$WORK/train/bundle', 'ovf-demo', \
'SpineOVF CNN + LSTM (demo, synthetic data; not for clinical use)')"

echo "== 4. 100 fresh phantoms (seed $TEST_SEED) and the evaluation -> $WORK/eval"
"$PYTHON" -c "from mskai.ovf.phantoms import make_ovf_dataset; \
make_ovf_dataset('$WORK/test-data', n_cases=100, seed=$TEST_SEED, fracture_fraction=0.5, \
split=(0.0, 0.0, 1.0), fmt='dicom', size='small')"
"$PYTHON" -m mskai evaluate ovf --data "$WORK/test-data/dataset.csv" \
    --model Resources/Models/ovf-demo --output "$WORK/eval" --device cpu
