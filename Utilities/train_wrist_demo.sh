#!/usr/bin/env bash
# Rebuild the WristQC demo bundles (Resources/Models/wrist-{artifact,keypoints,view}-demo) from
# the project's phantoms with the demo recipe (mskai/wrist/recipes.py), register them in
# Resources/Models/registry.json and evaluate them on 200 fresh phantoms.
#
#   Utilities/train_wrist_demo.sh [WORK_DIR]
#   SUMMARY_ONLY=1 Utilities/train_wrist_demo.sh [WORK_DIR]
#
# Training records in each bundle the summary of its training images that analyses compare a
# radiograph with (mskai.distribution, issue 14).  SUMMARY_ONLY=1 adds that summary to the
# shipped bundles instead, from the training phantoms, without training: the weights and their
# sha256 (metadata.json, registry.json) stay as they are.  The shipped bundles were trained on
# the phantoms of the generator at commit ab82478; the generator's later marker looks and
# collimation borders are off in those (make_wrist_case(..., marker_look="classic",
# collimation=False) draws the same pixels), so their summary was added with WORK_DIR/train
# generated at that commit (git archive ab82478 mskai | tar -x -C OLD; PYTHONPATH=OLD for step 1).
#
# Seeds: training phantoms 4242 (500 cases, 85 % train / 15 % validation), recipe seed 2024,
# evaluation phantoms 777 (200 cases, all test).  On two free CPU cores the phantoms take
# ~4 min, the training ~20 min (artifact 16 epochs, keypoints 40, view 5; about three times
# that when the cores are shared) and the evaluation ~2 min.  Set OMP_NUM_THREADS=1 when the
# cores are shared with other work (oversubscribed threads are much slower).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${1:-${WORK:-/tmp/mskai-wrist-demo}}
mkdir -p "$WORK"

# 1. Phantoms (DICOM DX/CR with their truth files and dataset.csv).
[ -f "$WORK/train/dataset.csv" ] || "$PYTHON" -c "
from mskai.wrist.phantoms import make_wrist_dataset
make_wrist_dataset('$WORK/train', 500, 4242, splits=(0.85, 0.15, 0.0))"
[ -f "$WORK/fresh200/dataset.csv" ] || "$PYTHON" -c "
from mskai.wrist.phantoms import make_wrist_dataset
make_wrist_dataset('$WORK/fresh200', 200, 777, splits=(0.0, 0.0, 1.0))"

if [ -n "${SUMMARY_ONLY:-}" ]; then
  # The training-distribution summary for the shipped bundles, weights unchanged.
  "$PYTHON" -c "
from mskai.wrist.training import add_distribution_summary
for component in ('artifact', 'keypoints', 'view'):
    add_distribution_summary(f'Resources/Models/wrist-{component}-demo', '$WORK/train')"
  sha256sum Resources/Models/wrist-*-demo/model.safetensors
  exit 0
fi

# 2. Train the three networks (resumable: run the script again after an interruption).
"$PYTHON" -c "
from mskai.wrist.training import train_wrist
train_wrist('$WORK/train', 'demo', '$WORK/run', device='cpu', resume=True)"

# 3. Ship the bundles and register them (other entries of the registry are kept).
"$PYTHON" -c "import json
from mskai.bundles import ship_bundle
for component in ('artifact', 'keypoints', 'view'):
    source = '$WORK/run/bundles/wrist-' + component + '-demo'
    name = json.load(open(source + '/metadata.json'))['name']
    ship_bundle(source, 'wrist-' + component + '-demo', name + ' (demo, synthetic data; not for clinical use)')"

# 4. Evaluate the shipped bundles on 200 fresh phantoms (tables printed, files in $WORK/eval).
"$PYTHON" -c "
from mskai.wrist.evaluate import evaluate_wrist
evaluate_wrist('$WORK/fresh200', 'demo', '$WORK/eval', device='cpu')"
