"""SacroiliitisCT analysis of one pelvic CT: range, crops, MS-2.5D-Net, vote, verdict, evidence.

:func:`analyze_image` is the one entry point that the command line, the batch
runner and the Slicer Logic share; it returns an :class:`SIJAnalysis` whose
``result`` is the ``result.json`` dict.

Steps:

1. **Input checks** (one-line :class:`mskai.InputError` each): a single slice or
   fewer than 2 slices are refused; not a CT (DICOM ``Modality``, or without one
   no air/bone intensities) is refused unless ``force``; NaN/inf voxels are
   replaced with a warning.
2. **Slice range** (:mod:`mskai.sij.joints`): proposed from the CT (``auto``), taken
   from a bone segmentation (``bones``), or given by the user (``range_mm``,
   ``user``; the joints are still located in it for the crops).  A CT where no
   sacroiliac joint is found is refused unless ``force`` (then the middle of the
   scan is analysed with crops at a fixed distance from the body's midline, and
   the result says so).
3. **Input** (:mod:`mskai.sij.preprocess`): per analysed position and side a
   depth-5 stack around the joint, resampled and windowed as the bundle says.
4. **Network**: MS-2.5D-Net (:mod:`mskai.sij.model`) gives per crop the 4 grade
   probabilities and a lesion map.
5. **Grades**: per side the per-slice classes go through the paper's output layer
   (:func:`mskai.sij.vote.coherence_vote`, α from the bundle) to the side grade;
   the paper's single grade is the same vote over each slice's higher side.
   Grades are 0-3; the modified New York grade 4 (ankylosis) is folded into 3
   (the paper's 4 classes), so the verdict rule is unchanged by the fold.
6. **Verdict**: ``sacroiliitis`` by the modified New York rule (bilateral grade
   >= 2 or unilateral grade >= 3) on the side grades, else ``normal``;
   ``verdict_paper`` is the paper's (single grade >= the bundle's positive grade,
   2).  ``probability`` is the probability of sacroiliitis by the same rule from
   the range-mean class probabilities of each side (sides taken as independent).
7. **Evidence**: the lesion maps on the CT's grid (``heatmap.nii.gz``), and per
   side the strongest lesion point and the joint centre (LPS mm and voxel index).
8. **Training distribution** (:mod:`mskai.distribution`): the crops' penultimate
   features against the bundle's summary of its training crops; the result's
   ``training_distribution`` and, when the CT is unlike them, a warning.
"""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mskai.ct import check_ct, finite_image
from mskai.device import describe_device, resolve_device
from mskai.distribution import assess
from mskai.errors import InputError
from mskai.geometry import lps_to_index, world_bounds
from mskai.image import Image
from mskai.io import require_volume
from mskai.results import StageTimer, new_result
from mskai.sij.preprocess import SIDES, SIJPreprocessing, SliceStacks, heat_to_volume, sample_stacks
from mskai.sij.vote import coherence_scores, coherence_vote
from mskai.tasks import ProgressCallback

MODULE = "SacroiliitisCT"
GRADE_NAMES = ("0 normal", "1 suspicious", "2 minimal sacroiliitis", "3 moderate or advanced sacroiliitis")
"""The 4 classes (modified New York grades 0-3; grade 4, ankylosis, counts as 3)."""
FALLBACK_HALF_DISTANCE_MM = 40.0
"""With ``force`` and no joint found: each crop this far left/right of the body's midline."""
BATCH = 16
"""Crops per forward pass."""


@dataclass
class SIJAnalysis:
    """Everything one analysis produced.

    Attributes:
        result: the ``result.json`` dict.
        heatmap: lesion probability (0..1) on the CT's grid.
        stacks: the network input (:class:`mskai.sij.preprocess.SliceStacks`).
        probabilities: ``(N, 2, 4)`` class probabilities per analysed slice and side.
        lesion: ``(N, 2, size, size)`` lesion probabilities per crop.
        image: the analysed CT (after NaN replacement).
    """

    result: dict[str, Any]
    heatmap: Image | None
    stacks: SliceStacks | None
    probabilities: np.ndarray
    lesion: np.ndarray | None
    image: Image | None = field(repr=False, default=None)


def preprocessing_of(metadata: Mapping[str, Any]) -> SIJPreprocessing:
    """The bundle's preprocessing: its ``preprocessing`` block, else its ``input`` spec
    (size, spacing, window) with the default slice step."""
    if metadata.get("preprocessing"):
        return SIJPreprocessing.from_dict(metadata["preprocessing"])
    spec = metadata.get("input") or {}
    size, spacing = spec.get("size", [160])[0], spec.get("spacing_mm", [0.5])[0]
    return SIJPreprocessing(size=int(size), spacing_mm=float(spacing),
                            window=tuple(spec.get("window_hu", (-200.0, 1300.0))))


def parse_range(value: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``--range Z0,Z1`` (LPS z in mm, either order) as ``(z_inferior, z_superior)``."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,;\s]+", value.strip()) if p]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
    else:
        numbers = [float(v) for v in value]
    if len(numbers) != 2 or not all(np.isfinite(numbers)):
        raise InputError(f"--range {value!r} is not understood; give two LPS z positions in mm like -120,-95")
    low, high = sorted(numbers)
    if high - low <= 0:
        raise InputError(f"--range {value!r}: the two positions must differ")
    return low, high


def ny_positive(left: int, right: int) -> bool:
    """Modified New York rule: bilateral grade >= 2 or unilateral grade >= 3."""
    return (left >= 2 and right >= 2) or left >= 3 or right >= 3


def sacroiliitis_probability(p_left: np.ndarray, p_right: np.ndarray) -> float:
    """P(modified New York positive) from two independent 4-class distributions."""
    return float(sum(p_left[a] * p_right[b] for a, b in itertools.product(range(4), range(4))
                     if ny_positive(a, b)))


class _FallbackJoints:
    """Crops at a fixed distance from the body's midline (``force`` without a joint found)."""

    def __init__(self, image: Image, range_mm: tuple[float, float]):
        body = image.array > -300
        if body.any():
            k, j, i = np.nonzero(body[:: max(1, body.shape[0] // 8), ::4, ::4])
            ijk = np.stack([i * 4, j * 4, k * max(1, body.shape[0] // 8)], axis=1).astype(float)
            centre = (ijk * np.asarray(image.spacing)) @ image.direction.T + np.asarray(image.origin)
            self.x, self.y = float(np.median(centre[:, 0])), float(np.median(centre[:, 1]))
        else:
            low, high = world_bounds(image)
            self.x, self.y = float((low[0] + high[0]) / 2), float((low[1] + high[1]) / 2)
        self.range_mm = range_mm

    def centre_at(self, side: str, z_mm: float) -> tuple[float, float, float]:
        sign = 1.0 if side == "left" else -1.0
        return self.x + sign * FALLBACK_HALF_DISTANCE_MM, self.y, float(z_mm)


def locate(image: Image, *, range_mm: tuple[float, float] | None, bones: Image | None,
           bone_names: Mapping[int, str] | None, force: bool, min_slices: int) -> tuple[Any, tuple[float, float], str, list[str]]:
    """The joints (something with ``centre_at(side, z)``), the analysed range, its source
    and warnings."""
    from mskai.sij.joints import find_joints

    warnings: list[str] = []
    low, high = world_bounds(image)
    scan_z = (float(low[2]), float(high[2]))
    if range_mm is not None and (range_mm[1] < scan_z[0] or range_mm[0] > scan_z[1]):
        raise InputError(f"--range {range_mm[0]:g},{range_mm[1]:g} mm lies outside the scan "
                         f"(z {scan_z[0]:.1f} to {scan_z[1]:.1f} mm)")
    try:
        joints = find_joints(image, bones=bones, bone_names=bone_names, min_slices=min_slices)
    except InputError as error:
        if not force and range_mm is None:
            raise InputError(f"{error}; use --force to analyse anyway") from None
        middle = (scan_z[0] + scan_z[1]) / 2
        chosen = range_mm or (middle - 7.5, middle + 7.5)
        warnings.append(f"{error}: analysed {'the given range' if range_mm else 'the middle of the scan'} "
                        f"with crops {FALLBACK_HALF_DISTANCE_MM:g} mm either side of the body's midline; "
                        "the grades are unreliable")
        return _FallbackJoints(image, chosen), chosen, "user" if range_mm else "fallback", warnings
    warnings.extend(joints.warnings)
    if range_mm is not None:
        return joints, range_mm, "user", warnings
    return joints, tuple(float(v) for v in joints.range_mm), joints.source, warnings


def _forward(network: torch.nn.Module, tensor: np.ndarray, device: torch.device,
             features: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, 2, 4)`` and lesion probabilities ``(N, 2, S, S)``; with
    ``features`` a list, the penultimate features of every crop (what the grade head reads,
    ``(N*2, C)``) are appended to it."""
    n, sides, depth, size, _ = tensor.shape
    flat = torch.from_numpy(tensor.reshape(n * sides, 1, depth, size, size))
    probs, maps = [], []
    hook = None
    if features is not None:
        hook = network.classifier.register_forward_hook(
            lambda module, inputs, output: features.append(inputs[0].detach().float().cpu().numpy()))
    try:
        with torch.inference_mode():
            for start in range(0, flat.shape[0], BATCH):
                out = network(flat[start:start + BATCH].to(device))
                probs.append(torch.softmax(out.grade_logits.float(), dim=1).cpu())
                maps.append(torch.sigmoid(out.lesion_logits.float())[:, 0].cpu())
    finally:
        if hook is not None:
            hook.remove()
    return (torch.cat(probs).numpy().reshape(n, sides, -1),
            torch.cat(maps).numpy().reshape(n, sides, size, size))


def grades_from_probabilities(probabilities: np.ndarray, alpha: float) -> dict[str, Any]:
    """Side grades, the paper's single grade and their vote scores from ``(N, 2, 4)``."""
    classes = probabilities.argmax(axis=2)
    side = {name: int(coherence_vote(classes[:, s].tolist(), alpha)) for s, name in enumerate(SIDES)}
    overall_classes = classes.max(axis=1).tolist()
    return {"side_grades": side, "grade": int(coherence_vote(overall_classes, alpha)),
            "classes": classes, "overall_classes": overall_classes,
            "scores": {"overall": coherence_scores(overall_classes, alpha),
                       **{name: coherence_scores(classes[:, s].tolist(), alpha) for s, name in enumerate(SIDES)}}}


def _max_of_two(p_left: np.ndarray, p_right: np.ndarray) -> np.ndarray:
    """Distribution of max(L, R) for independent L, R (a slice's higher side)."""
    cl, cr = np.cumsum(p_left), np.cumsum(p_right)
    both = cl * cr
    return np.diff(np.concatenate([[0.0], both]))


def analyze_image(image: Image, *, model: Any = None, device: str | torch.device = "auto",
                  bones: Image | None = None, bone_names: Mapping[int, str] | None = None,
                  range_mm: str | Sequence[float] | None = None, force: bool = False,
                  progress: ProgressCallback | None = None, timer: StageTimer | None = None) -> SIJAnalysis:
    """Grade sacroiliitis on one pelvic CT (see the module docstring).

    Args:
        image: the CT (HU, any orientation).
        model: a bundle (folder, id, :class:`mskai.bundles.Bundle`) or an already loaded
            ``(SIJNet, metadata)``; None: the default ``sij`` bundle.
        bones: optional bone labelmap (sacrum, hip_left, hip_right) on any grid, with
            ``bone_names`` (label -> name) or names in its meta.
        range_mm: the analysed range ``(z0, z1)`` in LPS mm (or ``"z0,z1"``); None: proposed.
        force: analyse a non-CT or a CT without a joint found (with a warning).
    """
    from mskai.sij.model import load_sij_bundle

    report = progress or (lambda fraction, message: None)
    timer = timer or StageTimer()
    report(0.0, "checking the input")
    require_volume(image, what=f"{MODULE} (an axial analysis of a pelvic CT)")
    image, nan_warning = finite_image(image)
    warnings: list[str] = list(image.warnings)
    if nan_warning:
        warnings.append(nan_warning)
    ct_warning = check_ct(image, force, module=MODULE)
    if ct_warning:
        warnings.append(ct_warning)
    user_range = parse_range(range_mm)

    torch_device = resolve_device(device)
    if isinstance(model, tuple):
        network, metadata = model
    else:
        network, metadata = load_sij_bundle(model, device=torch_device)
    model_device = next(network.parameters()).device
    prep = preprocessing_of(metadata)
    alpha = float(metadata.get("alpha", 0.5))
    positive_grade = int((metadata.get("thresholds") or {}).get("positive_grade", 2))

    report(0.1, "finding the sacroiliac joints")
    with timer("joints"):
        joints, chosen, source, joint_warnings = locate(image, range_mm=user_range, bones=bones,
                                                        bone_names=bone_names or (bones.meta.get("segment_names")
                                                                                  if bones is not None else None),
                                                        force=force, min_slices=prep.min_slices)
    warnings.extend(w for w in joint_warnings if w not in warnings)

    report(0.3, "sampling the joints")
    with timer("preprocess"):
        stacks = sample_stacks(image, chosen, joints.centre_at, prep)

    report(0.4, f"grading {stacks.n_slices} slices x 2 joints")
    with timer("model"):
        feature_rows: list = []
        probabilities, lesion = _forward(network, stacks.tensor, model_device, feature_rows)

    with timer("postprocess"):
        grades = grades_from_probabilities(probabilities, alpha)
        mean = probabilities.mean(axis=0)
        probability = sacroiliitis_probability(mean[0], mean[1])
        side = grades["side_grades"]
        positive = ny_positive(side["left"], side["right"])
        heatmap = heat_to_volume(image, stacks, lesion)
        evidence = _evidence(image, stacks, lesion, side)

    result = new_result("sij", image, metadata.get("info"))
    result["warnings"] = warnings
    slices = []
    for m in range(stacks.n_slices):
        both = _max_of_two(probabilities[m, 0], probabilities[m, 1])
        slices.append({
            "index": m, "position": m + 1, "z_mm": round(float(stacks.z_mm[m]), 3),
            "center_mm": [round(float(v), 3) for v in stacks.centres[m].mean(axis=0)],
            "grade": int(grades["overall_classes"][m]),
            "probabilities": [round(float(p), 6) for p in both],
            "sides": {name: {"grade": int(grades["classes"][m, s]),
                             "probabilities": [round(float(p), 6) for p in probabilities[m, s]],
                             "center_mm": [round(float(v), 3) for v in stacks.centres[m, s]]}
                      for s, name in enumerate(SIDES)}})
    result.update({
        "verdict": "sacroiliitis" if positive else "normal",
        "verdict_rule": "modified New York: bilateral grade >= 2 or unilateral grade >= 3",
        "verdict_paper": "sacroiliitis" if grades["grade"] >= positive_grade else "normal",
        "grade": grades["grade"],
        "grade_name": GRADE_NAMES[grades["grade"]],
        "side_grades": side,
        "probability": round(probability, 6),
        "side_probabilities": {name: [round(float(p), 6) for p in mean[s]] for s, name in enumerate(SIDES)},
        "slice_range_mm": [round(float(chosen[0]), 3), round(float(chosen[1]), 3)],
        "range_source": source,
        "joint_span_mm": ([round(float(v), 3) for v in joints.span_mm] if hasattr(joints, "span_mm") else None),
        "slices": slices,
        "vote": {"alpha": alpha, "scores": {key: {str(c): round(float(v), 4) for c, v in value.items()}
                                            for key, value in grades["scores"].items()}},
        "evidence": evidence,
        "preprocessing": prep.to_dict(),
        "device": describe_device(model_device),
        "inference": metadata.get("inference", "PyTorch"),
    })
    distribution, far = assess(metadata.get("training_distribution"), np.concatenate(feature_rows),
                               demo=bool(metadata.get("demo")), what="CT")
    result["training_distribution"] = distribution
    if far:
        result["warnings"].append(far)
    if result["verdict_paper"] != result["verdict"]:
        result["warnings"].append(
            f"the paper's single grade ({grades['grade']}) and the modified New York rule on the side grades "
            f"(left {side['left']}, right {side['right']}) disagree; the verdict follows the New York rule")
    result["timing"] = timer.as_dict()
    report(1.0, f"{result['verdict']} (grade {grades['grade']}, p = {probability:.3f})")
    return SIJAnalysis(result, heatmap, stacks, probabilities, lesion, image)


def _evidence(image: Image, stacks: SliceStacks, lesion: np.ndarray, side_grades: Mapping[str, int]) -> list[dict]:
    """Per side: the strongest lesion point and the joint centre at the range's middle."""
    from mskai.sij.preprocess import crop_points

    entries = []
    middle = stacks.n_slices // 2
    for s, side in enumerate(SIDES):
        m, r, c = np.unravel_index(int(np.argmax(lesion[:, s])), lesion[:, s].shape)
        value = float(lesion[m, s, r, c])
        if value >= 0.5:
            point = crop_points(stacks.centres[m, s], side, stacks.prep)[r, c]
            entries.append(_entry(image, point, side, "strongest lesion point", value, side_grades[side]))
        entries.append(_entry(image, stacks.centres[middle, s], side, "joint centre", None, side_grades[side]))
    return entries


def _entry(image: Image, point: np.ndarray, side: str, kind: str, value: float | None, grade: int) -> dict:
    voxel = np.round(lps_to_index(image, point)).astype(int)
    voxel = np.clip(voxel, 0, np.asarray(image.size) - 1)
    return {"side": side, "kind": kind, "grade": int(grade),
            "position_mm": [round(float(v), 3) for v in point], "voxel_index": [int(v) for v in voxel],
            "value": None if value is None else round(value, 6)}


# --------------------------------------------------------------------------- files

OVERLAY_WINDOW = (550.0, 1500.0)
"""(centre, width): -200..1300 HU, the joint space to dense sclerotic bone."""
OVERLAY_HEAT_RANGE = (0.3, 1.0)
"""Lesion probabilities below 0.3 are left clear on the overlays."""


def write_outputs(analysis: SIJAnalysis, output_dir: str | Path) -> dict[str, Any]:
    """Write ``result.json``, ``heatmap.nii.gz`` and an overlay PNG per side of the
    range's middle slice and of each side's most lesioned slice (the crop as the
    network saw it, the lesion map over it)."""
    from mskai.io import write_image
    from mskai.results import save_overlay_png, write_final_result

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outputs: dict[str, Any] = {"result": "result.json", "heatmap": None, "overlays": []}
    if analysis.heatmap is not None:
        write_image(analysis.heatmap, out / "heatmap.nii.gz")
        outputs["heatmap"] = "heatmap.nii.gz"
    stacks = analysis.stacks
    if stacks is not None and analysis.lesion is not None:
        prep, depth_mid = stacks.prep, stacks.prep.depth // 2
        low, high = prep.window
        for s, side in enumerate(SIDES):
            m = int(np.argmax(analysis.lesion[:, s].reshape(stacks.n_slices, -1).max(axis=1)))
            hu = stacks.tensor[m, s, depth_mid] * (high - low) + low
            name = f"overlay_{side}_z{stacks.z_mm[m]:+.0f}.png".replace("+", "p").replace("-", "m")
            save_overlay_png(out / name, hu, window=OVERLAY_WINDOW, heatmap=analysis.lesion[m, s],
                             heatmap_range=OVERLAY_HEAT_RANGE)
            outputs["overlays"].append(name)
    return write_final_result(out, analysis.result, outputs, start)
