"""Benchmark: read a 512x512x300 CT DICOM series with mskai and with SimpleITK.

    python benchmarks/read_dicom_series.py [--workdir DIR] [--repeats 5]

The series (a CT phantom, int16 with RescaleIntercept -1024, explicit VR little
endian) is written once into ``DIR`` (default: the mskai cache).  Each reader
then runs in its own fresh subprocess per repeat, so that peak memory is its
own: ``mskai.io.read_image(folder)`` against SimpleITK's
``ImageSeriesReader`` over ``GetGDCMSeriesFileNames(folder)`` (both list and
sort the files in the timed part) with float32 output, the type mskai
returns, so that both do the same work.  Repeats alternate the two readers and
the best wall time of each is kept (CPU time is printed too: on a busy
machine it says more than the wall time).

Peak memory: the child records its resident set size (RSS) just before the
read and its peak RSS after it (``VmHWM`` of ``/proc/self/status``, which
unlike ``ru_maxrss`` does not inherit the parent's peak through fork+exec); ``peak_rss_over_volume`` is
(peak - before) / bytes of the float32 volume, i.e. the interpreter and
imported libraries are subtracted; the raw peak is printed too.  The last line
is ``mskai_s=... sitk_s=... ratio=... peak_rss_over_volume=...`` with
``ratio = mskai_s / sitk_s``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SHAPE_KJI = (300, 512, 512)
SPACING = (0.78125, 0.78125, 1.0)

_CHILD = r"""
import json, resource, sys, time
import numpy as np, psutil, SimpleITK as sitk
from mskai.io import read_image
reader_name, folder = sys.argv[1], sys.argv[2]
before = psutil.Process().memory_info().rss
start, cpu_start = time.perf_counter(), time.process_time()
if reader_name == "mskai":
    image = read_image(folder)
    shape, checksum = image.array.shape, float(image.array[::7, ::7, ::7].sum(dtype=np.float64))
else:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    image = reader.Execute()
    view = sitk.GetArrayViewFromImage(image)
    shape, checksum = view.shape, float(view[::7, ::7, ::7].sum(dtype=np.float64))
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
try:
    # VmHWM is this process image's own peak; ru_maxrss would also carry the
    # parent's peak across fork+exec.
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "rss_before": before, "peak_rss": peak,
                  "shape": list(shape), "checksum": checksum}))
"""


def ensure_series(folder: Path) -> Path:
    """Write the phantom series into ``folder`` unless a complete one is already there."""
    if len(list(folder.glob("*.dcm"))) == SHAPE_KJI[0]:
        return folder
    from mskai.phantoms import ct_body_phantom, write_dicom_series

    print(f"writing a {SHAPE_KJI[2]}x{SHAPE_KJI[1]}x{SHAPE_KJI[0]} CT phantom series to {folder} ...",
          flush=True)
    image = ct_body_phantom(SHAPE_KJI, SPACING, seed=0)
    write_dicom_series(image, folder, seed=0, series_description="benchmark CT phantom")
    return folder


def run_child(reader_name: str, folder: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, reader_name, str(folder)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{reader_name} child failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for the phantom series (default: mskai cache)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.workdir is None:
        from mskai.paths import cache_dir
        folder = cache_dir("benchmarks", "ct_512x512x300")
    else:
        folder = args.workdir / "ct_512x512x300"
        folder.mkdir(parents=True, exist_ok=True)
    ensure_series(folder)

    runs: dict[str, list[dict]] = {"mskai": [], "sitk": []}
    for repeat in range(args.repeats):
        for name in ("mskai", "sitk") if repeat % 2 == 0 else ("sitk", "mskai"):
            runs[name].append(run_child(name, folder))
            r = runs[name][-1]
            print(f"run {repeat + 1} {name:5s}: {r['seconds']:.3f} s (CPU {r['cpu_seconds']:.3f} s), peak RSS "
                  f"{r['peak_rss'] / 2**20:.0f} MiB (before read {r['rss_before'] / 2**20:.0f} MiB)",
                  flush=True)
    if runs["mskai"][0]["shape"] != runs["sitk"][0]["shape"] or \
            abs(runs["mskai"][0]["checksum"] - runs["sitk"][0]["checksum"]) > 1e-3:
        raise SystemExit("the two readers disagree on the voxels")

    volume_bytes = 4 * SHAPE_KJI[0] * SHAPE_KJI[1] * SHAPE_KJI[2]
    best = {name: min(r["seconds"] for r in results) for name, results in runs.items()}
    best_cpu = {name: min(r["cpu_seconds"] for r in results) for name, results in runs.items()}
    # Peak memory from the run with the lowest peak increase (all runs read the same data).
    m_peak = min(runs["mskai"], key=lambda r: r["peak_rss"] - r["rss_before"])
    s_peak = min(runs["sitk"], key=lambda r: r["peak_rss"] - r["rss_before"])
    mskai_over = (m_peak["peak_rss"] - m_peak["rss_before"]) / volume_bytes
    sitk_over = (s_peak["peak_rss"] - s_peak["rss_before"]) / volume_bytes
    print(f"float32 volume: {volume_bytes / 2**20:.0f} MiB")
    print(f"mskai: best {best['mskai']:.3f} s; peak RSS {m_peak['peak_rss'] / 2**20:.0f} MiB raw = "
          f"{m_peak['peak_rss'] / volume_bytes:.2f} x volume, {mskai_over:.2f} x volume above the "
          "RSS before the read")
    print(f"sitk : best {best['sitk']:.3f} s; peak RSS {s_peak['peak_rss'] / 2**20:.0f} MiB raw = "
          f"{s_peak['peak_rss'] / volume_bytes:.2f} x volume, {sitk_over:.2f} x volume above the "
          "RSS before the read (float32 output)")
    print(f"CPU seconds (all threads of the process, less sensitive to other load): mskai "
          f"{best_cpu['mskai']:.3f}, sitk {best_cpu['sitk']:.3f}, ratio "
          f"{best_cpu['mskai'] / best_cpu['sitk']:.3f}")
    print(f"mskai_s={best['mskai']:.3f} sitk_s={best['sitk']:.3f} "
          f"ratio={best['mskai'] / best['sitk']:.3f} peak_rss_over_volume={mskai_over:.3f}")


if __name__ == "__main__":
    main()
