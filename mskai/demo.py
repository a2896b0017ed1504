"""``mskai demo``: run MSKAI on the bundled sample cases.

The sample cases are phantoms generated on first use with a fixed seed and
cached under ``$MSKAI_HOME/cache/samples`` (DESIGN.md: not committed as
binaries).  Without a task name the demo runs the shared path every analysis
uses -- DICOM series reading with exact geometry, reformatting to sagittal
and axial planes -- and then each task's own demo, reporting the tasks whose
analysis is not available yet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mskai.errors import MskaiError, NotAvailableError
from mskai.files import replace_folder
from mskai.paths import cache_dir
from mskai.progress import log
from mskai.results import StageTimer, new_result, save_overlay_png, write_result
from mskai.tasks import get_task, task_names

SAMPLE_SEED = 20261121
SAMPLE_VERSION = "ct-phantom-v1"
BONE_WINDOW = (400.0, 1800.0)


def sample_ct_series() -> Path:
    """The sample CT phantom as a DICOM series folder (generated once, then cached)."""
    from mskai.phantoms import ct_body_phantom, write_dicom_series

    folder = cache_dir("samples", SAMPLE_VERSION)
    marker = folder / ".complete"
    if not marker.exists():
        log(f"generating the sample CT phantom in {folder} (once)")
        image = ct_body_phantom(shape_kji=(96, 192, 192), spacing=(1.0, 1.0, 2.5), seed=SAMPLE_SEED)
        write_dicom_series(image, folder / "series", patient={"PatientID": "MSKAI-DEMO-CT",
                                                             "PatientName": "Phantom^CT"},
                           series_description="MSKAI sample CT phantom")
        marker.write_text("ok\n")
    return folder / "series"


def run_io_geometry_demo(output_dir: Path) -> dict[str, Any]:
    """Read the sample series, reformat it, write ``result.json`` and two overlay PNGs."""
    from mskai.geometry import index_to_lps, reformat
    from mskai.io import read_image

    timer = StageTimer()
    with timer("prepare_sample"):
        series = sample_ct_series()
    with timer("read"):
        image = read_image(series)
    with timer("reformat"):
        sagittal = reformat(image, "sagittal", spacing_mm=1.0)
        axial = reformat(image, "axial", spacing_mm=1.0)
    centre_ijk = (np.asarray(image.size) - 1) / 2.0
    centre_lps = index_to_lps(image, centre_ijk[None])[0]
    with timer("write"):
        mid_sag = sagittal.array[sagittal.shape[0] // 2]
        mid_ax = axial.array[axial.shape[0] // 2]
        pngs = [
            save_overlay_png(output_dir / "sagittal_mid.png", mid_sag, window=BONE_WINDOW),
            save_overlay_png(output_dir / "axial_mid.png", mid_ax, window=BONE_WINDOW),
        ]
    result = new_result("io-geometry", image)
    result["verdict"] = "read and reformatted"
    result["evidence"] = [{"label": "volume centre", "position_mm": centre_lps.round(3).tolist(),
                           "voxel_index": centre_ijk.tolist()}]
    result["reformatted"] = {
        "sagittal": {"size_ijk": list(sagittal.size), "spacing_mm": list(sagittal.spacing)},
        "axial": {"size_ijk": list(axial.size), "spacing_mm": list(axial.spacing)},
    }
    result["overlays"] = [p.name for p in pngs]
    result["outputs"] = {"result": "result.json", "overlays": result["overlays"]}
    result["timing"] = timer.as_dict()
    write_result(output_dir, result)
    return result


def run_demo(output_dir: str | Path, task: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Run one task's demo, or (``task=None``) the shared path and every task's demo;
    the output folder is checked first."""
    from mskai.files import check_output_folder

    output_dir = check_output_folder(output_dir)
    if task is not None:
        task_result = get_task(task).demo(output_dir / task, device=device)
        log(f"{task}: {task_result.get('verdict', 'ok')} -> {output_dir / task}")
        return task_result
    summary: dict[str, Any] = {}
    with replace_folder(output_dir / "io-geometry", announce=log) as work:  # the whole result, or the one before
        result = run_io_geometry_demo(work)
    log(f"io-geometry: read {result['input']['size_ijk']} voxels at {result['input']['spacing_mm']} mm, "
        f"reformatted to sagittal and axial -> {output_dir / 'io-geometry'}")
    summary["io-geometry"] = "ok"
    for name in task_names():
        try:
            task_result = get_task(name).demo(output_dir / name, device=device)
            summary[name] = task_result.get("verdict", "ok")
            log(f"{name}: {summary[name]} -> {output_dir / name}")
        except NotAvailableError as err:
            summary[name] = f"not available yet: {err}"
            log(f"{name}: not available yet")
        except MskaiError as err:  # e.g. a missing or damaged demo bundle: say so, run the others
            summary[name] = f"failed: {err}"
            log(f"{name}: failed: {err}")
    return summary


def demo_failed(summary: dict[str, Any]) -> bool:
    """True when any demo that is available failed (the CLI then exits non-zero)."""
    return any(str(v).startswith("failed:") for v in summary.values())
