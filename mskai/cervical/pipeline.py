"""CervicalMR analysis of one study, part I: segmentation, vertebra labelling, disc levels.

:func:`analyze_study` is the entry point the command line, the batch runner and the
Slicer Logic share; it returns a :class:`CervicalAnalysis` whose ``result`` is the
``result.json`` dict.

1. **Series** (:mod:`mskai.cervical.series`): roles from orientation and tags.
2. **Segmentation** (:mod:`mskai.cervical.segmentation`): the sagittal series (T2,
   else T1) into vertebral bodies, discs, dural sac and cord; every axial T2 stack into
   dural sac, cord, disc, PLL and LF.
3. **Vertebra labelling** (:func:`mskai.vertebrae.label_vertebrae` on the body mask,
   cut at the discs).  **C2 is identified from the image**: the most cranial body is C2
   when it is not cut by the field's edge and is at least :data:`C2_HEIGHT_RATIO` times
   as tall (along the spine) as the median of the bodies below it — C2's body carries
   the dens, which no other cervical body has.  Then the bodies are named C2, C3, ...
   downwards.  Otherwise the level cannot be established from the image: the bodies
   get relative names (V1, V2, ...) with a warning, never invented C-names.  The shared
   labeller cuts C2's tall body at the dens's waist; two pieces with no disc between them
   are one vertebra, so they are merged back first (:func:`merge_dens`).
4. **Disc levels** (:func:`mskai.cervical.levels.disc_levels`): each disc's centre and
   plane from the labelling and the disc mask, and the axial slices that cut it.

5. **Findings** (:func:`mskai.cervical.findings.assess_findings`): the five classifiers
   per vertebra (hyperplasia, listhesis) and per level (herniation, PLL and LF
   thickening, from the level's axial slices), the measurements in mm
   (:mod:`mskai.cervical.measurements`: slip and its grade, protrusion and herniation
   type, ligament thicknesses, canal and cord, the C2-C7 lordosis).  ``verdict`` names the
   positive findings by level (:func:`mskai.cervical.findings.verdict_text`);
   ``labelling`` says what was found (vertebrae and levels).
6. **Training distribution** (:func:`mskai.cervical.findings.training_distribution`): each
   of the seven networks' early-stage features against the summary its bundle records;
   ``training_distribution`` (one block per network, out when any is) and a warning per
   network that is out, saying what that network decides.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mskai.errors import InputError
from mskai.image import Image
from mskai.results import StageTimer, new_result
from mskai.tasks import ProgressCallback

MODULE = "CervicalMR"
C2_HEIGHT_RATIO = 1.3
"""C2 (body with the dens) is at least this many times as tall as the median body below."""


@dataclass
class CervicalAnalysis:
    """Everything one analysis produced: ``result`` (``result.json``), the sagittal
    segmentation and labelling, each axial stack's segmentation, and the study."""

    result: dict[str, Any]
    sagittal_labels: Image | None = None
    vertebra_labels: Image | None = None
    axial_labels: list[Image] = field(default_factory=list)
    study: Any = field(default=None, repr=False)


def identify_c2(bodies: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether the most cranial of the (unnamed, dens-merged) bodies is C2, and why (see the
    module docstring)."""
    if len(bodies) < 3:
        return False, f"only {len(bodies)} vertebral bodies were found"
    top = bodies[0]
    if top.get("cut_by_edge"):
        return False, "the most cranial body is cut by the field's edge"
    heights = [float(v.get("extent_mm") or 0.0) for v in bodies[1:]]
    median = float(np.median(heights)) if heights else 0.0
    height = float(top.get("extent_mm") or 0.0)
    if median <= 0 or height < C2_HEIGHT_RATIO * median:
        return False, (f"the most cranial body ({height:.0f} mm tall) is not taller than the others "
                       f"(median {median:.0f} mm) as C2 with its dens is")
    return True, f"the most cranial body is {height:.0f} mm tall against a median of {median:.0f} mm (C2 with the dens)"


def _disc_between(discs: Image | None, a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether disc voxels lie on the segment between two centroids (within one voxel)."""
    from mskai.geometry import lps_to_index

    if discs is None:
        return False
    points = np.asarray(a, float) + np.linspace(0.1, 0.9, 25)[:, None] * (np.asarray(b, float) - np.asarray(a, float))
    ijk = np.rint(lps_to_index(discs, points)).astype(int)
    size = np.asarray(discs.size)
    for di, dj, dk in ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
        q = ijk + np.array([di, dj, dk])
        ok = np.all((q >= 0) & (q < size), axis=1)
        if np.any(discs.array[q[ok, 2], q[ok, 1], q[ok, 0]] > 0):
            return True
    return False


def merge_dens(labelling: Any, discs: Image | None) -> tuple[list[dict[str, Any]], Image, bool]:
    """The vertebrae with the two most cranial ones merged when no disc lies between them.

    The shared labeller cuts an over-long body at its waist; C2's body with the dens
    above it is such a body (about twice as tall as the others, narrowing at the dens's
    base), and it is cut there.  A disc separates every two vertebrae, so two pieces with
    no disc between them are one vertebra: the dens goes back to C2.  Returns the
    vertebrae (labels renumbered 1..n, ``extent_mm`` along the spine axis), the labelmap
    and whether a merge happened."""
    vertebrae = [dict(v) for v in labelling.vertebrae]
    labels = np.asarray(labelling.labelmap.array).copy()
    if len(vertebrae) < 2 or discs is None or _disc_between(discs, vertebrae[0]["centroid_mm"],
                                                             vertebrae[1]["centroid_mm"]):
        return vertebrae, labelling.labelmap, False
    top, second = vertebrae[0], vertebrae[1]
    labels[labels == top["label"]] = second["label"]
    axis = np.asarray(labelling.axis_lps, dtype=float)
    image = labelling.labelmap
    k, j, i = np.nonzero(labels == second["label"])
    points = np.stack([i, j, k], axis=1) * np.asarray(image.spacing) @ image.direction.T + np.asarray(image.origin)
    t = points @ axis
    merged = dict(second, centroid_mm=[round(float(c), 2) for c in points.mean(axis=0)], voxels=int(len(points)),
                  extent_mm=round(float(t.max() - t.min()), 1),
                  cut_by_edge=bool(top.get("cut_by_edge")), pieces=int(top.get("pieces", 1)) + int(second.get("pieces", 1)))
    vertebrae = [merged] + vertebrae[2:]
    renumbered = np.zeros_like(labels)
    for position, v in enumerate(vertebrae, start=1):
        renumbered[labels == v["label"]] = position
        v["label"] = position
    names = {v["label"]: v["name"] for v in vertebrae}
    return vertebrae, image.with_array(renumbered, meta={**image.meta, "segment_names": names}), True


def name_from(vertebrae: list[dict[str, Any]], labelmap: Image, first: str) -> tuple[list[dict[str, Any]], Image]:
    """The vertebrae named down the standard sequence from ``first`` (``"C2"``)."""
    from mskai.vertebrae import SEQUENCE

    start = SEQUENCE.index(first)
    named = [dict(v, name=SEQUENCE[start + position]) for position, v in enumerate(vertebrae)
             if start + position < len(SEQUENCE)]
    names = {v["label"]: v["name"] for v in named}
    return named, labelmap.with_array(labelmap.array, meta={**labelmap.meta, "segment_names": names})


def _mask(labels: Image, value: int) -> Image:
    return labels.with_array((labels.array == value).astype(np.uint8), meta={}, warnings=[])


def analyze_study(study: Any, models: dict[str, Any], *, device: str = "cpu", progress: ProgressCallback | None = None,
                  timer: StageTimer | None = None) -> CervicalAnalysis:
    """Segment, label, level and assess one study (:class:`mskai.cervical.series.CervicalStudyInput`);
    ``models``: ``{"sagittal": (net, grid, metadata), "axial": (net, grid, metadata),
    "classifiers": {finding: LoadedClassifier | None}}`` (no ``classifiers``: no finding is assessed)."""
    from mskai.cervical.classifiers import FINDINGS
    from mskai.cervical.findings import assess_findings, training_distribution, verdict_text
    from mskai.cervical.levels import disc_levels
    from mskai.cervical.segmentation import segment_series
    from mskai.vertebrae import label_vertebrae

    report = progress or (lambda fraction, message: None)
    timer = timer or StageTimer()
    warnings = list(study.warnings)
    features: dict[str, list] = {}  # every network's training-distribution features, from the same passes
    sagittal = study.sagittal
    if sagittal.shape[0] < 3:
        raise InputError(f"the sagittal series has {sagittal.shape[0]} slice(s); {MODULE} needs a sagittal stack")
    net, grid, meta = models["sagittal"]
    report(0.1, "segmenting the sagittal series")
    with timer("segment_sagittal"):
        sag_labels = segment_series(net, sagittal, grid, "sagittal", device=device,
                                    features=features.setdefault("sagittal", []))
    report(0.4, "naming the vertebrae")
    with timer("label"):
        bodies, discs = _mask(sag_labels, 1), _mask(sag_labels, 2)
        if not bodies.array.any():
            raise InputError("no vertebral body was found on the sagittal series; is it a cervical spine MR?")
        disc_mask = discs if discs.array.any() else None
        unnamed = label_vertebrae(bodies, discs=disc_mask)
        found, labelmap, _ = merge_dens(unnamed, disc_mask)
        is_c2, why = identify_c2(found)
        warnings.extend(w for w in unnamed.warnings if w not in warnings and "relative names" not in w)
        if is_c2:
            found, labelmap = name_from(found, labelmap, "C2")
        else:
            warnings.append(f"C2 could not be identified ({why}): the vertebrae have relative names (V1 is the most "
                            "cranial found), not C-levels")
    axial_labels = []
    if study.axial_t2:
        ax_net, ax_grid, ax_meta = models["axial"]
        report(0.55, f"segmenting {len(study.axial_t2)} axial stack(s)")
        with timer("segment_axial"):
            axial_labels = [segment_series(ax_net, stack, ax_grid, "axial", device=device,
                                           features=features.setdefault("axial", [])) for stack in study.axial_t2]
    report(0.85, "finding the disc levels")
    with timer("levels"):
        levels = disc_levels(found, disc_mask, labelmap, list(study.axial_t2))
    classifiers = dict(models.get("classifiers") or {key: None for key in FINDINGS})
    model_info = {"sagittal": meta.get("info"), "axial": models["axial"][2].get("info") if study.axial_t2 else None}
    model_info.update({key: loaded.metadata.get("info") if loaded is not None else None
                       for key, loaded in classifiers.items()})
    result = new_result("cervical", None, model_info)
    result["input"] = study.describe()
    result["warnings"] = warnings
    vertebrae = [{"name": v["name"], "label": int(v["label"]),
                  "centroid_mm": [round(float(c), 3) for c in v["centroid_mm"]],
                  "voxels": int(v.get("voxels", 0)), "cut_by_edge": bool(v.get("cut_by_edge", False))}
                 for v in found]
    level_entries = [{"name": lv["name"], "upper": lv.get("upper"), "lower": lv.get("lower"),
                      "center_mm": [round(float(c), 3) for c in lv["center_mm"]],
                      "normal": [round(float(c), 4) for c in lv["normal"]],
                      "axial_slices": lv.get("axial_slices", [])} for lv in levels]
    names = [v["name"] for v in vertebrae]
    report(0.9, "assessing the findings")
    assessed = assess_findings(study, vertebrae, level_entries, labelmap, axial_labels, classifiers, device=device,
                               timer=timer, features=features)
    result["warnings"].extend(assessed["warnings"])
    metadata = {"sagittal": meta, "axial": models["axial"][2] if study.axial_t2 else {},
                **{key: loaded.metadata for key, loaded in classifiers.items() if loaded is not None}}
    distribution, distribution_warnings = training_distribution(metadata, features)
    result["warnings"].extend(distribution_warnings)
    if not study.axial_t2:
        result["warnings"].append("no axial T2 series: herniation, PLL and LF thickening are not assessed")
    result.update({
        "verdict": verdict_text(vertebrae, level_entries) if vertebrae else "no vertebra found",
        "labelling": (f"{len(vertebrae)} vertebrae ({names[0]}-{names[-1]}), {len(level_entries)} disc levels"
                      if vertebrae else "no vertebra found"),
        "level_identified": bool(is_c2), "level_identification": why,
        "vertebrae": vertebrae, "levels": level_entries, "alignment": assessed["alignment"],
        "training_distribution": distribution,
        "segmentation": {"sagittal_series": sagittal.meta.get("series_instance_uid"),
                         "classes_sagittal": list(sag_labels.meta["segment_names"].values()),
                         "axial_stacks": len(axial_labels)},
        "evidence": assessed["evidence"] + [{"kind": "vertebra centroid", "name": v["name"],
                                             "position_mm": v["centroid_mm"]} for v in vertebrae],
    })
    result["timing"] = timer.as_dict()
    report(1.0, result["verdict"])
    return CervicalAnalysis(result, sag_labels, labelmap, axial_labels, study)


def write_outputs(analysis: CervicalAnalysis, output_dir: str | Path, *, reports: bool = True) -> dict[str, Any]:
    """``result.json``; ``sagittal.seg.nrrd`` (bodies, discs, sac, cord), ``vertebrae.seg.nrrd``
    (one segment per named vertebra), ``axial_<n>.seg.nrrd``; an overlay PNG of the middle
    sagittal slice with the vertebra names and of each level's first cutting axial slice;
    with ``reports`` the structured report ``report.html`` and ``report.pdf``
    (:func:`mskai.cervical.report.write_reports`)."""
    from mskai.labels import write_segmentation
    from mskai.results import save_overlay_png, write_final_result

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outputs: dict[str, Any] = {"result": "result.json", "segmentations": [], "overlays": []}
    if analysis.sagittal_labels is not None:
        write_segmentation(analysis.sagittal_labels, out / "sagittal.seg.nrrd")
        outputs["segmentations"].append("sagittal.seg.nrrd")
    if analysis.vertebra_labels is not None:
        write_segmentation(analysis.vertebra_labels, out / "vertebrae.seg.nrrd")
        outputs["segmentations"].append("vertebrae.seg.nrrd")
    for index, labels in enumerate(analysis.axial_labels):
        write_segmentation(labels, out / f"axial_{index}.seg.nrrd")
        outputs["segmentations"].append(f"axial_{index}.seg.nrrd")
    study = analysis.study
    if study is not None and analysis.vertebra_labels is not None:
        sagittal = study.sagittal
        k = sagittal.shape[0] // 2
        points = []
        for v in analysis.result["vertebrae"]:
            from mskai.geometry import lps_to_index

            i, j, kk = lps_to_index(sagittal, v["centroid_mm"])
            points.append((float(i), float(j), v["name"]))
        heat = (analysis.vertebra_labels.array[k] > 0).astype(np.float32) * 0.6
        save_overlay_png(out / "overlay_sagittal.png", sagittal.array[k], heatmap=heat, points=points,
                         pixel_aspect=sagittal.spacing[1] / sagittal.spacing[0])
        outputs["overlays"].append("overlay_sagittal.png")
        for level in analysis.result["levels"]:
            cutting = [s for s in level["axial_slices"] if s.get("cuts")]
            if not cutting:
                continue
            stack, index = int(cutting[0]["stack"]), int(cutting[0]["index"])
            image, labels = study.axial_t2[stack], analysis.axial_labels[stack]
            name = f"overlay_axial_{level['name'].replace('/', '-')}.png"
            save_overlay_png(out / name, image.array[index],
                             heatmap=(labels.array[index] > 0).astype(np.float32) * 0.6,
                             pixel_aspect=image.spacing[1] / image.spacing[0])
            outputs["overlays"].append(name)
    if reports and study is not None:
        from mskai.cervical.report import write_reports

        outputs["reports"] = write_reports(analysis.result, sagittal=study.sagittal,
                                           vertebra_labels=analysis.vertebra_labels, axial_images=list(study.axial_t2),
                                           axial_labels=analysis.axial_labels, output_dir=out)
    return write_final_result(out, analysis.result, outputs, start)
