"""WristQC analysis of one radiograph (SPEC §4): the 100-point score and its evidence.

``analyze_radiograph`` runs the four parts on one :class:`mskai.Image` and
returns a :class:`WristAnalysis` whose ``result`` is the ``result.json`` dict:

1. **Input checks** (SPEC §5): a volume (more than one slice) is refused; a
   modality other than a radiograph (CT, MR, US, ...) and a ``BodyPartExamined``
   that names another part (CHEST, LEG, ANKLE, KNEE, FOOT, PELVIS, SKULL, LOWER
   EXTREMITY, ...) are refused unless ``force`` (then a warning that says why).
   **No score without a wrist**: when ``BodyPartExamined`` is missing or only
   generic (:data:`GENERIC_BODY_PARTS`: EXTREMITY, UPPER EXTREMITY, HAND, ARM,
   FOREARM, ...), the image itself must show a wrist: the keypoint model must
   find the view's wrist keypoints above its confidence threshold
   (:data:`WRIST_KEYPOINTS`: AP both styloids, LAT the scaphoid and the distal
   radius or ulna), and a view that came from the classifier must have a
   confidence of at least :data:`MIN_VIEW_CONFIDENCE`.  Otherwise the image is
   refused with one line, ``no wrist found: ...; use --force to score anyway``
   (:class:`NotAWristError`); with ``force`` it is scored with that reason as a
   warning.  A confident view classifier alone is not taken as a wrist: it was
   trained on wrists only and answers AP or LAT for any image (the demo one
   says AP with 0.996 for a real lower-leg film and 0.99999 for a real chest).
2. **Pixel spacing**: from the DICOM tags (``spacing_source`` ``"dicom"``), from
   the geometry of a NIfTI/NRRD file or a Slicer volume node (``"image"``), else
   ``default_spacing_mm`` with a warning (``"assumed"``).
3. **View**: ``ViewPosition`` (AP/PA -> AP; LL/RL/LAT/LATERAL/ML/LM -> LAT), else the
   words of ``SeriesDescription``, ``ImageComments`` or ``ProtocolName``
   (``view_source`` ``"dicom"``, ``view_tag`` names the tag); otherwise the view
   classifier (``"classifier"``, with its confidence).
4. **Parts**: tags (:func:`mskai.wrist.tags.score_tags`, 34), side marker
   (:func:`mskai.wrist.marker.detect_marker`, 20), artifact (the classifier, 10
   when its probability is below the bundle's threshold, default 0.5, with a
   Grad-CAM heatmap), layout (keypoints -> :func:`mskai.wrist.scoring.score_layout`,
   36, with per-task grades).  The Grad-CAM heatmap comes from the
   classifier's forward pass and is kept only for an image with an artifact.  Total, grade (:func:`grade_total`) and
   ``lost_points``: one entry per reason, ``{item, points_lost, reason}``, whose
   points add up to ``100 - total``.

Coordinates: keypoints and the marker are pixels ``(x, y)`` = (column, row),
origin at the centre of the top-left pixel.  ``evidence`` gives them also as
voxel indices ``(i, j, k)`` and, when the image has a geometry, as patient
positions in LPS millimetres (:func:`mskai.geometry.index_to_lps`; a DX/CR file
without ImagePositionPatient has origin 0 and identity axes, i.e. millimetres in
the detector plane).

5. **Training distribution** (:func:`training_distribution`, :mod:`mskai.distribution`):
   each network's features of the image (:func:`mskai.wrist.networks.feature_layer`: the
   view and artifact classifiers' last bottleneck block, the keypoint network's global
   branch, averaged over the image) against the summary its bundle recorded at training.
   ``training_distribution`` holds one block per network (``components``) and, at the top,
   the network farthest from its training data relative to its threshold (``component``,
   its ``distance`` and ``threshold``); ``in_distribution`` is False when any network's
   distance is above its threshold, None when none is and a bundle has no summary.  Each
   network out of distribution adds a warning that says which part of the score it decides.

:func:`rescore_layout` recomputes the layout part and everything that depends on
it after keypoints were corrected (the Slicer module calls it when a point is
moved); :func:`write_outputs` writes ``result.json``, the overlays and the reports.
"""
from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from mskai.distribution import assess, combine
from mskai.errors import InputError
from mskai.image import Image
from mskai.results import StageTimer, new_result
from mskai.tasks import ProgressCallback
from mskai.wrist.marker import MARKER_POINTS, MarkerResult, detect_marker
from mskai.wrist.scoring import LAYOUT_MAX, VIEW_KEYPOINTS, grade_total, score_layout
from mskai.wrist.tags import TAGS_MAX, score_tags

if TYPE_CHECKING:
    from mskai.wrist.models import WristModels

DEFAULT_SPACING_MM = (0.15, 0.15)
"""Pixel size (x, y) assumed when the input has none: a typical wrist DR detector pixel."""
ARTIFACT_POINTS = 10
DEFAULT_ARTIFACT_THRESHOLD = 0.5
WRIST_KEYPOINTS = {"AP": (("P2",), ("P3",)), "LAT": (("P1",), ("P2", "P4"))}
"""The keypoints that show a wrist, per view: each group needs one of its names found above the
keypoint model's confidence threshold (AP: the radial and the ulnar styloid; LAT: the scaphoid centre
and the distal radius or ulna centre).  A film cropped at the thumb still shows them; the proximal
shaft centres (LAT P3, P5) and the thumb joint (AP P1) are not wrist anatomy."""
MIN_VIEW_CONFIDENCE = 0.6
"""Without a specific BodyPartExamined, a view classifier this unsure means "not a wrist"."""

WRIST_BODY_PART_WORDS = ("WRIST", "CARPUS", "CARPAL", "SCAPHOID")
"""BodyPartExamined naming the wrist (as part of the text: "WRIST", "HANDWRIST", "R WRIST")."""
GENERIC_BODY_PARTS = ("", "EXTREMITY", "EXTREMITIES", "UPPER EXTREMITY", "UPPEREXTREMITY", "UPPER LIMB",
                      "UPPERLIMB", "LIMB", "HAND", "ARM", "FOREARM", "LOWER ARM", "LOWERARM")
"""BodyPartExamined values that may or may not be a wrist film: the image must show one (letters
only, spaces collapsed; "" is a missing or empty tag).  Anything else names another part."""
RADIOGRAPH_MODALITIES = ("DX", "CR", "RG", "DR", "OT")
VIEW_POSITIONS = {"AP": "AP", "PA": "AP", "LL": "LAT", "RL": "LAT", "LAT": "LAT", "LATERAL": "LAT",
                  "ML": "LAT", "LM": "LAT"}
"""ViewPosition (0018,5101) -> view."""
VIEW_WORDS = {"AP": {"AP", "PA", "FRONTAL", "ANTEROPOSTERIOR", "POSTEROANTERIOR", "DORSOPALMAR"},
              "LAT": {"LAT", "LATERAL", "LL", "RL", "ML", "LM"}}
"""Words of the free-text tags that name a view (a text naming both views says nothing)."""
VIEW_TEXT_TAGS = ("SeriesDescription", "ImageComments", "ProtocolName")
KEYPOINT_DESCRIPTIONS = {
    "AP": {"P1": "thumb MCP joint", "P2": "radial styloid", "P3": "ulnar styloid"},
    "LAT": {"P1": "scaphoid centre", "P2": "distal radius centre", "P3": "proximal radius centre",
            "P4": "distal ulna centre", "P5": "proximal ulna centre"},
}
EVIDENCE_CONVENTION = (
    "pixel_xy: (column, row), origin at the centre of the top-left pixel; voxel_index: (i, j, k); "
    "position_mm: patient LPS millimetres (DICOM/ITK), null when the image has no geometry")


@dataclass
class WristAnalysis:
    """One analysed radiograph.

    ``result``: the ``result.json`` dict; ``image``: the input; ``plane``: its
    pixels (rows, cols) float32, MONOCHROME2 sense; ``spacing_mm``: (x, y) used
    for the layout rules; ``heatmap``: the artifact Grad-CAM (rows, cols) in 0..1
    or None; ``marker``: the marker detector's answer.
    """

    result: dict[str, Any]
    image: Image
    plane: np.ndarray
    spacing_mm: tuple[float, float]
    heatmap: np.ndarray | None
    marker: MarkerResult


# --------------------------------------------------------------------------- input checks

def _tag(image: Image, keyword: str) -> str:
    """A DICOM element of the image's header as stripped text ('' when absent)."""
    header = image.header
    value = header.get(keyword) if header is not None else None
    if value is None or value == "":
        meta_key = {"BodyPartExamined": "body_part_examined", "ViewPosition": "view_position",
                    "Modality": "modality", "SeriesDescription": "series_description"}.get(keyword)
        value = image.meta.get(meta_key) if meta_key else None
    return " ".join(str(value).split()) if value not in (None, "") else ""


class NotAWristError(InputError):
    """The image is refused because it is not a wrist film (another body part, or no wrist found
    on an image whose BodyPartExamined does not say wrist); the batch records it as "not a wrist"."""


def body_part_kind(body_part: str) -> str:
    """``"wrist"``, ``"generic"`` (missing, empty or :data:`GENERIC_BODY_PARTS`) or ``"other"``
    for a BodyPartExamined value."""
    words = re.findall(r"[A-Z]+", body_part.upper())
    if any(word in "".join(words) for word in WRIST_BODY_PART_WORDS):
        return "wrist"
    return "generic" if " ".join(words) in GENERIC_BODY_PARTS else "other"


def check_radiograph(image: Image, *, force: bool = False) -> list[str]:
    """Refuse what is not one radiograph of a wrist; return the warnings of what
    ``force`` let through.

    Raises :class:`InputError` (one line) for a volume, and, unless ``force``,
    for a modality that is not a radiograph, and :class:`NotAWristError` for a
    BodyPartExamined that names another part than the wrist.  (Whether an
    image with a generic or no BodyPartExamined shows a wrist is decided by
    :func:`analyze_radiograph`, from the keypoints.)
    """
    if image.shape[0] > 1:
        modality = _tag(image, "Modality")
        kind = f"a {modality} volume" if modality else "a volume"
        raise InputError(f"WristQC scores one wrist radiograph (a single 2D image), got {kind} of "
                         f"{image.shape[0]} slices")
    warnings = []
    modality = _tag(image, "Modality").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        message = f"modality {modality} is not a radiograph (DX/CR)"
        if not force:
            raise InputError(f"{message}: WristQC scores wrist radiographs; use --force to analyse it anyway")
        warnings.append(f"{message}; analysed anyway (--force)")
    body_part = _tag(image, "BodyPartExamined").upper()
    if body_part_kind(body_part) == "other":
        message = f"BodyPartExamined is {body_part}, not a wrist"
        if not force:
            raise NotAWristError(f"{message}: WristQC scores wrist AP/lateral radiographs; use --force to "
                                 "analyse it anyway")
        warnings.append(f"{message}; analysed anyway (--force), the score is meaningless for other body parts")
    return warnings


def wrist_doubts(view: str, keypoints: Mapping[str, Any], view_confidence: float | None) -> list[str]:
    """Why the image does not show a wrist (empty: it does): the view's wrist keypoints
    (:data:`WRIST_KEYPOINTS`) not found, a view classifier below :data:`MIN_VIEW_CONFIDENCE`."""
    doubts = []
    groups = WRIST_KEYPOINTS[view]
    missing = [" or ".join(f"{name} ({KEYPOINT_DESCRIPTIONS[view][name]})" for name in group)
               for group in groups if not any(keypoints.get(name) is not None for name in group)]
    if missing:
        found = sum(keypoints.get(name) is not None for name in VIEW_KEYPOINTS[view])
        doubts.append(f"{found} of {len(VIEW_KEYPOINTS[view])} {view} keypoints found with confidence "
                      f"({' and '.join(missing)} not found)")
    if view_confidence is not None and view_confidence < MIN_VIEW_CONFIDENCE:
        doubts.append(f"the view classifier is unsure (confidence {view_confidence:.2f})")
    return doubts


def radiograph_spacing(image: Image, default_mm: Sequence[float] = DEFAULT_SPACING_MM
                       ) -> tuple[tuple[float, float], str, str | None]:
    """``((sx, sy) mm, source, warning)``: the pixel size the layout rules use.

    ``source`` is ``"dicom"`` (PixelSpacing/ImagerPixelSpacing), ``"image"`` (the
    geometry of a NIfTI/NRRD file or of a Slicer volume node) or ``"assumed"``
    (``default_mm``, with the warning to report).
    """
    source = image.meta.get("spacing_source")
    if source == "dicom":
        return (float(image.spacing[0]), float(image.spacing[1])), "dicom", None
    if source in ("file", "image") and image.meta.get("has_geometry", True):
        return (float(image.spacing[0]), float(image.spacing[1])), "image", None
    sx, sy = (float(v) for v in default_mm)
    return (sx, sy), "assumed", (f"no pixel spacing in the input: {sx:g} x {sy:g} mm per pixel assumed "
                                 "(the configured default); distances in cm are not calibrated")


def _reader_spacing_warning(warning: str) -> bool:
    """The reader's generic "1 mm assumed" notes, replaced by WristQC's own spacing warning."""
    return "1 mm per pixel assumed" in warning or "pixel spacing assumed 1 mm" in warning


def view_from_tags(image: Image) -> tuple[str, str] | None:
    """``(view, tag keyword)`` when the DICOM tags say the view, else None."""
    position = _tag(image, "ViewPosition").upper()
    if position in VIEW_POSITIONS:
        return VIEW_POSITIONS[position], "ViewPosition"
    for keyword in VIEW_TEXT_TAGS:
        words = set(re.findall(r"[A-Z]+", _tag(image, keyword).upper()))
        named = [view for view, vocabulary in VIEW_WORDS.items() if words & vocabulary]
        if len(named) == 1:
            return named[0], keyword
    return None


# --------------------------------------------------------------------------- scoring helpers

def _artifact_part(probability: float, threshold: float) -> dict[str, Any]:
    found = probability >= threshold
    return {"score": 0 if found else ARTIFACT_POINTS, "max": ARTIFACT_POINTS, "probability": round(probability, 4),
            "threshold": threshold, "found": found}


def _layout_part(view: str, keypoints: Mapping[str, Any], image_size: tuple[int, int],
                 spacing_mm: tuple[float, float]) -> dict[str, Any]:
    layout = score_layout(view, keypoints, image_size, spacing_mm)
    layout["score"] = layout["total"]
    return layout


def lost_points(parts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every lost point with its reason: ``[{item, points_lost, reason}]``; the
    points add up to ``100 - total``."""
    lost: list[dict[str, Any]] = []
    tags = parts["tags"]
    if tags.get("warning"):
        lost.append({"item": "tags", "points_lost": TAGS_MAX - tags["score"], "reason": tags["warning"]})
    else:
        for keyword in tags["missing"]:
            what = ("neither PixelSpacing nor ImagerPixelSpacing (the magnification scale) is present"
                    if keyword == "PixelSpacing" else f"DICOM {keyword} is missing or empty")
            lost.append({"item": f"tags.{keyword}", "points_lost": 2, "reason": what})
    marker = parts["marker"]
    if marker["score"] < MARKER_POINTS:
        lost.append({"item": "marker", "points_lost": MARKER_POINTS - marker["score"],
                     "reason": marker.get("reason") or "no complete L/R lead marker found"})
    artifact = parts["artifact"]
    if artifact["score"] < ARTIFACT_POINTS:
        lost.append({"item": "artifact", "points_lost": ARTIFACT_POINTS - artifact["score"],
                     "reason": f"foreign-object artifact detected (probability {artifact['probability']:.2f} "
                               f">= {artifact['threshold']:g})"})
    for name, task in parts["layout"]["tasks"].items():
        if task["score"] < task["max"]:
            lost.append({"item": f"layout.{name}", "points_lost": task["max"] - task["score"],
                         "reason": task["reason"]})
    return lost


def _keypoint_evidence(image: Image, view: str, keypoints: Mapping[str, Any],
                       confidences: Mapping[str, float] | None) -> list[dict[str, Any]]:
    entries = []
    for name in VIEW_KEYPOINTS[view]:
        point = keypoints.get(name)
        if point is None:
            continue
        entry = _pixel_evidence(image, point)
        entries.append({"kind": "keypoint", "label": name, "description": KEYPOINT_DESCRIPTIONS[view][name],
                        **entry, "confidence": None if confidences is None else confidences.get(name)})
    return entries


def _pixel_evidence(image: Image, point: Sequence[float]) -> dict[str, Any]:
    from mskai.geometry import index_to_lps

    x, y = float(point[0]), float(point[1])
    position = None
    if image.meta.get("has_geometry", True):
        position = [round(float(v), 3) for v in index_to_lps(image, np.array([[x, y, 0.0]]))[0]]
    return {"pixel_xy": [round(x, 2), round(y, 2)], "voxel_index": [round(x, 2), round(y, 2), 0],
            "position_mm": position}


def _marker_evidence(image: Image, marker: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not marker.get("found"):
        return []
    return [{"kind": "marker", "label": f"{marker['letter']} marker", **_pixel_evidence(image, marker["position_px"]),
             "box_px": marker["box"], "plate_box_px": marker.get("plate_box"), "similarity": marker["similarity"]}]


def _artifact_evidence(image: Image, heatmap: np.ndarray | None, artifact: Mapping[str, Any]) -> list[dict]:
    if heatmap is None or not artifact["found"] or not np.any(heatmap > 0):
        return []
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return [{"kind": "artifact", "label": "artifact heatmap peak", **_pixel_evidence(image, (col, row)),
             "value": round(float(heatmap[row, col]), 4)}]


def summarise(result: dict[str, Any], image: Image, heatmap: np.ndarray | None = None,
              confidences: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Fill ``total``, ``score``, ``grade``, ``verdict``, ``lost_points`` and
    ``evidence`` of ``result`` from its ``parts``, ``view`` and ``keypoints``."""
    parts = result["parts"]
    total = int(sum(parts[name]["score"] for name in ("tags", "marker", "artifact", "layout")))
    grade = grade_total(total)
    result.update(total=total, score=total, max=TAGS_MAX + MARKER_POINTS + ARTIFACT_POINTS + LAYOUT_MAX,
                  grade=grade, verdict=f"grade {grade} ({total}/100)", lost_points=lost_points(parts))
    keypoints = {name: (None if p is None else tuple(p)) for name, p in result["keypoints"].items()}
    result["evidence"] = (_keypoint_evidence(image, result["view"], keypoints, confidences)
                          + _marker_evidence(image, parts["marker"])
                          + _artifact_evidence(image, heatmap, parts["artifact"]))
    result["evidence_convention"] = EVIDENCE_CONVENTION
    return result


def _keypoints_json(view: str, keypoints: Mapping[str, Any]) -> dict[str, list[float] | None]:
    return {name: (None if keypoints.get(name) is None
                   else [round(float(keypoints[name][0]), 2), round(float(keypoints[name][1]), 2)])
            for name in VIEW_KEYPOINTS[view]}


# --------------------------------------------------------------------------- training distribution

NETWORK_LABELS = {"view": "view classifier", "artifact": "artifact classifier", "keypoints": "keypoint network"}
DISTRIBUTION_CONSEQUENCES = {
    "view": "it decides the view when the tags do not say it, and so which keypoints and rules are scored",
    "artifact": "it decides the artifact part (10 points)",
    "keypoints": "it places the keypoints: the layout part (36 points) and whether a wrist is found"}
DISTRIBUTION_METHOD = ("Mahalanobis distance of pooled features (Ledoit-Wolf shrunk covariance), per network "
                       "(view and artifact classifiers: the last bottleneck block; keypoint network: the global "
                       "branch; averaged over the image); out when any network is")


def training_distribution(models: Any, plane: np.ndarray) -> tuple[dict[str, Any] | None, list[str]]:
    """``result["training_distribution"]`` and its warnings (module docstring, item 5); None
    (and no warning) for models that give no features (test doubles)."""
    features_of = getattr(models, "distribution_features", None)
    if features_of is None:
        return None, []
    assessed = {}
    for name, features in features_of(plane).items():
        metadata = getattr(models, name).metadata
        assessed[name] = assess(metadata.get("training_distribution"), features, demo=bool(metadata.get("demo")),
                                what=f"radiograph, as the {NETWORK_LABELS[name]} sees it,")
    return combine(assessed, labels=NETWORK_LABELS, consequences=DISTRIBUTION_CONSEQUENCES,
                   method=DISTRIBUTION_METHOD, unit="image")


# --------------------------------------------------------------------------- the analysis

def _model_block(models: WristModels) -> dict[str, Any]:
    """``result["model"]``: the three bundles, with ids and versions joined for one-line display."""
    components = models.info()
    demo = any(info.get("demo") for info in components.values())
    return {"id": " + ".join(info["id"] for info in components.values()),
            "version": " + ".join(info["version"] for info in components.values()),
            "sha256": {name: info["sha256"] for name, info in components.items()},
            "demo": demo,
            "disclaimer": next((info["disclaimer"] for info in components.values() if info.get("disclaimer")), None),
            "components": components}


def _artifact_threshold(models: WristModels) -> float:
    loaded = getattr(models, "artifact", None)
    metadata = getattr(loaded, "metadata", None) or {}
    thresholds = metadata.get("thresholds", {})
    return float(thresholds.get("artifact_probability", DEFAULT_ARTIFACT_THRESHOLD))


def analyze_radiograph(image: Image, *, models: WristModels | None = None, device: str = "auto", force: bool = False,
                       default_spacing_mm: Sequence[float] = DEFAULT_SPACING_MM,
                       progress: ProgressCallback | None = None, timer: StageTimer | None = None,
                       heatmap: bool = True) -> WristAnalysis:
    """Score one wrist radiograph (see the module docstring).

    Args:
        image: one radiograph, shape (1, rows, cols), MONOCHROME2 sense
            (:func:`mskai.io.read_image` inverts MONOCHROME1), ``header`` the DICOM
            dataset or None.
        models: a :class:`mskai.wrist.models.WristModels` (or anything with its
            ``predict_view``, ``predict_keypoints``, ``predict_artifact`` and
            ``info``); None loads the shipped demo bundles on ``device``.
        force: analyse a non-wrist or non-radiograph image anyway (with a warning).
        default_spacing_mm: (x, y) used when the input has no pixel spacing.
        progress: ``progress(fraction, message)``; may raise to cancel.
        timer: stages are added to it (a new one by default).
        heatmap: False skips the artifact Grad-CAM map (batch runs); with it, the
            probability and the map come from one forward pass.

    Returns:
        A :class:`WristAnalysis`; raises :class:`InputError` for refused input.
    """
    report = progress or (lambda fraction, message: None)
    timer = timer or StageTimer()
    with timer("checks"):
        warnings = check_radiograph(image, force=force)
        plane = np.ascontiguousarray(image.plane, dtype=np.float32)
        rows, cols = plane.shape
        if min(rows, cols) < 32:
            raise InputError(f"the image is {cols}x{rows} pixels: too small for a wrist radiograph")
        spacing, spacing_source, spacing_warning = radiograph_spacing(image, default_spacing_mm)
    if models is None:
        report(0.02, "loading the WristQC models")
        with timer("load_models"):
            from mskai.wrist.models import load_wrist_models

            models = load_wrist_models(device=device)

    result = new_result("wrist", image, _model_block(models))
    result["warnings"] = [w for w in result["warnings"] if not _reader_spacing_warning(w)] + warnings
    if spacing_warning:
        result["warnings"].append(spacing_warning)
    body_part = _tag(image, "BodyPartExamined")

    report(0.1, "finding the view")
    with timer("view"):
        from_tags = view_from_tags(image)
        view_confidence = None
        if from_tags is not None:
            view, view_tag = from_tags
            view_source = "dicom"
        else:
            view, view_confidence = models.predict_view(plane)
            view_source, view_tag = "classifier", None

    report(0.25, f"detecting the {view} keypoints")
    with timer("keypoints"):
        keypoints, confidences = models.predict_keypoints(plane, view)
    if body_part_kind(body_part) == "generic":
        doubts = wrist_doubts(view, keypoints, view_confidence)
        if doubts:
            tag = f"BodyPartExamined {body_part.upper()} does not say wrist" if body_part else "no BodyPartExamined"
            message = f"no wrist found: {tag}, and {'; '.join(doubts)}"
            if not force:
                raise NotAWristError(f"{message}; use --force to score anyway")
            result["warnings"].append(f"{message}; scored anyway (--force): the score is meaningless without a wrist")

    report(0.4, "scoring the DICOM tags")
    with timer("tags"):
        tags = score_tags(image.header)
        if tags.get("warning"):
            result["warnings"].append(tags["warning"])
    report(0.45, "looking for the L/R marker")
    with timer("marker"):
        marker = detect_marker(plane, spacing_mm=None if spacing_source == "assumed" else spacing)
    report(0.6, "looking for foreign-object artifacts")
    with timer("artifact"):
        # The map comes from the same forward pass as the probability (mskai.wrist.heatmaps.grad_cam);
        # it is kept only when there is an artifact to show.
        probability, artifact_map = models.predict_artifact(plane, spacing, heatmap=heatmap)
        artifact = _artifact_part(float(probability), _artifact_threshold(models))
    if not artifact["found"]:
        artifact_map = None
    report(0.85, "scoring the layout")
    with timer("layout"):
        layout = _layout_part(view, keypoints, (cols, rows), spacing)

    with timer("training_distribution"):
        distribution, far = training_distribution(models, plane)
    if distribution is not None:
        result["training_distribution"] = distribution
        result["warnings"].extend(far)

    result.update(view=view, view_source=view_source, view_tag=view_tag,
                  view_confidence=None if view_confidence is None else round(float(view_confidence), 4),
                  body_part_examined=body_part or None,
                  spacing_mm=[spacing[0], spacing[1]], spacing_source=spacing_source,
                  image_size=[cols, rows],
                  keypoints=_keypoints_json(view, keypoints),
                  keypoint_confidence={name: round(float(c), 4) for name, c in confidences.items()},
                  parts={"tags": tags, "marker": marker.to_dict(), "artifact": artifact, "layout": layout},
                  inference=getattr(models, "inference", "PyTorch"))
    summarise(result, image, artifact_map, confidences)
    result["timing"] = timer.as_dict()
    report(0.95, result["verdict"])
    return WristAnalysis(result=result, image=image, plane=plane, spacing_mm=spacing,
                         heatmap=artifact_map, marker=marker)


def rescore_layout(result: Mapping[str, Any], keypoints: Mapping[str, Any], image: Image,
                   heatmap: np.ndarray | None = None) -> dict[str, Any]:
    """A copy of ``result`` with the layout part re-scored on corrected ``keypoints``
    (name -> (x, y) pixels or None; names of the result's view only), and the
    total, grade, verdict, lost points and evidence that follow from it.
    ``keypoints_source`` becomes ``"edited"``."""
    updated = copy.deepcopy(dict(result))
    view = updated["view"]
    unknown = sorted(set(keypoints) - set(VIEW_KEYPOINTS[view]))
    if unknown:
        raise InputError(f"{', '.join(unknown)} are not {view} keypoints; expected "
                         f"{', '.join(VIEW_KEYPOINTS[view])}")
    width, height = updated["image_size"]
    spacing = tuple(updated["spacing_mm"])
    updated["keypoints"] = _keypoints_json(view, keypoints)
    updated["keypoints_source"] = "edited"
    updated["parts"]["layout"] = _layout_part(view, keypoints, (width, height), spacing)
    return summarise(updated, image, heatmap, updated.get("keypoint_confidence"))


# --------------------------------------------------------------------------- writing

def write_outputs(analysis: WristAnalysis, output_dir: str | Path) -> dict[str, Any]:
    """Write ``result.json``, ``overlay.png`` (keypoints, marker box, measured lines
    and angles), ``artifact_heatmap.png`` (when there is a heatmap), ``report.html``
    and ``report.pdf``; returns the result with ``outputs`` (file names)."""
    from mskai.results import write_final_result
    from mskai.wrist.report import write_reports

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = analysis.result
    outputs: dict[str, Any] = {"result": "result.json"}
    outputs.update(write_reports(result, analysis.plane, out, analysis.heatmap))
    return write_final_result(out, result, outputs, start)
