"""Annotators' finding points -> per-vertebra and per-slice labels -> the
classifiers' dataset (SPEC §3 item 4).  No Slicer, no Qt.

The paper's annotators mark findings with dots: a 10-pixel-diameter dot at the
centre of a vertebra with hyperplasia (osteophytes) or a slip
(spondylolisthesis), at the centre of a herniated disc on its axial image, and
a 3-pixel dot on a thickened posterior longitudinal ligament (PLL) or
ligamentum flavum (LF).  In Slicer the dots are painted by CervicalMR's
"Finding point" Segment Editor effect into one segment per finding (named by
:func:`segment_name`, e.g. ``"finding: herniation (paracentral)"``), or placed
as Markups control points whose label names the finding
(:func:`parse_finding`).

Turning dots into labels (:func:`labels_from_annotations`)
-------------------------------------------------------------
Every dot becomes one point (a mask's connected component becomes its centroid).

* **Vertebra findings** (hyperplasia, slip) go to the vertebra whose label the
  point falls in on the vertebra label map; a point in no vertebra goes to the
  vertebra with the nearest voxel when it is within ``tolerance_mm`` (a dot
  at the edge of a segmentation that is a little too small), otherwise it is
  reported in ``unassigned``.  Every vertebra of the label map gets a label
  (negative unless a point names it).
* **Axial findings** (herniation with its type, PLL thickening, LF
  thickening) go to the axial slice they lie on: the stack and slice whose
  slab (the slice position plus or minus half the slice spacing, or
  ``slice_tolerance_mm``) contains the point and whose field contains it
  in-plane; when several stacks contain it, the one whose slice centre is
  nearest.  The slice's level comes from ``levels`` (the "Disc level"
  assignments: ``{"level", "stack", "slice_index"}``).  Every assigned slice
  gets a label (negative unless a point lies on it); a point on a slice
  without a level keeps ``level: None`` and a warning.

The dataset (:func:`export_dataset`)
------------------------------------
One CSV file per classifier in the dataset folder, UTF-8, with a header line;
paths are written relative to the dataset folder when they lie inside it,
else absolute.

``hyperplasia.csv`` and ``listhesis.csv`` — one row per vertebra:

    case_id, series, vertebra, label_mask, label_value, positive, split

``series`` is the sagittal series (T1 for hyperplasia, as in the paper; the
case's ``sagittal_t2`` or, without it, its T1 for listhesis), ``label_mask``
the vertebra label map file and ``label_value`` the vertebra's value in it,
``positive`` 1 or 0.

``herniation.csv``, ``pll.csv`` and ``lf.csv`` — one row per axial slice:

    case_id, series, stack, slice_index, level, disc_mask, positive, type, split

``series`` is the axial stack's series, ``slice_index`` the slice (k, from 0)
in that series, ``level`` e.g. ``C4/5`` (empty when unknown), ``disc_mask``
the stack's disc (or structure) mask file when given, ``type`` the herniation
type (``central``, ``paracentral``, ``foraminal``, or empty; only meaningful in
``herniation.csv``, empty in the others).

``split`` is ``train``, ``val`` or ``test``: the case's own when given, else a
fixed function of the case id (:func:`split_for_case`), so a case keeps its
split when the dataset is exported again with more cases.  ``dataset.json``
beside the CSVs records the format version and the row counts.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from mskai.datasets import parse_split
from mskai.errors import InputError
from mskai.image import Image

FORMAT_VERSION = 1
SEGMENT_PREFIX = "finding: "
HERNIATION_TYPES = ("central", "paracentral", "foraminal")
DISC_LEVELS = ("C2/3", "C3/4", "C4/5", "C5/6", "C6/7", "C7/T1")


@dataclass(frozen=True)
class Finding:
    key: str
    """``hyperplasia``, ``slip``, ``herniation``, ``pll`` or ``lf``."""
    title: str
    """The name shown to users and used in segment names."""
    target: str
    """``vertebra`` (labelled per vertebra) or ``axial`` (labelled per axial slice)."""
    diameter_px: int
    """The paper's dot diameter in pixels of the annotated image."""


FINDINGS: dict[str, Finding] = {
    "hyperplasia": Finding("hyperplasia", "hyperplasia", "vertebra", 10),
    "slip": Finding("slip", "slip", "vertebra", 10),
    "herniation": Finding("herniation", "herniation", "axial", 10),
    "pll": Finding("pll", "PLL thickening", "axial", 3),
    "lf": Finding("lf", "LF thickening", "axial", 3),
}
VERTEBRA_FINDINGS = tuple(key for key, finding in FINDINGS.items() if finding.target == "vertebra")
AXIAL_FINDINGS = tuple(key for key, finding in FINDINGS.items() if finding.target == "axial")
CSV_FILES = {"hyperplasia": "hyperplasia.csv", "slip": "listhesis.csv", "herniation": "herniation.csv",
             "pll": "pll.csv", "lf": "lf.csv"}
VERTEBRA_COLUMNS = ("case_id", "series", "vertebra", "label_mask", "label_value", "positive", "split")
SLICE_COLUMNS = ("case_id", "series", "stack", "slice_index", "level", "disc_mask", "positive", "type", "split")

# Words of a label or segment name -> finding key, tried in order (first match wins).
_FINDING_WORDS = (
    ("herniation", r"hernia|\bhnp\b|protrusion|extrusion"),
    ("pll", r"\bpll\b|posterior longitudinal"),
    ("lf", r"\blf\b|flav"),
    ("slip", r"slip|listhesis"),
    ("hyperplasia", r"hyperplasia|osteophyt|spur"),
)
_LEVEL_PATTERN = re.compile(r"^\s*C([2-7])\s*[/-]\s*(?:C?([3-7])|(T1))\s*$", re.IGNORECASE)

PointsOrMask = Union[Image, Sequence[Sequence[float]], np.ndarray]


def parse_finding(text: str) -> tuple[str, str | None]:
    """``(finding key, herniation type or None)`` named by a Markups label or a
    segment name, in any letter case: ``"hyperplasia"``, ``"osteophyte"``,
    ``"slip"``/``"listhesis"``, ``"herniation"`` with ``central``,
    ``paracentral`` or ``foraminal`` anywhere in the text, ``"PLL"``/``"PLL
    thickening"``, ``"LF"``/``"ligamentum flavum"``; a ``finding:`` prefix is
    allowed.  Raises ValueError for text that names no finding."""
    lowered = text.strip().lower()
    if lowered.startswith(SEGMENT_PREFIX.strip()):
        lowered = lowered[len(SEGMENT_PREFIX.strip()):]
    for key, pattern in _FINDING_WORDS:
        if re.search(pattern, lowered):
            herniation_type = None
            if key == "herniation":
                # "paracentral" contains "central": look for the longer words first.
                herniation_type = next((kind for kind in ("paracentral", "foraminal", "central")
                                        if kind in lowered), None)
            return key, herniation_type
    raise ValueError(f"{text!r} names no finding (hyperplasia, slip, herniation [central|paracentral|"
                     "foraminal], PLL thickening, LF thickening)")


def segment_name(finding: str, herniation_type: str | None = None) -> str:
    """The stable segment name of a finding: ``"finding: hyperplasia"``,
    ``"finding: herniation (paracentral)"``, ``"finding: PLL thickening"``."""
    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}; one of {', '.join(FINDINGS)}")
    if herniation_type is not None:
        if finding != "herniation":
            raise ValueError(f"only herniation has a type, not {finding}")
        if herniation_type not in HERNIATION_TYPES:
            raise ValueError(f"herniation type {herniation_type!r} must be one of {', '.join(HERNIATION_TYPES)}")
        return f"{SEGMENT_PREFIX}herniation ({herniation_type})"
    return SEGMENT_PREFIX + FINDINGS[finding].title


def dot_diameter_px(finding: str) -> int:
    """The paper's dot diameter of a finding (a key, label or segment name), in pixels."""
    return FINDINGS[parse_finding(finding)[0]].diameter_px


def normalize_level(text: str) -> str:
    """``"c4-5"``, ``"C4/C5"``, ``"C4/5"`` -> ``"C4/5"``; ``"C7/T1"``.  Raises
    ValueError for anything but the cervical discs C2/3 ... C7/T1."""
    match = _LEVEL_PATTERN.match(str(text))
    if match:
        upper = int(match.group(1))
        lower = "T1" if match.group(3) else match.group(2)
        name = f"C{upper}/{lower}"
        if name in DISC_LEVELS:
            return name
    raise ValueError(f"{text!r} is not a cervical disc level ({', '.join(DISC_LEVELS)})")


# ---- dots -> points ------------------------------------------------------------------

def mask_dot_centres(mask: Image) -> np.ndarray:
    """The LPS centroids (mm) of the connected components (26-connected) of a
    dot mask, shape ``(N, 3)``, in the order of their first voxel."""
    from scipy import ndimage

    components, count = ndimage.label(np.asarray(mask.array) != 0, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros((0, 3))
    centres_kji = np.asarray(ndimage.center_of_mass(np.ones(components.shape), components,
                                                    list(range(1, count + 1))), dtype=float).reshape(count, 3)
    return index_to_lps(mask, centres_kji[:, ::-1])


def index_to_lps(image: Image, ijk: np.ndarray) -> np.ndarray:
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    matrix = image.index_to_lps_matrix()
    return ijk @ matrix[:3, :3].T + matrix[:3, 3]


def lps_to_index(image: Image, points_lps: np.ndarray) -> np.ndarray:
    """Continuous ``(i, j, k)`` indices of LPS points, shape ``(N, 3)``."""
    points = np.atleast_2d(np.asarray(points_lps, dtype=float))
    matrix = np.linalg.inv(image.index_to_lps_matrix())
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _as_points(value: PointsOrMask, name: str) -> np.ndarray:
    if isinstance(value, Image):
        return mask_dot_centres(value)
    points = np.asarray(value, dtype=float)
    if points.size == 0:
        return np.zeros((0, 3))
    if points.ndim == 1:
        points = points[np.newaxis]
    if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
        raise InputError(f"the points of '{name}' must be finite LPS positions, shape (N, 3)")
    return points


# ---- points -> labels ---------------------------------------------------------------------------

def _vertebra_at(labelmap: Image, point: np.ndarray, tolerance_mm: float) -> tuple[int, float] | None:
    """(label, distance in mm) of the vertebra under ``point``, or of the vertebra
    with the nearest voxel centre within ``tolerance_mm``."""
    array = np.asarray(labelmap.array)
    ijk = lps_to_index(labelmap, point)[0]
    index = np.round(ijk).astype(int)
    size = np.array(labelmap.size)
    if np.all(index >= 0) and np.all(index < size):
        label = int(array[index[2], index[1], index[0]])
        if label:
            return label, 0.0
    reach = np.ceil(tolerance_mm / np.asarray(labelmap.spacing)).astype(int) + 1
    low = np.clip(index - reach, 0, size)
    high = np.clip(index + reach + 1, 0, size)
    if np.any(high <= low):
        return None
    box = array[low[2]:high[2], low[1]:high[1], low[0]:high[0]]
    k, j, i = np.nonzero(box)
    if k.size == 0:
        return None
    centres = index_to_lps(labelmap, np.stack([i + low[0], j + low[1], k + low[2]], axis=1))
    distances = np.linalg.norm(centres - point, axis=1)
    nearest = int(np.argmin(distances))
    if distances[nearest] > tolerance_mm:
        return None
    return int(box[k[nearest], j[nearest], i[nearest]]), float(distances[nearest])


def _slice_at(stacks: Mapping[str, Image], point: np.ndarray,
              slice_tolerance_mm: float | None) -> tuple[str, int, float] | None:
    """(stack, slice index, distance from the slice centre in mm) of the axial slice
    whose slab and field contain ``point``; the nearest slice centre among stacks."""
    best = None
    for name, stack in stacks.items():
        i, j, k = lps_to_index(stack, point)[0]
        size_i, size_j, size_k = stack.size
        if not (-0.5 <= i <= size_i - 0.5 and -0.5 <= j <= size_j - 0.5):
            continue
        index = int(np.round(k))
        if not 0 <= index < size_k:
            continue
        distance = abs(k - index) * stack.spacing[2]
        allowed = stack.spacing[2] / 2 if slice_tolerance_mm is None else slice_tolerance_mm
        if distance <= allowed + 1e-6 and (best is None or distance < best[2]):
            best = (name, index, float(distance))
    return best


def labels_from_annotations(finding_masks_or_points: Mapping[str, PointsOrMask], vertebra_labelmap: Image | None,
                            axial_stacks: Mapping[str, Image], levels: Sequence[Mapping[str, Any]], *,
                            vertebra_names: Mapping[int, str] | None = None, tolerance_mm: float = 5.0,
                            slice_tolerance_mm: float | None = None) -> dict[str, Any]:
    """Per-vertebra and per-slice labels from the annotators' dots (rules in the
    module docstring).

    ``finding_masks_or_points`` maps a finding (a segment name or label that
    :func:`parse_finding` reads, e.g. ``"finding: herniation (central)"``) to a
    dot mask (:class:`~mskai.image.Image`, non-zero = dot) or to LPS points
    ``(N, 3)``.  ``vertebra_labelmap`` holds one value per vertebra, named by
    ``vertebra_names`` or its ``meta["segment_names"]`` (else ``"label <n>"``).
    ``axial_stacks`` maps stack names to the axial images (their geometry is
    used), ``levels`` lists the disc-level assignments ``{"level", "stack",
    "slice_index"}``.

    Returns ``{"vertebrae": [{"name", "label", "hyperplasia", "slip", "points"}],
    "slices": [{"stack", "slice_index", "level", "herniation",
    "herniation_type", "pll", "lf"}], "levels": {level: {"herniation",
    "herniation_type", "pll", "lf"}}, "unassigned": [{"finding", "point_mm",
    "reason"}], "warnings": [...]}``; booleans are the labels.
    """
    warnings: list[str] = []
    unassigned: list[dict[str, Any]] = []

    vertebrae: dict[int, dict[str, Any]] = {}
    if vertebra_labelmap is not None:
        names = dict(vertebra_names if vertebra_names is not None else vertebra_labelmap.meta.get("segment_names", {}))
        for label in sorted(int(v) for v in np.unique(vertebra_labelmap.array) if v != 0):
            vertebrae[label] = {"name": str(names.get(label, f"label {label}")), "label": label,
                                **{key: False for key in VERTEBRA_FINDINGS}, "points": 0}

    level_of: dict[tuple[str, int], str] = {}
    for entry in levels:
        stack, index = str(entry["stack"]), int(entry["slice_index"])
        if stack not in axial_stacks:
            raise InputError(f"disc level {entry['level']} names stack '{stack}', which is not among the axial "
                             f"stacks ({', '.join(axial_stacks) or 'none'})")
        level = normalize_level(entry["level"])
        if level_of.get((stack, index), level) != level:
            warnings.append(f"slice {index} of '{stack}' is assigned both {level_of[(stack, index)]} and {level}; "
                            f"{level} is kept")
        level_of[(stack, index)] = level
    slices: dict[tuple[str, int], dict[str, Any]] = {}

    def slice_record(stack: str, index: int) -> dict[str, Any]:
        if (stack, index) not in slices:
            slices[(stack, index)] = {"stack": stack, "slice_index": index, "level": level_of.get((stack, index)),
                                      **{key: False for key in AXIAL_FINDINGS}, "herniation_type": None}
        return slices[(stack, index)]

    for stack, index in sorted(level_of, key=lambda key: (key[0], key[1])):
        slice_record(stack, index)

    for name, value in finding_masks_or_points.items():
        try:
            finding, herniation_type = parse_finding(name)
        except ValueError as error:
            raise InputError(str(error)) from None
        for point in _as_points(value, name):
            where = {"finding": segment_name(finding, herniation_type), "point_mm": [round(float(c), 3) for c in point]}
            if FINDINGS[finding].target == "vertebra":
                found = None if vertebra_labelmap is None else _vertebra_at(vertebra_labelmap, point, tolerance_mm)
                if found is None:
                    unassigned.append({**where, "reason": f"in no vertebra and none within {tolerance_mm:g} mm"})
                    continue
                record = vertebrae[found[0]]
                record[finding] = True
                record["points"] += 1
                continue
            found_slice = _slice_at(axial_stacks, point, slice_tolerance_mm)
            if found_slice is None:
                unassigned.append({**where, "reason": "on no axial slice"})
                continue
            record = slice_record(found_slice[0], found_slice[1])
            record[finding] = True
            if finding == "herniation" and herniation_type is not None:
                if record["herniation_type"] not in (None, herniation_type):
                    warnings.append(f"slice {record['slice_index']} of '{record['stack']}' has herniation points of "
                                    f"types {record['herniation_type']} and {herniation_type}; "
                                    f"{record['herniation_type']} is kept")
                else:
                    record["herniation_type"] = herniation_type
            if record["level"] is None:
                warnings.append(f"a {FINDINGS[finding].title} point lies on slice {record['slice_index']} of "
                                f"'{record['stack']}', which has no disc level")

    per_level: dict[str, dict[str, Any]] = {}
    for record in slices.values():
        if record["level"] is None:
            continue
        summary = per_level.setdefault(record["level"], {**{key: False for key in AXIAL_FINDINGS},
                                                          "herniation_type": None})
        for key in AXIAL_FINDINGS:
            summary[key] = summary[key] or record[key]
        if summary["herniation_type"] is None:
            summary["herniation_type"] = record["herniation_type"]
    ordered_levels = {level: per_level[level] for level in DISC_LEVELS if level in per_level}
    return {"vertebrae": list(vertebrae.values()),
            "slices": sorted(slices.values(), key=lambda r: (r["stack"], r["slice_index"])),
            "levels": ordered_levels, "unassigned": unassigned, "warnings": warnings}


# ---- the dataset ---------------------------------------------------------------------------------

def split_for_case(case_id: str, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> str:
    """A fixed split of a case id (train, val or test with the given fractions),
    the same on every machine and every export."""
    digest = hashlib.sha256(str(case_id).encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2 ** 64
    if position < fractions[0]:
        return "train"
    return "val" if position < fractions[0] + fractions[1] else "test"


def _path_text(path: Any, folder: Path) -> str:
    if path is None or str(path) == "":
        return ""
    path = Path(path).expanduser().resolve()  # a relative path is relative to the working folder, not the CSV's
    try:
        return path.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(path)


def export_dataset(cases: Sequence[Mapping[str, Any]], folder: str | os.PathLike) -> dict[str, Path]:
    """Writes the five classifiers' CSV files and ``dataset.json`` into ``folder``
    (format in the module docstring); returns ``{finding: csv path}``.

    Each case is a mapping with ``case_id``, ``labels`` (from
    :func:`labels_from_annotations`), ``sagittal_t1`` and/or ``sagittal_t2``
    (series paths), ``vertebra_mask`` (the label map file), ``axial_series``
    (``{stack: series path}``), optionally ``disc_masks`` (``{stack: mask
    path}``) and ``split``.  Raises InputError for a repeated case id, a
    missing series or an unknown split."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict[str, Any]]] = {key: [] for key in FINDINGS}
    seen: set[str] = set()
    for number, case in enumerate(cases, start=1):
        case_id = str(case.get("case_id", "")).strip()
        where = f"case {number}" + (f" ({case_id})" if case_id else "")
        if not case_id:
            raise InputError(f"{where}: no case_id")
        if case_id in seen:
            raise InputError(f"{where}: case_id {case_id} is repeated")
        seen.add(case_id)
        split = parse_split(str(case["split"]), where) if case.get("split") else split_for_case(case_id)
        labels = case["labels"]
        if labels.get("vertebrae"):
            t1, t2 = case.get("sagittal_t1"), case.get("sagittal_t2")
            if not (t1 or t2):
                raise InputError(f"{where}: vertebra labels but no sagittal series (sagittal_t1 or sagittal_t2)")
            if not case.get("vertebra_mask"):
                raise InputError(f"{where}: vertebra labels but no vertebra_mask")
            series_of = {"hyperplasia": t1 or t2, "slip": t2 or t1}
            for vertebra in labels["vertebrae"]:
                for finding in VERTEBRA_FINDINGS:
                    rows[finding].append({
                        "case_id": case_id, "series": _path_text(series_of[finding], folder),
                        "vertebra": vertebra["name"], "label_mask": _path_text(case["vertebra_mask"], folder),
                        "label_value": int(vertebra["label"]), "positive": int(bool(vertebra[finding])),
                        "split": split})
        axial_series = case.get("axial_series") or {}
        disc_masks = case.get("disc_masks") or {}
        for record in labels.get("slices", []):
            stack = record["stack"]
            if stack not in axial_series:
                raise InputError(f"{where}: slice {record['slice_index']} of stack '{stack}' is labelled but "
                                 "axial_series has no path for that stack")
            for finding in AXIAL_FINDINGS:
                rows[finding].append({
                    "case_id": case_id, "series": _path_text(axial_series[stack], folder), "stack": stack,
                    "slice_index": int(record["slice_index"]), "level": record["level"] or "",
                    "disc_mask": _path_text(disc_masks.get(stack), folder),
                    "positive": int(bool(record[finding])),
                    "type": (record.get("herniation_type") or "") if finding == "herniation" else "",
                    "split": split})
    written: dict[str, Path] = {}
    for finding, file_name in CSV_FILES.items():
        columns = VERTEBRA_COLUMNS if FINDINGS[finding].target == "vertebra" else SLICE_COLUMNS
        path = folder / file_name
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows[finding])
        written[finding] = path
    summary = {"format": "mskai-cervical-findings", "version": FORMAT_VERSION, "cases": len(seen),
               "files": {finding: {"file": CSV_FILES[finding], "rows": len(rows[finding]),
                                   "positive": sum(row["positive"] for row in rows[finding])}
                         for finding in FINDINGS}}
    (folder / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return written
