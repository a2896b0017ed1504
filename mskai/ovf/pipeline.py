"""SpineOVF analysis of one CT: input checks, slices, model, verdict and evidence.

:func:`analyze_image` is the one entry point that the command line, the batch
runner and the Slicer Logic share; it returns an :class:`OVFAnalysis` whose
``result`` is the ``result.json`` dict (SPEC §0.2 and issue item 6).

Input checks (SPEC §5), each a one-line :class:`mskai.InputError`:

* a single slice, or fewer than 2 slices: refused (:func:`mskai.io.require_volume`);
* not a CT, unless ``force`` (:func:`mskai.ct.check_ct`: a DICOM ``Modality``
  other than CT, or without one intensities with no air or no bone in HU).
  With ``force`` the analysis runs and the result carries a warning;
* cranio-caudal coverage below :data:`MIN_COVERAGE_MM` (80 mm, about three
  vertebral bodies with their discs): refused, a sagittal analysis of the
  spine needs more (:func:`mskai.ct.check_coverage`);
* NaN/inf voxels (possible when an :class:`Image` comes from elsewhere than
  :mod:`mskai.io`) are replaced by the finite minimum with a warning
  (:func:`mskai.ct.finite_image`);
* non-uniform slice spacing, gantry tilt and missing spacing are corrected or
  reported by :mod:`mskai.io`, whose warnings the result carries.

Training distribution (:mod:`mskai.distribution`): the slices' image statistics (the
means of the backbone's first two stages, computed in the classifying pass) are compared
with the bundle's summary of its training slices; the result carries
``training_distribution`` (median slice distance, threshold, ``in_distribution``,
``fraction_out`` of the slices) and, when the CT is unlike them, a warning.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from mskai.bundles import Bundle
from mskai.ct import check_coverage, check_ct, finite_image
from mskai.device import describe_device, resolve_device
from mskai.distribution import assess
from mskai.errors import InputError
from mskai.geometry import index_to_lps, lps_to_index
from mskai.image import Image
from mskai.io import require_volume
from mskai.labels import read_labelmap
from mskai.ovf import evidence as ev
from mskai.ovf.model import AGGREGATORS, OVFModel, load_ovf_bundle
from mskai.ovf.preprocess import (BONE_HU, SagittalSelection, SquareFrame,
                                  select_central_sagittal_slices, slices_to_tensor)
from mskai.results import StageTimer, new_result
from mskai.tasks import ProgressCallback

MODULE = "SpineOVF"
"""The module named in the input checks' messages."""
MIN_COVERAGE_MM = 80.0
COVERAGE_PURPOSE = "of spine (about three vertebrae) for a sagittal analysis"
DEFAULT_EVIDENCE = "top3"


@dataclass
class OVFAnalysis:
    """Everything one analysis produced.

    Attributes:
        result: the ``result.json`` dict.
        heatmap: occlusion heatmap (0..1) on the input CT's grid, or None
            without evidence.
        selection: the analysed sagittal slab.
        tensor: the network input ``(N, 3, size, size)``.
        slice_probs: ``(N,)`` slice probabilities.
        maps: the occlusion maps (:class:`mskai.ovf.evidence.SliceMaps`) or None.
        heat_slab: the heatmap on the sagittal slab (0..1) or None.
        image: the analysed CT (after NaN replacement).
        model, metadata: the loaded model and its bundle metadata (for
            :func:`explain_slices` on demand).
    """

    result: dict[str, Any]
    heatmap: Image | None
    selection: SagittalSelection
    tensor: torch.Tensor
    slice_probs: np.ndarray
    maps: ev.SliceMaps | None
    heat_slab: Image | None
    image: Image
    model: OVFModel = field(repr=False)
    metadata: dict[str, Any] = field(repr=False)


def parse_evidence(evidence: str | Sequence[int] | None, slice_indices: Sequence[int], slice_probs: np.ndarray) -> list[int]:
    """Slab positions to explain for ``evidence``: ``"top3"``/``"topN"`` (the N most
    suspicious slices), ``"all"``, ``"none"``/None, or stack indices as a list or
    a string ``"4,7"``; indices not analysed are refused (InputError)."""
    if evidence is None or (isinstance(evidence, str) and evidence.strip().lower() in ("", "none")):
        return []
    if isinstance(evidence, str):
        text = evidence.strip().lower()
        if text == "all":
            return list(range(len(slice_indices)))
        match = re.fullmatch(r"top(\d+)", text)
        if match:
            count = min(int(match.group(1)), len(slice_indices))
            order = np.argsort(-np.asarray(slice_probs), kind="stable")[:count]
            return sorted(int(m) for m in order)
        try:
            wanted = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            raise InputError(f"--evidence {evidence!r} is not understood; use top3, all, none or slice "
                             "indices like 4,7") from None
    else:
        wanted = [int(v) for v in evidence]
    position = {index: m for m, index in enumerate(slice_indices)}
    missing = [w for w in wanted if w not in position]
    if missing:
        raise InputError(f"sagittal slice(s) {', '.join(map(str, missing))} were not analysed; choose "
                         f"among {slice_indices[0]}..{slice_indices[-1]}")
    return sorted({position[w] for w in wanted})


# --------------------------------------------------------------------------- analysis

def analyze_image(image: Image, *, model: Bundle | str | Path | tuple[OVFModel, dict[str, Any]] | None = None,
                  device: str | torch.device = "auto",
                  aggregator: str | None = None, vertebrae: Image | None = None,
                  vertebra_names: Mapping[int, str] | None = None, evidence: Any = DEFAULT_EVIDENCE,
                  force: bool = False, progress: ProgressCallback | None = None,
                  mask_size: int | None = None, overlap: float = ev.OVERLAP,
                  evidence_region: str = "spine", timer: StageTimer | None = None) -> OVFAnalysis:
    """Analyse one CT volume for osteoporotic vertebral fractures.

    Args:
        image: the CT (HU, any orientation), e.g. from :func:`mskai.io.read_image`.
        model: a model bundle (:class:`mskai.bundles.Bundle`, folder or id), or an
            already loaded ``(OVFModel, metadata)`` from
            :func:`mskai.ovf.model.load_ovf_bundle` (the task loads once);
            None: the default ``ovf`` bundle.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        aggregator: ``lstm``, ``max``, ``mean`` or ``vote``; None: the bundle's default.
        vertebrae: optional vertebra labelmap (any grid) to name the level of the evidence.
        vertebra_names: label -> name for ``vertebrae`` (else its meta, see
            :func:`mskai.ovf.evidence.vertebra_names`).
        evidence: ``"top3"`` (default), ``"topN"``, ``"all"``, ``"none"`` or stack indices.
        force: analyse a non-CT image anyway (with a warning).
        progress: ``progress(fraction, message)``; may raise to cancel.
        mask_size, overlap, evidence_region: occlusion settings (see
            :mod:`mskai.ovf.evidence`; region ``"spine"`` or ``"full"``).
        timer: a :class:`StageTimer` to add the stages to (the task times reading).

    Returns:
        :class:`OVFAnalysis`.
    """
    report = progress or (lambda fraction, message: None)
    timer = timer or StageTimer()
    report(0.0, "checking the input")
    require_volume(image, what="SpineOVF (a sagittal analysis of a CT volume)")
    image, nan_warning = finite_image(image)
    warnings: list[str] = list(image.warnings)
    if nan_warning:
        warnings.append(nan_warning)
    ct_warning = check_ct(image, force, module=MODULE)
    if ct_warning:
        warnings.append(ct_warning)
    check_coverage(image, MIN_COVERAGE_MM, module=MODULE, purpose=COVERAGE_PURPOSE)

    report(0.05, "loading the model")
    torch_device = resolve_device(device)
    if isinstance(model, tuple):
        network, metadata = model
    else:
        network, metadata = load_ovf_bundle(model, device=torch_device)
    model_device = next(network.parameters()).device
    prep = metadata["preprocessing"]
    aggregator = aggregator or metadata.get("default_aggregator") or "lstm"
    if aggregator not in AGGREGATORS:
        raise InputError(f"unknown aggregator {aggregator!r}; use one of {', '.join(AGGREGATORS)}")
    threshold = float((metadata.get("thresholds") or {}).get("fracture", 0.5))

    report(0.1, "reformatting to sagittal slices")
    with timer("reformat"):
        selection = select_central_sagittal_slices(image, fraction=float(prep["fraction"]),
                                                   spacing_mm=prep.get("inplane_spacing_mm"),
                                                   min_slices=int(prep["min_slices"]),
                                                   bone_hu=float(prep.get("bone_hu", BONE_HU)))
    warnings.extend(selection.warnings)

    report(0.3, "preparing the slices")
    with timer("preprocess"):
        tensor = slices_to_tensor(selection, size=int(prep["size"]),
                                  mean_image=network.mean_image.detach().cpu().numpy(),
                                  window=prep["window"], channels=int(prep.get("channels", 3)))

    report(0.4, f"classifying {len(selection.indices)} sagittal slices")
    with timer("model"):
        with torch.inference_mode():
            prediction = network.predict_scan(tensor.to(model_device))
    slice_probs = prediction["slice_probs"].float().cpu().numpy()
    scan_probs = prediction["scan_probs"]
    probability = float(scan_probs[aggregator])

    result = new_result("ovf", image, metadata["info"])
    result["warnings"] = warnings
    result.update({
        "verdict": "fracture" if probability >= threshold else "no fracture",
        "probability": round(probability, 6),
        "aggregator": aggregator,
        "threshold": threshold,
        "probabilities": {name: round(float(p), 6) for name, p in scan_probs.items()},
        "spine_center_mm": [round(float(v), 3) for v in selection.spine_center_lps],
        "spine_center_method": selection.method,
        "image_center_mm": [round(float(v), 3) for v in selection.image_center_lps],
        "slices": [{"index": int(index), "center_mm": [round(float(v), 3) for v in center],
                    "probability": round(float(p), 6)}
                   for index, center, p in zip(selection.indices, selection.centers_lps, slice_probs)],
        "sagittal": {"n_slices_total": selection.n_total, "fraction": float(prep["fraction"]),
                     "spacing_mm": list(selection.sagittal.spacing),
                     "size_ijk": list(selection.sagittal.size),
                     "axes": "i Posterior, j Inferior, k Left (slice index = k in the full stack)"},
        "preprocessing": {k: prep[k] for k in ("size", "window", "channels") if k in prep},
        "device": describe_device(model_device),
        "inference": metadata.get("inference", "PyTorch"),
        "suspected_level": None,
    })
    distribution, far = assess(metadata.get("training_distribution"),
                               prediction["statistics"].float().cpu().numpy(),
                               demo=bool(metadata.get("demo")), what="CT")
    result["training_distribution"] = distribution
    if far:
        result["warnings"].append(far)
    analysis = OVFAnalysis(result, None, selection, tensor, slice_probs, None, None, image, network,
                           metadata)

    positions = parse_evidence(evidence, selection.indices, slice_probs)
    if positions:
        report(0.5, f"computing occlusion evidence on {len(positions)} slice(s)")
        with timer("evidence"):
            explain_slices(analysis, positions, vertebrae=vertebrae, vertebra_names=vertebra_names,
                           mask_size=mask_size, overlap=overlap, region=evidence_region)
    result["timing"] = timer.as_dict()
    report(1.0, f"{result['verdict']} (p = {probability:.3f}, {aggregator})")
    return analysis


def explain_slices(analysis: OVFAnalysis, positions: Sequence[int], *, vertebrae: Image | None = None,
                   vertebra_names: Mapping[int, str] | None = None, mask_size: int | None = None,
                   overlap: float = ev.OVERLAP, region: str = "spine",
                   logit_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> OVFAnalysis:
    """Occlusion evidence for slab positions ``positions`` of an analysis ("Explain this slice").

    Replaces ``analysis.maps``, ``heat_slab``, ``heatmap`` and the result's
    ``evidence``, ``suspected_level`` and ``evidence_settings``.  Use
    :func:`parse_evidence` to turn stack indices into positions.
    """
    selection = analysis.selection
    frame = SquareFrame(selection.sagittal.shape[1], selection.sagittal.shape[2], analysis.tensor.shape[-1])
    if region not in ("spine", "full"):
        raise InputError(f"unknown evidence region {region!r}; use spine or full")
    columns = ev.spine_column_range(selection, frame) if region == "spine" else None
    if logit_fn is None and analysis.model.fast_extract is not None:
        fast_extract = analysis.model.fast_extract

        def logit_fn(x: torch.Tensor) -> torch.Tensor:
            return fast_extract(x)[0]
    logit_fn = logit_fn or ev.extractor_logit_fn(analysis.model.extractor)
    start = time.perf_counter()
    maps = ev.occlusion_maps(logit_fn, analysis.tensor, list(positions), frame, mask_size=mask_size,
                             overlap=overlap, column_range=columns)
    heat, scale = ev.heat_volume(selection, maps)
    heatmap = ev.heatmap_on_ct(heat, analysis.image)
    names = ev.vertebra_names(vertebrae, vertebra_names) if vertebrae is not None else {}

    entries: list[dict[str, Any]] = []
    peak = ev.strongest_point(heat)
    if peak is not None:
        ijk, m = peak
        entries.append(_evidence_entry(analysis, heat, ijk, m, float(heat.array.max()) * scale,
                                       "strongest occlusion evidence", vertebrae, names))
    for row, m in enumerate(maps.positions):
        centroid = ev.plateau_centroid(heat.array[m])
        if centroid is None:
            continue
        j, i = centroid
        entries.append(_evidence_entry(analysis, heat, np.array([i, j, m], dtype=float), m,
                                       float(maps.slice_maps[row].max()), "slice peak", vertebrae, names))
    result = analysis.result
    result["evidence"] = entries
    # A level is "suspected" only when the scan is called a fracture; for a negative scan the
    # strongest evidence (with its level) stays in ``evidence`` but names no suspect.
    suspected = entries and result.get("verdict") == "fracture"
    result["suspected_level"] = entries[0]["level"] if suspected else None
    result["evidence_settings"] = {
        "method": "occlusion sensitivity of the slice logit (MONAI OcclusionSensitivity)",
        "slices": [int(selection.indices[m]) for m in maps.positions],
        "mask_size_px": ev.default_mask_size(frame.size) if mask_size is None else int(mask_size),
        "overlap": float(overlap), "occluded_value": "training mean image",
        "region": region, "heatmap_scale_logit": round(scale, 6),
        "seconds": round(time.perf_counter() - start, 3)}
    notes = []
    if peak is None:
        notes.append("occluding the explained slices never lowered the fracture evidence: no "
                     "evidence position to report")
    if vertebrae is not None and not names:
        notes.append("the vertebra labelling has no segments named like vertebral levels (L1, "
                     "vertebrae_T12, ...): evidence is given by position only")
    result["warnings"].extend(note for note in notes if note not in result["warnings"])
    analysis.maps, analysis.heat_slab, analysis.heatmap = maps, heat, heatmap
    return analysis


def explain(analysis: OVFAnalysis, evidence: str | Sequence[int] | None = DEFAULT_EVIDENCE, **options: Any) -> OVFAnalysis:
    """:func:`explain_slices` for an ``evidence`` choice as :func:`analyze_image` takes it
    (``"top3"``, ``"all"`` or sagittal stack indices, e.g. the slice a user looks at)."""
    positions = parse_evidence(evidence, analysis.selection.indices, analysis.slice_probs)
    if not positions:
        raise InputError("no slice to explain was given")
    return explain_slices(analysis, positions, **options)


def _evidence_entry(analysis: OVFAnalysis, heat: Image, ijk: np.ndarray, m: int, value: float,
                    kind: str, vertebrae: Image | None, names: Mapping[int, str]) -> dict[str, Any]:
    position = index_to_lps(heat, ijk)
    voxel = np.round(lps_to_index(analysis.image, position)).astype(int)
    voxel = np.clip(voxel, 0, np.asarray(analysis.image.size) - 1)
    level = ev.level_at(vertebrae, position, names) if vertebrae is not None and names else None
    return {"kind": kind, "position_mm": [round(float(v), 3) for v in position],
            "voxel_index": [int(v) for v in voxel], "level": level,
            "value": round(value, 6), "slice_index": int(analysis.selection.indices[m]),
            "slice_probability": round(float(analysis.slice_probs[m]), 6)}


# --------------------------------------------------------------------------- files

def read_vertebrae(path: str | Path, names: Mapping[int, str] | None = None) -> Image:
    """A vertebra labelling as an integer labelmap :class:`Image` with
    ``meta["segment_names"]`` (label -> name): names from ``names``, a Slicer
    ``.seg.nrrd``'s segments or a sidecar JSON (:func:`mskai.labels.read_labelmap`)."""
    return read_labelmap(path, names, what="vertebra labelling")


OVERLAY_WINDOW = (400.0, 1800.0)
"""Bone window of the overlay PNGs (-500..1300 HU)."""


def write_outputs(analysis: OVFAnalysis, output_dir: str | Path) -> dict[str, Any]:
    """Write ``result.json``, ``heatmap.nii.gz`` (when there is evidence) and overlay PNGs.

    Overlays: the most suspicious sagittal slice (highest slice probability)
    first, then every other explained slice; each shows the bone-windowed
    slice (anterior left, head up, square pixels), the heatmap and the
    evidence points named by level.  Returns ``analysis.result`` with
    ``outputs`` (file names relative to ``output_dir``).
    """
    from mskai.io import write_image
    from mskai.results import save_overlay_png, write_final_result

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result, selection = analysis.result, analysis.selection
    outputs: dict[str, Any] = {"result": "result.json", "heatmap": None, "overlays": []}
    if analysis.heatmap is not None:
        write_image(analysis.heatmap, out / "heatmap.nii.gz")
        outputs["heatmap"] = "heatmap.nii.gz"
    most_suspicious = int(np.argmax(analysis.slice_probs))
    positions = [most_suspicious] + [m for m in (analysis.maps.positions if analysis.maps else [])
                                     if m != most_suspicious]
    sagittal = selection.sagittal
    for m in positions:
        index = selection.indices[m]
        points = []
        for entry in result.get("evidence", []):
            if entry["slice_index"] == index:
                i, j, _ = lps_to_index(sagittal, entry["position_mm"])
                points.append((float(i), float(j), entry["level"] or entry["kind"].split()[0]))
        heat = analysis.heat_slab.array[m] if analysis.heat_slab is not None else None
        name = f"overlay_sagittal_{index:04d}.png"
        save_overlay_png(out / name, sagittal.array[m], window=OVERLAY_WINDOW, heatmap=heat,
                         points=points, pixel_aspect=sagittal.spacing[1] / sagittal.spacing[0])
        outputs["overlays"].append(name)
    return write_final_result(out, result, outputs, start)
