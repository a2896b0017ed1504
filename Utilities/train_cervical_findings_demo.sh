#!/usr/bin/env bash
# Reproduce the five CervicalMR demo finding classifiers Resources/Models/cervical-{hyperplasia,listhesis,
# herniation,pll,lf}-demo/.
#
#   Utilities/train_cervical_findings_demo.sh [WORK_DIR]   (default build/cervical-findings-demo; run from anywhere)
#   FINDINGS="herniation" Utilities/train_cervical_findings_demo.sh   (re-train some; all five are evaluated)
#   SUMMARY_ONLY=1 Utilities/train_cervical_findings_demo.sh   (only add the training-distribution summary to the
#                                                               shipped bundles; weights unchanged)
#
# 1. 240 synthetic cervical MR studies (NIfTI) from seed 710 with random findings, written with the
#    annotation export's five CSVs (mskai.cervical.finding_training.make_cervical_findings_dataset),
#    80 % train / 20 % val; the mask channels from the shipped segmentation bundles, as at analysis.
# 2. `mskai train cervical --stage <finding> --recipe demo` on the CPU, one classifier after the other.
# 3. The bundles copied to Resources/Models/ and registered (sha256).
# 4. 60 fresh studies (seed 811, never used in training): `mskai evaluate cervical --stage findings`
#    (the paper's metrics per classifier, confusion matrices and ROC curves).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="${1:-build/cervical-findings-demo}"
ALL="hyperplasia listhesis herniation pll lf"
FINDINGS="${FINDINGS:-$ALL}"

if [ ! -f "$WORK/train-data/dataset.json" ]; then
  echo "== 1. training phantoms (seed 710) -> $WORK/train-data"
  "$PYTHON" -c "from mskai.cervical.finding_training import make_cervical_findings_dataset; \
make_cervical_findings_dataset('$WORK/train-data', 240, seed=710, split=(0.8, 0.2, 0.0))"
fi

if [ "${SUMMARY_ONLY:-0}" = "1" ]; then
  # Only add the training-distribution summary (issue 14) to the shipped bundles: weights unchanged.
  echo "== summary only: the shipped bundles' training distribution from $WORK/train-data"
  for FINDING in $FINDINGS; do
    "$PYTHON" -c "from mskai.cervical.finding_training import add_classifier_summary; \
add_classifier_summary('Resources/Models/cervical-$FINDING-demo', '$WORK/train-data')"
  done
  exit 0
fi

for FINDING in $FINDINGS; do
  echo "== 2. $FINDING classifier with the demo recipe -> $WORK/train-$FINDING"
  "$PYTHON" -m mskai train cervical --stage "$FINDING" --data "$WORK/train-data" \
      --recipe demo --output "$WORK/train-$FINDING" --device cpu
done

echo "== 3. install and register the bundles"
for FINDING in $FINDINGS; do
  "$PYTHON" -c "from mskai.bundles import ship_bundle; ship_bundle('$WORK/train-$FINDING/bundle', \
'cervical-$FINDING-demo', 'CervicalMR $FINDING classifier (demo, synthetic data; not for clinical use)')"
done

echo "== 4. 60 fresh studies (seed 811) and the evaluation -> $WORK/eval"
if [ ! -f "$WORK/test-data/dataset.json" ]; then
  "$PYTHON" -c "from mskai.cervical.finding_training import make_cervical_findings_dataset; \
make_cervical_findings_dataset('$WORK/test-data', 60, seed=811, split=(0.0, 0.0, 1.0))"
fi
"$PYTHON" -m mskai evaluate cervical --stage findings --data "$WORK/test-data" \
    --model "$(for f in $ALL; do printf 'Resources/Models/cervical-%s-demo,' "$f"; done)" --output "$WORK/eval" --device cpu
