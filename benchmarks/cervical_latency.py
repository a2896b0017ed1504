"""Benchmark: CervicalMR from a study's files to its report, on the CPU, paper-size networks.

    python benchmarks/cervical_latency.py [--workdir DIR] [--repeats 2]

Data (written once into ``DIR``, default the mskai cache ``benchmarks/cervical``): the
paper-size phantom study ``make_cervical_study(2026, size="paper")`` (sagittal T1 and T2
of 13-15 slices at 0.5-0.6 mm, one axial T2 stack over C2/3-C7/T1 at 0.45-0.6 mm) as DICOM,
and the seven paper-size networks with **random weights** (timing does not depend on
the values, so the findings are meaningless here; and since random weights segment noise,
the two segmentation networks run for their time but hand on the phantom's own
segmentation, so that labelling, levels, measurements, the classifiers' inputs and the
report do the work of a real study): the two segmentation U-Nets (channels
32-512, 256 px), the two 3D ResNet-18s (32x32x64 and 32x96x96 inputs) and the three 2D
U-Net classifiers (channels 32-512, 224 px).

Everything is measured in one fresh child process (its peak memory is its own), with
PyTorch's default thread count: the networks are built once (as ``mskai batch`` does),
reported apart (``load_s``); then ``mskai analyze cervical``'s work —
:meth:`mskai.cervical.task.CervicalTask.analyze`: reading the study's series,
segmentation, labelling, levels, measurements, the five classifiers, and writing
``result.json``, the segmentations, overlays and the HTML/PDF report — runs once cold and
``--repeats`` times warm.  Stages are the result's ``timing`` plus ``write`` (outputs and
reports).

Goal on the 2-core CPU (issue 12): the whole study <= 10 s, peak RSS <= 3 GB.  The last
line is ``study_s=... peak_rss_gb=...`` (best warm run).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CASE_SEED = 2026

_PREPARE = r"""
import sys
from pathlib import Path
from mskai.cervical.phantoms import make_cervical_study, write_cervical_study
workdir, seed = Path(sys.argv[1]), int(sys.argv[2])
if not (workdir / "case" / "done").is_file():
    study = make_cervical_study(seed, size="paper", axial="parallel")
    files = write_cervical_study(study, workdir / "case", fmt="dicom")
    (workdir / "case" / "done").write_text(str(files["study"]))
"""

_MEASURE = r"""
import json, shutil, sys, tempfile, time
from pathlib import Path
import torch
from mskai.cervical import classifiers as cls
from mskai.cervical.segmentation import PAPER_UNET, SliceGrid, build_segmenter
from mskai.cervical.task import TASK

study, repeats, labels_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
out = {"threads": torch.get_num_threads()}

# The paper-size networks run for their time, but random weights segment noise: what follows
# them (labelling, levels, measurements, classifiers' inputs, the report) gets the phantom's own
# segmentation on the same grid, so that it does the work of a real study.
import numpy as np
import mskai.cervical.segmentation as segmentation
from mskai.cervical.seg_training import class_map
from mskai.labels import read_labelmap
truth_labels = [read_labelmap(path) for path in sorted(labels_dir.glob("*.nii.gz"))]
network_segment = segmentation.segment_series

def segment_like_a_trained_network(network, image, grid, plane, **kwargs):
    predicted = network_segment(network, image, grid, plane, **kwargs)
    same = next(labels for labels in truth_labels if labels.shape == image.shape
                and np.allclose(labels.origin, image.origin, atol=0.05))
    return predicted.with_array(class_map(same, plane))

segmentation.segment_series = segment_like_a_trained_network
start = time.perf_counter()
torch.manual_seed(0)
info = {"id": "random-weights", "version": "0.0.0"}
models = {plane: (build_segmenter(plane, PAPER_UNET).eval(), SliceGrid(256, 0.8), {"info": info})
          for plane in ("sagittal", "axial")}
models["classifiers"] = {}
for finding in cls.FINDINGS:
    architecture = cls.PAPER_RESNET if finding in cls.VERTEBRA_FINDINGS else cls.PAPER_UNET_CLS
    models["classifiers"][finding] = cls.LoadedClassifier(
        finding, cls.build_classifier(finding, architecture).eval(), dict(cls.PAPER_INPUTS[finding]), 0.5,
        {"info": info})
out["load_s"] = time.perf_counter() - start
out["parameters_m"] = {key: round(sum(p.numel() for p in (value[0] if isinstance(value, tuple) else value.network)
                                      .parameters()) / 1e6, 2)
                       for key, value in list(models.items())[:2] + list(models["classifiers"].items())}
runs = []
work = Path(tempfile.mkdtemp())
for run in range(1 + repeats):
    target = work / f"run{run}"
    start = time.perf_counter()
    result = TASK.analyze(study, target, model=models, device="cpu")
    wall = time.perf_counter() - start
    stages = dict(result.get("timing") or {})
    stages["wall"] = wall
    runs.append(stages)
with open("/proc/self/status") as status:
    out["peak_rss_bytes"] = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
out.update(runs=runs, vertebrae=len(result["vertebrae"]), levels=len(result["levels"]),
           outputs=sorted(p.name for p in (work / f"run{repeats}").iterdir()))
shutil.rmtree(work, ignore_errors=True)
print(json.dumps(out))
"""

STAGES = ("read", "segment_sagittal", "label", "segment_axial", "levels", "measure", "classify_vertebrae",
          "classify_levels", "write")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.workdir is None:
        from mskai.paths import cache_dir

        args.workdir = cache_dir("benchmarks", "cervical")
    args.workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _PREPARE, str(args.workdir), str(CASE_SEED)], check=True)
    study = (args.workdir / "case" / "done").read_text().strip()
    child = subprocess.run([sys.executable, "-c", _MEASURE, study, str(args.repeats),
                            str(args.workdir / "case" / "labels")], check=True, capture_output=True, text=True)
    out = json.loads(child.stdout.strip().splitlines()[-1])
    runs = out["runs"]
    warm = runs[1:] or runs
    best = min(warm, key=lambda r: r["wall"])
    print(f"phantom study (paper size): {out['vertebrae']} vertebrae, {out['levels']} levels; threads "
          f"{out['threads']}; parameters (M) {json.dumps(out['parameters_m'])} (random weights)")
    print(f"load_s={out['load_s']:.2f} (once per process, not in the study time)")
    for stage in STAGES:
        print(f"  {stage:<19} best {best.get(stage, float('nan')):.3f} s   cold {runs[0].get(stage, float('nan')):.3f} s")
    print(f"outputs: {', '.join(out['outputs'])}")
    print(f"cold {runs[0]['wall']:.2f} s, warm median {statistics.median(r['wall'] for r in warm):.2f} s, "
          f"best {best['wall']:.2f} s")
    print(f"study_s={best['wall']:.2f} peak_rss_gb={out['peak_rss_bytes'] / 1e9:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
