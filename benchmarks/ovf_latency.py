"""Benchmark: SpineOVF from a 512x512x300 CT DICOM series to a verdict, on the CPU.

    python benchmarks/ovf_latency.py [--workdir DIR] [--repeats 3] [--compile]

Data (written once into ``DIR``, default the mskai cache ``benchmarks/ovf``):
the paper-size spine phantom ``make_spine_case(2024, fracture=True,
size="paper", orientation="axial")`` (512 x 512 x 300, 0.7 mm pixels, 1 mm
slices) as a DICOM series, and a bundle of the paper-size model (ResNet34
extractor with the 512->32->1 head + LSTM-256, about 21 M parameters) with
**random weights**: timing does not depend on the values, so the verdict is
meaningless here and only its latency is measured.

Everything is measured in one fresh child process (so that its peak memory is
its own), with PyTorch's default thread count:

* the model bundle is loaded once (as ``mskai batch`` does); its time is
  reported apart (``load_s``), not in the verdict;
* the pipeline (``mskai.io.read_image`` then
  ``mskai.ovf.pipeline.analyze_image`` with ``evidence="none"``) runs once
  cold and ``--repeats`` times warm; stages: ``read``, ``reformat`` (spine
  centre, sagittal reformat of the central 5 %), ``preprocess`` (224 x 224
  tensors), ``model`` (the slice extractor on all slices in one batch) and
  ``aggregate`` (the four aggregators, timed alone on features of the same
  shape and subtracted from the pipeline's model stage);
* ``verdict_s``: read -> verdict, best warm run (the runs differ by the load
  other processes put on the machine; cold and median are printed too, and
  the process's CPU time);
* achieved GFLOP/s of the model stage: FLOPs of one extractor forward over the
  scan's slices counted with ``torch.utils.flop_counter.FlopCounterMode``
  (a multiply-add = 2 FLOPs) divided by the model stage's seconds, against the
  float32 GEMM rate ``torch.mm`` of two 4096 x 4096 matrices reaches in the
  same process (best of several, measured before and after the model runs):
  ``model_gemm_fraction``;
* the extractor alone in other forms on the same input tensor (PyTorch eager,
  channels-last, ONNX Runtime when installed, ``torch.compile`` with
  ``--compile``), each with its GEMM fraction and its largest absolute
  difference from eager PyTorch (checked against
  :data:`mskai.ovf.fast_inference.TOLERANCE`);
* ``evidence_s``: occlusion maps of the three most suspicious slices
  (``explain(analysis, "top3")``, the pipeline's default evidence);
* ``peak_rss_gb``: the child's peak resident memory (``VmHWM``) after the
  pipeline and the evidence, before the GEMM and the variants.

When CUDA is available the model stage per scan is also timed on the GPU
(paper: < 0.02 s per scan).  The last line is
``verdict_s=... model_gemm_fraction=... evidence_s=... peak_rss_gb=...``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASE_SEED = 2024
BUNDLE_ID = "ovf-paper-random-weights"
GEMM_SIZE = 4096

_PREPARE = r"""
import sys, torch
from pathlib import Path
from mskai.ovf.model import build_model, save_ovf_bundle, PAPER_ARCHITECTURE
from mskai.ovf.phantoms import make_spine_case, write_spine_case
workdir, seed, bundle_id = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if not (workdir / "bundle" / "metadata.json").is_file():
    torch.manual_seed(0)
    save_ovf_bundle(workdir / "bundle", build_model(PAPER_ARCHITECTURE), architecture=PAPER_ARCHITECTURE,
                    bundle_id=bundle_id, version="0.0.0",
                    description="paper-size SpineOVF model with RANDOM weights, for timing only")
if len(list((workdir / "case" / "dicom").glob("*"))) != 300:
    case = make_spine_case(seed, fracture=True, size="paper", orientation="axial")
    assert case.image.shape == (300, 512, 512), case.image.shape
    write_spine_case(case, workdir / "case", fmt="dicom")
"""

_MEASURE = r"""
import copy, json, statistics, sys, time
import numpy as np, torch
from torch.utils.flop_counter import FlopCounterMode
from mskai.io import read_image
from mskai.ovf.model import load_ovf_bundle
from mskai.ovf.pipeline import analyze_image, explain
from mskai.results import StageTimer

dicom, bundle = sys.argv[1], sys.argv[2]
repeats, try_compile, gemm_size = int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
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

def peak_rss_bytes():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

start = time.perf_counter()
loaded = load_ovf_bundle(bundle, device="cpu")
out["load_s"] = time.perf_counter() - start
network, metadata = loaded
fast_extract = getattr(network, "fast_extract", None)
out["inference"] = metadata.get("inference") or ("ONNX Runtime" if fast_extract is not None else "PyTorch eager")

runs = []
for run in range(1 + repeats):
    timer = StageTimer()
    start, cpu_start = time.perf_counter(), time.process_time()
    with timer("read"):
        image = read_image(dicom)
    analysis = analyze_image(image, model=loaded, device="cpu", evidence="none", timer=timer)
    wall = time.perf_counter() - start
    stages = timer.as_dict()
    stages["wall"] = wall
    stages["cpu"] = time.process_time() - cpu_start
    runs.append(stages)
    if run < repeats:
        del analysis, image
n_slices = int(analysis.tensor.shape[0])
out.update(shape=list(image.shape), n_slices=n_slices, verdict=analysis.result["verdict"],
           probability=analysis.result["probability"])

features = torch.randn(1, n_slices, network.extractor.fc1.out_features)
probabilities = torch.rand(1, n_slices)
with torch.inference_mode():
    aggregate_s = best_of(lambda: [aggregator(features, probabilities)
                                   for aggregator in network.aggregators.values()], 5)
with FlopCounterMode(display=False) as counter, torch.inference_mode():
    reference = network.extractor(analysis.tensor)
flops = counter.get_total_flops()
out.update(aggregate_s=aggregate_s, gflop=flops / 1e9, runs=runs)

start = time.perf_counter()
explain(analysis, "top3")
out["evidence_s"] = time.perf_counter() - start
out["evidence_slices"] = analysis.result["evidence_settings"]["slices"]
out["peak_rss_bytes"] = peak_rss_bytes()

gemm = [gemm_rate()]
tensor = analysis.tensor
variants = {}
def variant(name, function):
    function()
    seconds = best_of(function, 3)
    logits, feats = function()[:2]
    difference = max(float((logits.float() - reference[0]).abs().max()),
                     float((feats.float() - reference[1]).abs().max()))
    variants[name] = {"seconds": seconds, "gflops": flops / seconds / 1e9, "max_abs_diff": difference}

with torch.inference_mode():
    variant("PyTorch eager", lambda: network.extractor(tensor))
    channels_last = copy.deepcopy(network.extractor).to(memory_format=torch.channels_last)
    tensor_cl = tensor.contiguous(memory_format=torch.channels_last)
    variant("PyTorch channels-last", lambda: channels_last(tensor_cl))
    del channels_last
try:
    from mskai.ovf.fast_inference import onnxruntime_available, ort_extractor
    if onnxruntime_available():
        start = time.perf_counter()
        fast, _ = ort_extractor(network.extractor, int(tensor.shape[-1]))
        out["ort_setup_s"] = time.perf_counter() - start
        variant("ONNX Runtime", lambda: fast(tensor))
        del fast
    else:
        out["ort_missing"] = True
except Exception as error:
    out["ort_error"] = " ".join(str(error).split())[:300]
if try_compile:
    with torch.no_grad():
        compiled = torch.compile(copy.deepcopy(network.extractor).to(memory_format=torch.channels_last))
        start = time.perf_counter(); compiled(tensor_cl); out["compile_s"] = time.perf_counter() - start
        variant("torch.compile (inductor, channels-last)", lambda: compiled(tensor_cl))
gemm.append(gemm_rate())
out.update(gemm_gflops=max(gemm), gemm_all=gemm, variants=variants)

if torch.cuda.is_available():
    gpu = copy.deepcopy(network.extractor).cuda().eval()
    x = tensor.cuda()
    with torch.inference_mode():
        gpu(x); torch.cuda.synchronize()
        def step():
            gpu(x); torch.cuda.synchronize()
        out["gpu_model_s"] = best_of(step, 10)
        out["gpu_name"] = torch.cuda.get_device_name()
print(json.dumps(out))
"""


def prepare(workdir: Path) -> None:
    """Write the phantom series and the random-weights bundle unless present."""
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "bundle" / "metadata.json").is_file() and \
            len(list((workdir / "case" / "dicom").glob("*"))) == 300:
        return
    print(f"writing the 512x512x300 spine phantom (DICOM) and the paper-size bundle to {workdir} ...",
          flush=True)
    subprocess.run([sys.executable, "-c", _PREPARE, str(workdir), str(CASE_SEED), BUNDLE_ID], check=True)


def measure(workdir: Path, repeats: int, try_compile: bool) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(workdir / "case" / "dicom"), str(workdir / "bundle"), str(repeats),
         "1" if try_compile else "0", str(GEMM_SIZE)], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: mskai cache)")
    parser.add_argument("--repeats", type=int, default=3, help="warm pipeline runs after the cold one")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    args = parser.parse_args(argv)
    if args.workdir is None:
        from mskai.paths import cache_dir
        workdir = cache_dir("benchmarks", "ovf")
    else:
        workdir = args.workdir
    prepare(workdir)
    from mskai.ovf.fast_inference import TOLERANCE

    r = measure(workdir, max(1, args.repeats), args.compile)
    gemm = r["gemm_gflops"]
    warm = r["runs"][1:]
    best = min(warm, key=lambda run: run["wall"])
    median_wall = sorted(run["wall"] for run in warm)[len(warm) // 2]
    model_s = best["model"] - r["aggregate_s"]
    model_gflops = r["gflop"] / model_s
    print(f"input: CT {r['shape'][2]}x{r['shape'][1]}x{r['shape'][0]} DICOM, {r['n_slices']} sagittal slices "
          f"analysed; paper-size model with RANDOM weights (timing only; verdict {r['verdict']}, "
          f"p = {r['probability']:.3f}); CPU threads {r['threads']}; model stage runs on {r['inference']}")
    print(f"model bundle load (once per process, not in the verdict time): {r['load_s']:.2f} s")
    print(f"verdict: best warm {best['wall']:.2f} s, median warm {median_wall:.2f} s, cold (first run) "
          f"{r['runs'][0]['wall']:.2f} s; CPU time of the best warm run {best['cpu']:.2f} s on "
          f"{r['threads']} threads")
    print("stages of the best warm run (s): " + ", ".join(
        f"{name} {value:.3f}" for name, value in (("read", best["read"]), ("reformat/select", best["reformat"]),
                                                   ("preprocess", best["preprocess"]), ("model", model_s),
                                                   ("aggregate", r["aggregate_s"]))))
    print(f"model stage: {r['gflop']:.1f} GFLOP in {model_s:.3f} s = {model_gflops:.1f} GFLOP/s; float32 GEMM "
          f"{gemm:.1f} GFLOP/s (runs: {', '.join(f'{g:.0f}' for g in r['gemm_all'])}) -> "
          f"{model_gflops / gemm:.1%} of GEMM")
    for name, variant in r["variants"].items():
        within = "ok" if variant["max_abs_diff"] <= TOLERANCE else "EXCEEDS TOLERANCE"
        print(f"  extractor as {name:40s} {variant['seconds']:.3f} s  {variant['gflops']:6.1f} GFLOP/s  "
              f"{variant['gflops'] / gemm:6.1%} of GEMM  max |diff| vs eager {variant['max_abs_diff']:.1e} "
              f"({within}, tolerance {TOLERANCE:g})")
    if "ort_setup_s" in r:
        print(f"  ONNX Runtime setup (export once, cached; session; check): {r['ort_setup_s']:.2f} s")
    if r.get("ort_missing"):
        print("  ONNX Runtime: not installed (pip install onnxruntime onnx)")
    if r.get("ort_error"):
        print(f"  ONNX Runtime: failed: {r['ort_error']}")
    if "compile_s" in r:
        print(f"  torch.compile: first call (compilation) {r['compile_s']:.1f} s")
    print(f"evidence: occlusion maps of the 3 most suspicious slices {r['evidence_slices']}: "
          f"{r['evidence_s']:.2f} s")
    if "gpu_model_s" in r:
        print(f"GPU {r['gpu_name']}: model stage {r['gpu_model_s'] * 1000:.1f} ms per scan (paper: < 20 ms)")
    else:
        print("GPU: none here; the model stage per scan on a GPU was not measured")
    peak_gb = r["peak_rss_bytes"] / 1e9
    print(f"peak RSS of the measuring process: {peak_gb:.2f} GB")
    print(f"verdict_s={best['wall']:.3f} model_gemm_fraction={model_gflops / gemm:.3f} "
          f"evidence_s={r['evidence_s']:.3f} peak_rss_gb={peak_gb:.3f}")


if __name__ == "__main__":
    main()
