"""Writing results per SPEC §0.2: ``result.json`` and overlay PNGs.

Every analysis builds its result with :func:`new_result`, times its stages
with :class:`StageTimer`, and writes with :func:`write_result`, so the keys
the CLI, the tests and the Slicer modules rely on are produced in one place.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image as PILImage, ImageDraw

from mskai import __version__
from mskai.image import Image

REQUIRED_KEYS = ("task", "verdict", "model", "input", "warnings", "evidence", "timing")
COORDINATE_SYSTEM = "LPS"


class StageTimer:
    """Seconds per named stage: ``with timer("read"): ...``; ``timer.as_dict()``."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + time.perf_counter() - start

    def as_dict(self) -> dict[str, float]:
        d = {k: round(v, 4) for k, v in self._seconds.items()}
        d["total"] = round(sum(self._seconds.values()), 4)
        return d


def model_is_demo(model: Mapping[str, Any]) -> bool:
    """Whether a result's ``model`` block, or any of its parts (WristQC's networks, CervicalMR's
    seven bundles), is a demonstration model."""
    return bool(model.get("demo")) or any(isinstance(part, Mapping) and model_is_demo(part) for part in model.values())


def model_disclaimers(result: Mapping[str, Any]) -> list[str]:
    """The disclaimers of a result's demonstration model (its own and its parts', once each;
    the standard one when no part carries it); empty when no part is a demonstration model."""
    from mskai import DEMO_DISCLAIMER

    model = result.get("model")
    if not isinstance(model, Mapping) or not model_is_demo(model):
        return []
    found: list[str] = []

    def visit(value: Mapping[str, Any]) -> None:
        text = value.get("disclaimer")
        if text and str(text) not in found:
            found.append(str(text))
        for part in value.values():
            if isinstance(part, Mapping):
                visit(part)

    visit(model)
    return found or [DEMO_DISCLAIMER]


def new_result(task: str, image: Image | None = None, model: dict | None = None) -> dict[str, Any]:
    """A result skeleton with every required key; warnings met while reading are carried over."""
    return {
        "task": task,
        "mskai_version": __version__,
        "verdict": None,
        "model": model,
        "input": image.describe() if image is not None else None,
        "coordinate_system": COORDINATE_SYSTEM,
        "warnings": list(image.warnings) if image is not None else [],
        "evidence": [],
        "timing": {},
    }


def to_jsonable(value: Any, nan_to_null: bool = True) -> Any:
    """``value`` with dataclasses, mappings, numpy scalars and arrays, tuples and paths
    turned into JSON types (keys become strings).  With ``nan_to_null`` NaN and
    infinities become None (strict JSON: ``result.json``, metrics); without, they stay
    floats (phantom truth files, read back by Python)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), nan_to_null)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, nan_to_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, nan_to_null) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), nan_to_null)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if nan_to_null and (math.isnan(f) or math.isinf(f)) else f
    if isinstance(value, Path):
        return str(value)
    return value


def write_final_result(output_dir: Path, result: dict[str, Any], outputs: dict[str, Any],
                       started: float) -> dict[str, Any]:
    """Write ``result.json`` as the last of an analysis' files: ``result["outputs"]``
    names the files, the seconds since ``started`` (``time.perf_counter()``) are the
    ``"write"`` stage.  Returns the result."""
    result["outputs"] = outputs
    add_stage_seconds(result, "write", time.perf_counter() - started)
    write_result(output_dir, result)
    return result


def add_stage_seconds(result: dict[str, Any], stage: str, seconds: float) -> None:
    """Record a stage timed outside the analysis (e.g. ``"write"``) in ``result["timing"]``
    and add it to the total."""
    timing = dict(result.get("timing") or {})
    timing[stage] = round(seconds, 4)
    timing["total"] = round(timing.get("total", 0.0) + seconds, 4)
    result["timing"] = timing


def write_result(output_dir: str | Path, result: dict[str, Any], name: str = "result.json") -> Path:
    """Validate and write ``result.json`` atomically (NaN/inf become null)."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"result is missing required keys: {', '.join(missing)}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".result-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(to_jsonable(result), fh, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def window_to_uint8(plane: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map a 2D array to 0..255 with ``window=(center, width)``; default: 1st-99th percentile."""
    plane = np.asarray(plane, dtype=np.float32)
    if window is None:
        finite = plane[np.isfinite(plane)]
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    else:
        center, width = window
        lo, hi = center - width / 2.0, center + width / 2.0
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((np.nan_to_num(plane, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def save_overlay_png(path: str | Path, plane: np.ndarray, *,
                     window: tuple[float, float] | None = None,
                     heatmap: np.ndarray | None = None, heatmap_range: tuple[float, float] = (0.0, 1.0),
                     heatmap_alpha: float = 0.45, colormap: str = "inferno",
                     points: Iterable[tuple[float, float, str]] = (),
                     boxes: Iterable[tuple[float, float, float, float, str]] = (),
                     lines: Iterable[Sequence[float]] = (),
                     pixel_aspect: float = 1.0) -> Path:
    """Save a grey image with evidence drawn on it as PNG.

    ``plane`` is (rows, columns); ``heatmap`` the same shape, scaled by
    ``heatmap_range`` and blended where it is above the range's low end;
    ``points`` are (x=column, y=row, label); ``boxes`` (x0, y0, x1, y1, label);
    ``lines`` (x0, y0, x1, y1).  ``pixel_aspect`` = row spacing / column
    spacing, so that anisotropic pixels are shown with their true shape.
    """
    from matplotlib import colormaps  # only the colour table, not pyplot

    grey = window_to_uint8(plane, window)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if heatmap is not None:
        heat = np.asarray(heatmap, dtype=np.float32)
        if heat.shape != grey.shape:
            raise ValueError(f"heatmap shape {heat.shape} differs from image shape {grey.shape}")
        lo, hi = heatmap_range
        h = np.clip((np.nan_to_num(heat, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        colour = colormaps[colormap](h)[..., :3] * 255.0
        alpha = (heatmap_alpha * (h > 0.0))[..., None]
        rgb = rgb * (1.0 - alpha) + colour * alpha
    img = PILImage.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    scale_y = float(pixel_aspect) if pixel_aspect > 0 else 1.0
    if abs(scale_y - 1.0) > 1e-3:
        img = img.resize((img.width, max(1, round(img.height * scale_y))), PILImage.BILINEAR)
    draw = ImageDraw.Draw(img)
    radius = max(3, round(min(img.size) / 80))
    for x0, y0, x1, y1 in lines:
        draw.line([(x0, y0 * scale_y), (x1, y1 * scale_y)], fill=(0, 220, 255), width=2)
    for x0, y0, x1, y1, label in boxes:
        draw.rectangle([x0, y0 * scale_y, x1, y1 * scale_y], outline=(255, 220, 0), width=2)
        if label:
            draw.text((x0, max(0, y0 * scale_y - 12)), str(label), fill=(255, 220, 0))
    for x, y, label in points:
        cy = y * scale_y
        draw.ellipse([x - radius, cy - radius, x + radius, cy + radius], outline=(0, 255, 0), width=2)
        if label:
            draw.text((x + radius + 2, cy - radius), str(label), fill=(0, 255, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
