"""Benchmark: SacroiliitisCT from a 512x512 pelvic CT DICOM series to a verdict, on the CPU.

    python benchmarks/sij_latency.py [--workdir DIR] [--repeats 3]

Data (written once into ``DIR``, default the mskai cache ``benchmarks/sij``): the
paper-size pelvis phantom ``make_sij_case(2025, grades=(3, 2), size="paper")``
(512 x 512, about 200 slices) as a DICOM series, and a bundle of the paper-size
MS-2.5D-Net (ResNet34 + ASPP + RFPN, about 30 M parameters, 160 x 160 px crops) with
**random weights**: timing does not depend on the values, so the verdict is
meaningless here and only its latency is measured.

Everything is measured in one fresh child process (its peak memory is its own), with
PyTorch's default thread count:

* the bundle is loaded once (as ``mskai batch`` does), reported apart (``load_s``);
* ``mskai.io.read_image`` then ``mskai.sij.pipeline.analyze_image`` run once cold and
  ``--repeats`` times warm; stages ``read``, ``joints`` (the range proposal),
  ``preprocess`` (the crops), ``model`` (every crop through the network), ``postprocess``
  (vote, probability, heatmap on the CT grid);
* ``verdict_s``: read -> verdict, best warm run (cold and median are printed too);
* the model stage's GFLOP/s: FLOPs of the network over the scan's crops counted with
  ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add = 2 FLOPs) divided by the
  model stage's seconds, against the float32 GEMM rate of ``torch.mm`` on two
  4096 x 4096 matrices in the same process (best of 5, before and after the pipeline):
  ``model_gemm_fraction``.  oneDNN runs many 3 x 3 convolutions with fewer
  multiplications than the direct method counts (Winograd), so the fraction can pass 1;
* ``peak_rss_gb``: the child's peak resident memory (``VmHWM``) after the pipeline.

Goal on the 2-core CPU: verdict <= 3 s, model stage >= 50 % of GEMM, peak RSS <= 2.5 GB.
The last line is ``verdict_s=... model_gemm_fraction=... peak_rss_gb=...``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CASE_SEED = 2025
GEMM_SIZE = 4096

_PREPARE = r"""
import sys, torch
from pathlib import Path
from mskai.sij.model import build_model, save_sij_bundle, PAPER_ARCHITECTURE
from mskai.sij.preprocess import PAPER_PREPROCESSING as P
from mskai.sij.phantoms import make_sij_case, write_sij_case
workdir, seed = Path(sys.argv[1]), int(sys.argv[2])
if not (workdir / "bundle" / "metadata.json").is_file():
    torch.manual_seed(0)
    save_sij_bundle(workdir / "bundle", build_model(PAPER_ARCHITECTURE), architecture=PAPER_ARCHITECTURE,
                    alpha=0.5, size=P.size, spacing_mm=P.spacing_mm, window_hu=list(P.window),
                    preprocessing=P.to_dict(), bundle_id="sij-paper-random-weights", version="0.0.0",
                    description="paper-size MS-2.5D-Net with RANDOM weights, for timing only")
if not (workdir / "case" / "done").is_file():
    case = make_sij_case(seed, grades=(3, 2), size="paper")
    files = write_sij_case(case, workdir / "case", fmt="dicom")
    (workdir / "case" / "done").write_text(str(files["image"]))
"""

_MEASURE = r"""
import json, sys, time
import torch
from torch.utils.flop_counter import FlopCounterMode
from mskai.io import read_image
from mskai.results import StageTimer
from mskai.sij.model import load_sij_bundle
from mskai.sij.pipeline import analyze_image

dicom, bundle, repeats, gemm_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {"threads": torch.get_num_threads()}

def best_of(function, n):
    times = []
    for _ in range(n):
        start = time.perf_counter(); function(); times.append(time.perf_counter() - start)
    return min(times)

def gemm_rate(n=5):
    a, b = torch.randn(gemm_size, gemm_size), torch.randn(gemm_size, gemm_size)
    torch.mm(a, b)
    return 2 * gemm_size ** 3 / best_of(lambda: torch.mm(a, b), n) / 1e9

gemm = [gemm_rate()]
start = time.perf_counter()
loaded = load_sij_bundle(bundle, device="cpu")
out["load_s"] = time.perf_counter() - start
runs = []
for run in range(1 + repeats):
    timer = StageTimer()
    start = time.perf_counter()
    with timer("read"):
        image = read_image(dicom)
    analysis = analyze_image(image, model=loaded, device="cpu", timer=timer)
    stages = timer.as_dict()
    stages["wall"] = time.perf_counter() - start
    runs.append(stages)
with open("/proc/self/status") as status:
    out["peak_rss_bytes"] = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
tensor = torch.from_numpy(analysis.stacks.tensor.reshape(-1, 1, *analysis.stacks.tensor.shape[2:]))
with FlopCounterMode(display=False) as counter, torch.inference_mode():
    loaded[0](tensor[:2])
out.update(shape=list(image.shape), n_crops=int(tensor.shape[0]), gflop=counter.get_total_flops() / 2 * tensor.shape[0] / 1e9,
           verdict=analysis.result["verdict"], range_mm=analysis.result["slice_range_mm"],
           range_source=analysis.result["range_source"], runs=runs)
gemm.append(gemm_rate())
out.update(gemm_gflops=max(gemm), gemm_all=gemm)
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.workdir is None:
        from mskai.paths import cache_dir

        args.workdir = cache_dir("benchmarks", "sij")
    args.workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _PREPARE, str(args.workdir), str(CASE_SEED)], check=True)
    dicom = (args.workdir / "case" / "done").read_text().strip()
    child = subprocess.run([sys.executable, "-c", _MEASURE, dicom, str(args.workdir / "bundle"),
                            str(args.repeats), str(GEMM_SIZE)], check=True, capture_output=True, text=True)
    out = json.loads(child.stdout.strip().splitlines()[-1])
    runs = out["runs"]
    warm = runs[1:] or runs
    best = min(warm, key=lambda r: r["wall"])
    model_gflops = out["gflop"] / best["model"]
    print(f"CT {out['shape']} (k, j, i); range {out['range_mm']} mm ({out['range_source']}); "
          f"{out['n_crops']} crops; threads {out['threads']}; verdict {out['verdict']} (random weights)")
    print(f"load_s={out['load_s']:.2f} (once per process, not in the verdict)")
    for stage in ("read", "joints", "preprocess", "model", "postprocess"):
        print(f"  {stage:<11} best {best.get(stage, float('nan')):.3f} s   cold {runs[0].get(stage, float('nan')):.3f} s")
    print(f"cold {runs[0]['wall']:.2f} s, warm median {statistics.median(r['wall'] for r in warm):.2f} s, "
          f"best {best['wall']:.2f} s")
    print(f"model: {out['gflop']:.1f} GFLOP in {best['model']:.3f} s = {model_gflops:.1f} GFLOP/s; "
          f"GEMM {out['gemm_gflops']:.1f} GFLOP/s (runs {', '.join(f'{g:.0f}' for g in out['gemm_all'])})")
    print(f"verdict_s={best['wall']:.2f} model_gemm_fraction={model_gflops / out['gemm_gflops']:.2f} "
          f"peak_rss_gb={out['peak_rss_bytes'] / 1e9:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
