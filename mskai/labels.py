"""Labelmaps with segment names, read once for every task.

A labelmap is an integer :class:`mskai.Image` whose ``meta["segment_names"]``
maps label values to names (``{1: "L1", ...}`` or TotalSegmentator's
``{25: "sacrum", 77: "hip_left", ...}``).  The names come from, in order:

* the ``names`` argument of :func:`read_labelmap`;
* a Slicer ``.seg.nrrd``'s ``Segment{N}_Name`` / ``Segment{N}_LabelValue``
  header keys (one layer);
* a sidecar JSON beside a NIfTI/NRRD/MetaImage labelmap, named like it with
  ``.json`` instead of the image suffix (or with ``.json`` appended):
  ``{"1": "L1", ...}``, or such an object under ``"segment_names"``,
  ``"labels"`` or ``"level_names"`` (:func:`sidecar_names`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from mskai.errors import InputError
from mskai.files import read_json
from mskai.image import Image

LABELMAP_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_labelmap(path: str | Path, names: Mapping[int, str] | None = None, *,
                  what: str = "labelmap") -> Image:
    """A 3D labelmap as an integer :class:`Image` with ``meta["segment_names"]``
    (label -> name, from the sources listed in the module docstring; empty when
    none has names).  ``what`` names the file in errors (e.g. ``"vertebra labelling"``)."""
    from mskai.io import read_image

    path = Path(path)
    labels = read_image(path)
    if labels.shape[0] == 1:
        raise InputError(f"{path}: the {what} is a single slice; a 3D labelmap is needed")
    array = labels.array
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(np.nan_to_num(array)).astype(np.int32)
    table: dict[int, str] = {}
    if names is not None:
        table = {int(k): str(v) for k, v in names.items()}
    elif labels.meta.get("segments"):
        for position, segment in enumerate(labels.meta["segments"]):
            table[int(segment.get("label_value", position + 1))] = str(segment.get("name", ""))
    else:
        table = sidecar_names(path)
    meta = {**labels.meta, "kind": "labelmap", "segment_names": table}
    return labels.with_array(array, meta=meta, warnings=[])


def sidecar_names(path: str | Path) -> dict[int, str]:
    """Segment names from the JSON file beside the labelmap ``path`` (see the module
    docstring); ``{}`` when there is none, InputError when it is malformed."""
    path = Path(path)
    name = path.name
    stem = next((name[:-len(s)] for s in LABELMAP_SUFFIXES if name.lower().endswith(s)), name)
    for candidate in (path.with_name(stem + ".json"), path.with_name(name + ".json")):
        if candidate.is_file():
            content = read_json(candidate, f"segment names file {candidate}")
            if isinstance(content, dict):
                for key in ("segment_names", "labels", "level_names"):
                    if isinstance(content.get(key), dict):
                        content = content[key]
                        break
                try:
                    return {int(k): str(v) for k, v in content.items()}
                except (TypeError, ValueError):
                    raise InputError(f"{candidate}: segment names must map label numbers to names, "
                                     'like {"1": "L1"}') from None
            raise InputError(f"{candidate}: segment names must be a JSON object like {{\"1\": \"L1\"}}")
    return {}


def write_segmentation(labels: Image, path: str | Path, colors: Mapping[int, tuple[float, float, float]] | None = None) -> Path:
    """Write a labelmap with ``meta["segment_names"]`` as a Slicer ``.seg.nrrd`` (one
    layer: ``Segment{N}_Name``, ``_LabelValue``, ``_Layer``, ``_ID``, ``_Color``,
    ``_Extent`` and the segmentation's master representation), which Slicer loads as
    a Segmentation node with named segments and :func:`read_labelmap` reads back."""
    import SimpleITK as sitk

    from mskai.sitk_bridge import to_sitk

    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise ValueError(f"{path}: a segmentation is written as .seg.nrrd")
    names = dict(labels.meta.get("segment_names") or {})
    array = np.asarray(labels.array).astype(np.uint8)
    itk = to_sitk(labels.with_array(array))
    itk.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    itk.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    itk.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    palette = [(0.9, 0.6, 0.3), (0.3, 0.7, 0.9), (0.4, 0.9, 0.4), (0.95, 0.85, 0.3), (0.8, 0.4, 0.8),
               (0.9, 0.3, 0.3), (0.5, 0.5, 0.9), (0.3, 0.9, 0.8)]
    for index, (value, name) in enumerate(sorted(names.items())):
        color = (colors or {}).get(value, palette[index % len(palette)])
        found = np.argwhere(array == value)
        if found.size:
            (k0, j0, i0), (k1, j1, i1) = found.min(axis=0), found.max(axis=0)
            extent = f"{i0} {i1} {j0} {j1} {k0} {k1}"
        else:
            extent = "0 -1 0 -1 0 -1"
        for key, text in (("Name", str(name)), ("LabelValue", str(int(value))), ("Layer", "0"),
                          ("ID", f"Segment_{int(value)}"), ("Color", " ".join(f"{c:.3f}" for c in color)),
                          ("Extent", extent), ("NameAutoGenerated", "0"), ("ColorAutoGenerated", "0"),
                          ("Tags", "")):
            itk.SetMetaData(f"Segment{index}_{key}", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(itk, str(path), useCompression=True)
    return path
