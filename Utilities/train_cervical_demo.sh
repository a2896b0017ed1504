#!/usr/bin/env bash
# Reproduce the CervicalMR demo segmentation bundles Resources/Models/cervical-{sag,ax}-seg-demo/.
#
#   Utilities/train_cervical_demo.sh [WORK_DIR]      (default build/cervical-demo; run from anywhere)
#   SUMMARY_ONLY=1 Utilities/train_cervical_demo.sh  (only add the training-distribution summary to the
#                                                     shipped bundles, from the same phantoms; weights unchanged)
#
# 1. 150 synthetic cervical MR studies (NIfTI) from seed 700 (mskai.cervical.phantoms.
#    make_cervical_seg_dataset): sagittal T1 + T2 and every axial T2 stack, 85 % train / 15 % val.
# 2. `mskai train cervical --stage segmentation --plane sagittal|axial --recipe demo` on the CPU.
# 3. Both bundles copied to Resources/Models/ and registered (sha256).
# 4. 40 fresh studies (seed 801, never used in training): `mskai evaluate cervical` (Dice per structure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="${1:-build/cervical-demo}"

if [ ! -f "$WORK/train-data/dataset.csv" ]; then
  echo "== 1. training phantoms (seed 700) -> $WORK/train-data"
  "$PYTHON" -c "from mskai.cervical.phantoms import make_cervical_seg_dataset; \
make_cervical_seg_dataset('$WORK/train-data', 150, seed=700, split=(0.85, 0.15, 0.0))"
fi

if [ "${SUMMARY_ONLY:-0}" = "1" ]; then
  # Only add the training-distribution summary (issue 14) to the shipped bundles: weights unchanged.
  echo "== summary only: the shipped bundles' training distribution from $WORK/train-data"
  "$PYTHON" -c "from mskai.cervical.seg_training import add_segmentation_summary
for folder in ('cervical-sag-seg-demo', 'cervical-ax-seg-demo'):
    add_segmentation_summary('Resources/Models/' + folder, '$WORK/train-data/dataset.csv')"
  exit 0
fi

for PLANE in sagittal axial; do
  echo "== 2. $PLANE segmentation with the demo recipe -> $WORK/train-$PLANE"
  "$PYTHON" -m mskai train cervical --stage segmentation --plane "$PLANE" --data "$WORK/train-data/dataset.csv" \
      --recipe demo --output "$WORK/train-$PLANE" --device cpu
done

echo "== 3. install and register the bundles"
"$PYTHON" -c "from mskai.bundles import ship_bundle
for plane, folder in (('sagittal', 'cervical-sag-seg-demo'), ('axial', 'cervical-ax-seg-demo')):
    ship_bundle('$WORK/train-' + plane + '/bundle', folder,
                'CervicalMR ' + plane + ' segmentation U-Net (demo, synthetic data; not for clinical use)')"

echo "== 4. 40 fresh studies (seed 801) and the evaluation -> $WORK/eval"
"$PYTHON" -c "from mskai.cervical.phantoms import make_cervical_seg_dataset; \
make_cervical_seg_dataset('$WORK/test-data', 40, seed=801, split=(0.0, 0.0, 1.0))"
"$PYTHON" -m mskai evaluate cervical --data "$WORK/test-data/dataset.csv" \
    --model Resources/Models/cervical-sag-seg-demo,Resources/Models/cervical-ax-seg-demo --output "$WORK/eval" --device cpu
