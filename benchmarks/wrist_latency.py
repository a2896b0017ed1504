"""Benchmark: WristQC from a DICOM file to ``result.json`` at the paper's input sizes, on the CPU.

    python benchmarks/wrist_latency.py [--workdir DIR] [--repeats 3] [--images 8] [--workers 2]
                                       [--bundles FOLDER] [--pytorch]

Data (written once into ``DIR``, default the mskai cache ``benchmarks/wrist``):

* three bundles of the **paper-size networks with random weights** (the demo
  bundles are smaller): the artifact MobileNetV2 (width 1.0) at 960 x 1920, the
  GU2Net keypoint model of the paper recipe at 640 x 1280 and the view
  MobileNetV2 (width 0.5) at 320 x 640 (:func:`mskai.wrist.recipes.paper_recipe`).
  Timing does not depend on the weights' values, so the scores are meaningless
  here; the keypoint threshold is 0 so that every keypoint is decoded and the
  layout is scored as for a real image, and the artifact threshold is 0 so that
  every image "has an artifact" and its Grad-CAM heatmap is computed (the
  pipeline computes it only for images with an artifact: the worst case);
  ``--bundles FOLDER`` times other bundles instead (e.g. ``Resources/Models``
  for the demo bundles, or a trained model folder);
* ``--images`` wrist phantoms (AP and lateral alternating, about 1000 x 1600
  pixels at 0.15 mm) as DX DICOM files **without ViewPosition**, so that all
  three networks run for every image (the worst case; with the view in the tags
  the view classifier is skipped).

Networks: on ONNX Runtime's CPU provider when it is installed (the default of
:func:`mskai.wrist.models.load_wrist_models`; the exports are made once and cached
before timing), or PyTorch eager with ``--pytorch`` (for comparison); the line
``networks run on:`` says which.

Single image (one fresh child process, PyTorch's default thread count): the
models are loaded once (``load_s``, apart); then each image's path is timed
``read`` -> the pipeline's stages (``checks``, ``view``, ``keypoints``, ``tags``,
``marker``, ``artifact`` (probability and Grad-CAM map in one forward pass), ``layout``) ->
``write`` (``result.json``).  The first image is the cold run; ``image_s`` is
the best of ``--repeats`` warm runs over the images (the median is printed
too), with the process's CPU time beside the wall time (the load of other
processes shows as wall time well above the CPU time per thread).  The HTML + PDF report,
which is not needed for ``result.json``, is timed apart (``report_s``).
``peak_rss_gb`` is the largest peak resident memory (``VmHWM``) of the child
processes.

Batch throughput, as ``mskai batch wrist`` runs (no Grad-CAM heatmap, no
per-image report; models loaded once per process, not timed), in two ways:
one process using all cores through PyTorch's intra-op threads, and
``--workers`` processes with one thread each splitting the images (their
throughput is the images over the longest worker's processing time; they run
at the same time).  ``images_per_min`` is the better of the two (both are
printed).

Other processes on the machine change these figures: the load average is
printed first.  The last line is ``image_s=... images_per_min=... peak_rss_gb=...``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CASE_SEED = 7000

_PREPARE = r"""
import sys, torch
from pathlib import Path
from mskai.bundles import create_bundle
from mskai.wrist.networks import build_network
from mskai.wrist.phantoms import make_wrist_case, write_wrist_case
from mskai.wrist.recipes import paper_recipe
workdir, n_images, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
recipe = paper_recipe()
thresholds = {"artifact": {"artifact_probability": 0.0}, "keypoints": {"keypoint_confidence": 0.0},
              "view": {"lat_probability": 0.5}}
for component in ("artifact", "keypoints", "view"):
    folder = workdir / "bundles" / f"wrist-{component}-paper-random"
    if (folder / "metadata.json").is_file() or sys.argv[4] == "skip":
        continue
    part = recipe.component(component)
    torch.manual_seed(0)
    network = build_network(part.architecture)
    metadata = {"id": f"wrist-{component}-paper-random", "version": "0.0.0", "task": "wrist",
                "component": component, "architecture": part.architecture,
                "input": {"size": list(part.preprocessing_params().input_size)},
                "preprocessing": part.preprocessing, "thresholds": thresholds[component],
                "description": "paper-size WristQC network with RANDOM weights, for timing only"}
    create_bundle(folder, metadata, network.state_dict())
    print(component, sum(p.numel() for p in network.parameters()), "parameters", file=sys.stderr)
for index in range(n_images):
    path = workdir / "images" / f"wrist{index:03d}.dcm"
    if not path.is_file():
        case = make_wrist_case(seed + index, view="AP" if index % 2 == 0 else "LAT")
        write_wrist_case(case, workdir / "images", name=f"wrist{index:03d}", view_position=None)
"""

_COMMON = r"""
import json, sys, time
from pathlib import Path
def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
"""

_SINGLE = _COMMON + r"""
import statistics, torch
from mskai.io import read_image
from mskai.results import StageTimer, write_result
from mskai.wrist.pipeline import analyze_radiograph
from mskai.wrist.report import write_reports
from mskai.wrist.models import load_wrist_folder
workdir, repeats, bundles, accelerate = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
images = sorted((workdir / "images").glob("*.dcm"))
load_wrist_folder(bundles, device="cpu", accelerate=accelerate)  # exports the ONNX twins once (cached)
start = time.perf_counter()
models = load_wrist_folder(bundles, device="cpu", accelerate=accelerate)
load_s = time.perf_counter() - start
runs = []
for index in range(repeats + 1):
    path = images[index % len(images)]
    timer = StageTimer()
    start, cpu_start = time.perf_counter(), time.process_time()
    with timer("read"):
        image = read_image(path)
    analysis = analyze_radiograph(image, models=models, timer=timer)
    with timer("write"):
        write_result(workdir / "out" / path.stem, analysis.result)
    runs.append({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                 "stages": timer.as_dict(),
                 "size": analysis.result["image_size"]})
start = time.perf_counter()
write_reports(analysis.result, analysis.plane, workdir / "out" / path.stem, analysis.heatmap)
report_s = time.perf_counter() - start
print(json.dumps({"load_s": load_s, "cold": runs[0], "warm": runs[1:], "report_s": report_s,
                  "threads": torch.get_num_threads(), "peak_rss": peak_rss_bytes(),
                  "inference": models.inference}))
"""

_BATCH = _COMMON + r"""
import torch
from mskai.wrist.models import load_wrist_folder
from mskai.wrist.task import WristTask
workdir, threads, worker, n_workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
bundles, accelerate = Path(sys.argv[5]), sys.argv[6] == "1"
if threads > 0:
    torch.set_num_threads(threads)
images = sorted((workdir / "images").glob("*.dcm"))[worker::n_workers]
task = WristTask()
models = load_wrist_folder(bundles, device="cpu", accelerate=accelerate)
start, cpu_start = time.perf_counter(), time.process_time()
for path in images:
    task.run(path, workdir / "batch" / f"w{worker}" / path.stem, model=models, device="cpu", heatmap=False,
             reports=False, progress=lambda fraction, message: None)
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({"images": len(images), "seconds": seconds, "cpu_seconds": cpu_seconds,
                  "threads": torch.get_num_threads(),
                  "peak_rss": peak_rss_bytes()}))
"""


def _child(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a benchmark child process failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: the mskai cache)")
    parser.add_argument("--repeats", type=int, default=3, help="warm single-image runs")
    parser.add_argument("--images", type=int, default=8, help="images of the batch")
    parser.add_argument("--workers", type=int, default=2, help="processes of the multi-process batch")
    parser.add_argument("--bundles", type=Path, default=None,
                        help="time these bundles (a folder of the three) instead of the paper-size random ones")
    parser.add_argument("--pytorch", action="store_true",
                        help="run the networks on PyTorch eager, not ONNX Runtime (for comparison)")
    args = parser.parse_args()
    if args.workdir is None:
        from mskai.paths import cache_dir

        args.workdir = cache_dir("benchmarks", "wrist")
    workdir = args.workdir
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    bundles = args.bundles or workdir / "bundles"
    subprocess.run([sys.executable, "-c", _PREPARE, str(workdir), str(args.images), str(CASE_SEED),
                    "skip" if args.bundles else "make"], check=True)

    accelerate = 0 if args.pytorch else 1
    single = _result(_child(_SINGLE, workdir, args.repeats, bundles, accelerate))
    warm = sorted(single["warm"], key=lambda run: run["seconds"])
    best = warm[0]
    what = f"bundles of {args.bundles}" if args.bundles else "models (paper size, random weights)"
    print(f"{what} loaded in {single['load_s']:.2f} s; "
          f"{single['threads']} torch threads")
    print(f"networks run on: {single['inference']}")
    print(f"single image {best['size'][0]}x{best['size'][1]} px, DICOM -> result.json:")
    print(f"  cold {single['cold']['seconds']:.2f} s; warm best {best['seconds']:.2f} s "
          f"(CPU {best['cpu_seconds']:.2f} s on {single['threads']} threads), "
          f"median {warm[len(warm) // 2]['seconds']:.2f} s, slowest {warm[-1]['seconds']:.2f} s "
          f"({warm[-1]['size'][0]}x{warm[-1]['size'][1]} px)")
    for stage, seconds in best["stages"].items():
        if stage != "total":
            print(f"  {stage:>10s} {seconds:7.3f} s")
    print(f"  report (HTML + PDF, apart) {single['report_s']:.2f} s")

    one = _result(_child(_BATCH, workdir, 0, 0, 1, bundles, accelerate))
    one_rate = 60 * one["images"] / one["seconds"]
    print(f"batch, 1 process x {one['threads']} threads: {one['images']} images in {one['seconds']:.1f} s "
          f"(CPU {one['cpu_seconds']:.1f} s) = {one_rate:.1f} images/min")
    workers = [_child(_BATCH, workdir, 1, index, args.workers, bundles, accelerate)
               for index in range(args.workers)]
    parts = [_result(process) for process in workers]
    many_rate = 60 * sum(p["images"] for p in parts) / max(p["seconds"] for p in parts)
    print(f"batch, {args.workers} processes x 1 thread: {sum(p['images'] for p in parts)} images, longest worker "
          f"{max(p['seconds'] for p in parts):.1f} s (CPU {sum(p['cpu_seconds'] for p in parts):.1f} s in all) "
          f"= {many_rate:.1f} images/min")
    mode = "1 process" if one_rate >= many_rate else f"{args.workers} processes"
    peak = max([single["peak_rss"], one["peak_rss"]] + [p["peak_rss"] for p in parts]) / 1024**3
    batch_peak = max([one["peak_rss"]] + [p["peak_rss"] for p in parts]) / 1024**3
    print(f"images_per_min is the {mode} figure; peak RSS of any one process {peak:.2f} GB "
          f"(single image with the heatmap {single['peak_rss'] / 1024**3:.2f} GB, batch processes {batch_peak:.2f} GB)")
    print(f"image_s={best['seconds']:.3f} images_per_min={max(one_rate, many_rate):.1f} peak_rss_gb={peak:.2f}")


if __name__ == "__main__":
    main()
