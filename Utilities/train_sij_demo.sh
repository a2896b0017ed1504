#!/usr/bin/env bash
# Reproduce the SacroiliitisCT demo bundle Resources/Models/sij-demo/ and its evaluation.
#
#   Utilities/train_sij_demo.sh [WORK_DIR]      (default build/sij-demo; run from anywhere)
#
# 1. 360 synthetic pelvic CTs (NIfTI) from seed 500 (mskai.sij.phantoms.make_sij_dataset):
#    worse joint graded 0/1/2/3 in 30/15/20/35 %, each side graded on its own, 85 % train /
#    15 % val; tilt, rotation, 2-3 mm slices, noise, partial coverage and hip prostheses vary.
# 2. `mskai train sij --recipe demo` on the CPU (fixed seed); the bundle records the summary of its
#    training crops that later analyses are compared with (mskai.distribution).
# 3. The bundle is copied to Resources/Models/sij-demo and registered (sha256) in
#    Resources/Models/registry.json.
# 4. 100 fresh phantoms from seed 601 (never used in training), DICOM, with the range
#    proposed from the CT as `mskai analyze` does (no range_mm column): `mskai evaluate sij`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="${1:-build/sij-demo}"
TRAIN_SEED=500
TEST_SEED=601

echo "== 1. training phantoms (seed $TRAIN_SEED) -> $WORK/train-data"
"$PYTHON" -c "from mskai.sij.phantoms import make_sij_dataset; \
make_sij_dataset('$WORK/train-data', 360, seed=$TRAIN_SEED, split=(0.85, 0.15, 0.0), fmt='nifti')"

echo "== 2. training with the demo recipe -> $WORK/train"
"$PYTHON" -m mskai train sij --data "$WORK/train-data/dataset.csv" --recipe demo \
    --output "$WORK/train" --device cpu

echo "== 3. install the bundle in Resources/Models/sij-demo and register it"
"$PYTHON" -c "from mskai.bundles import ship_bundle; ship_bundle('$WORK/train/bundle', 'sij-demo', \
'SacroiliitisCT MS-2.5D-Net (demo, synthetic data; not for clinical use)')"

echo "== 4. 100 fresh phantoms (seed $TEST_SEED), ranges proposed from the CT -> $WORK/eval"
"$PYTHON" - "$WORK/test-data" "$TEST_SEED" <<'PY'
import csv, sys
from pathlib import Path
from mskai.sij.phantoms import make_sij_dataset

folder, seed = Path(sys.argv[1]), int(sys.argv[2])
csv_path = make_sij_dataset(folder, 100, seed=seed, split=(0.0, 0.0, 1.0), fmt="dicom")
rows = list(csv.DictReader(csv_path.open()))
for row in rows:
    row["range_mm"] = ""  # evaluate the automatic range, as a user would meet it
with csv_path.open("w", newline="") as stream:
    writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
PY
"$PYTHON" -m mskai evaluate sij --data "$WORK/test-data/dataset.csv" \
    --model Resources/Models/sij-demo --output "$WORK/eval" --device cpu
