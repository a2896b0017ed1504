"""Side-marker part of WristQC (SPEC §4.2): find a complete L or R lead letter.

Method (the paper's, with the choices it leaves open written down):

1. **Working image.** The plane (MONOCHROME2 sense: lead is bright) is
   block-averaged to about 0.3 mm pixels (or to a long side of at most 800
   pixels when the spacing is unknown; a 3x3 mean when it is not reduced),
   which keeps a 5 mm letter at >= 15 pixels, averages the noise and makes
   the rest fast.
2. **Binarize** at three levels between the median (soft tissue/background)
   and the 99.99th percentile (lead/metal) of the working image, at 85 %, 70 %
   and 55 % of that range: a lead letter is among the brightest things on a
   radiograph, and the lower levels keep a letter that is dimmer than a metal
   ring or that lies over bone.
3. **Morphological closing** (3x3) bridges one-pixel gaps left by noise.
4. **Connected components** (``scipy.ndimage.label``, 8-connected).  A
   component is a candidate when its bounding box's long side is 4–30 mm (1–15 %
   of the image's long side when the spacing is unknown), its short/long side
   ratio is >= 0.4 and it fills 15–75 % of its box (a disc or a button fills
   ~79 %, a plate 100 %).
5. **Template match.** The candidate's bounding box is scaled to 64x64 (both
   sides stretched, as the paper scales each component to 64x64, which also
   removes the width differences between fonts) and compared pixel by pixel
   with 64x64 L and R templates in 8 orientations each (mirrored or not,
   rotated by 0/90/180/270 degrees).  Similarity is the **balanced pixel
   agreement** ``0.5 * (fraction of the template's letter pixels that the
   candidate covers + fraction of the template's background pixels it leaves
   empty)``: 1 for a perfect match, 0.5 for an empty or a full square.
   Similarity > 0.85 (*paper*) means found.
6. **Complete only.** A candidate whose component touches the image border
   may be cut by the edge: it is reported as a candidate with that reason and
   never counts as found.

Templates are made by the project at first use (and cached): L and R rendered
from fonts bundled with matplotlib (DejaVu Sans Bold, DejaVu Sans, STIX
General Bold) with Pillow, and a stroke-drawn L and R.

An L whose foot and stem are alike is (nearly) symmetric about its diagonal
once scaled to a square, so a mirrored L reads as a rotated L; ``mirrored``
and ``rotation_deg`` are reliable for R.  ``rotation_deg`` is counter-clockwise
as the image is displayed (``np.rot90`` with k = rotation_deg / 90, as the
phantoms use), applied after the mirroring (a left-right flip).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Optional, Sequence

import matplotlib
import numpy as np
from PIL import Image as PILImage, ImageDraw, ImageFont
from scipy import ndimage as ndi

MARKER_POINTS = 20
SIMILARITY_THRESHOLD = 0.85
TEMPLATE_SIZE = 64

WORKING_PIXEL_MM = 0.3
WORKING_LONG_SIDE = 800  # when the spacing is unknown
LEVELS = (0.85, 0.70, 0.55)
LETTER_SIZE_MM = (4.0, 30.0)
LETTER_SIZE_FRACTION = (0.01, 0.15)  # of the image's long side, spacing unknown
MIN_ASPECT = 0.4
FILL_RANGE = (0.15, 0.75)
REPORTED_CANDIDATE_SIMILARITY = 0.7  # interior near misses listed from here; edge-cut ones always
EDGE_REASON = "touches the image edge: the marker may be cut (partial)"
MAX_REPORTED_CANDIDATES = 5

FONT_SOURCES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "STIXGeneralBol.ttf")


@dataclass
class MarkerResult:
    """Outcome of :func:`detect_marker`; coordinates in full-resolution pixels (x right, y down).

    ``box`` is ``(x0, y0, x1, y1)`` with x1/y1 inclusive; ``position_px`` is the
    box centre; ``candidates`` lists near misses (similar shapes that were
    rejected, e.g. cut by the edge) as dicts with letter, box, position_px,
    similarity and reason.
    """

    found: bool
    letter: Optional[str] = None
    position_px: Optional[tuple[float, float]] = None
    box: Optional[tuple[int, int, int, int]] = None
    similarity: float = 0.0
    mirrored: Optional[bool] = None
    rotation_deg: Optional[int] = None
    reason: str = ""
    candidates: list[dict] = field(default_factory=list)

    @property
    def score(self) -> int:
        return MARKER_POINTS if self.found else 0

    def to_dict(self) -> dict:
        """JSON-friendly form for result.json's ``parts.marker`` (adds ``score`` and ``max``)."""
        d = asdict(self)
        d["position_px"] = list(self.position_px) if self.position_px else None
        d["box"] = list(self.box) if self.box else None
        return {"score": self.score, "max": MARKER_POINTS, **d}


# ----------------------------------------------------------------- templates
@dataclass(frozen=True)
class MarkerTemplates:
    """The 64x64 templates as rows of ``masks``, with what each one is."""

    masks: np.ndarray  # (n, 64*64) float32 0/1
    letter_pixels: np.ndarray  # (n,) count of 1s
    background_pixels: np.ndarray  # (n,) count of 0s
    letters: tuple[str, ...]
    mirrored: tuple[bool, ...]
    rotation_deg: tuple[int, ...]
    sources: tuple[str, ...]


def scale_to_template(mask: np.ndarray) -> np.ndarray:
    """Stretch a 2D bool mask cropped to its bounding box to TEMPLATE_SIZE x TEMPLATE_SIZE (bool)."""
    img = PILImage.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.resize((TEMPLATE_SIZE, TEMPLATE_SIZE), PILImage.BILINEAR)) >= 128


def _crop_to_content(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def _render_font_letter(letter: str, font_file: str, size: int = 256) -> np.ndarray:
    font = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font_file), size)
    canvas = PILImage.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 4), letter, fill=255, font=font)
    return _crop_to_content(np.asarray(canvas) >= 128)


def _draw_stroke_letter(letter: str, height: int = 200, width: int = 140, stroke: int = 36) -> np.ndarray:
    """A block letter made of bars and a half-ring, like many cut-lead markers."""
    canvas = PILImage.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, stroke - 1, height - 1], fill=255)  # stem
    if letter == "L":
        draw.rectangle([0, height - stroke, width - 1, height - 1], fill=255)  # foot
    else:
        bowl = int(height * 0.55)  # bowl height
        reach = width - bowl // 2  # where the bowl's straight bars end
        draw.rectangle([0, 0, reach, stroke - 1], fill=255)
        draw.rectangle([0, bowl - stroke, reach, bowl - 1], fill=255)
        draw.pieslice([reach - bowl // 2, 0, width - 1, bowl - 1], -90, 90, fill=255)
        draw.pieslice([reach - bowl // 2 + stroke, stroke, width - 1 - stroke, bowl - 1 - stroke], -90, 90, fill=0)
        draw.polygon([(width * 0.3, bowl - stroke), (width * 0.3 + stroke * 1.2, bowl - stroke),
                      (width - 1, height - 1), (width - 1 - stroke * 1.2, height - 1)], fill=255)
    return _crop_to_content(np.asarray(canvas) >= 128)


@lru_cache(maxsize=1)
def marker_templates() -> MarkerTemplates:
    """All 64x64 templates: 2 letters x 4 sources x 8 orientations, built once."""
    masks, letters, mirrored, rotations, sources = [], [], [], [], []
    for letter in ("L", "R"):
        shapes = [(f, _render_font_letter(letter, f)) for f in FONT_SOURCES]
        shapes.append(("stroke", _draw_stroke_letter(letter)))
        for source, shape in shapes:
            base = scale_to_template(shape)
            for flip in (False, True):
                oriented = base[:, ::-1] if flip else base
                for quarter in range(4):
                    masks.append(np.rot90(oriented, quarter).reshape(-1))  # counter-clockwise on screen
                    letters.append(letter)
                    mirrored.append(flip)
                    rotations.append(90 * quarter)
                    sources.append(source)
    stack = np.asarray(masks, dtype=np.float32)
    return MarkerTemplates(stack, stack.sum(axis=1), (1 - stack).sum(axis=1), tuple(letters), tuple(mirrored),
                      tuple(rotations), tuple(sources))


def match_templates(candidate: np.ndarray) -> tuple[float, int]:
    """Best balanced pixel agreement of a 64x64 bool candidate with every template -> (similarity, index)."""
    templates = marker_templates()
    c = candidate.reshape(-1).astype(np.float32)
    covered = templates.masks @ c  # template letter pixels that the candidate covers
    letter_hit = covered / templates.letter_pixels
    background_hit = (c.size - c.sum() - (templates.letter_pixels - covered)) / templates.background_pixels
    similarity = 0.5 * (letter_hit + background_hit)
    best = int(np.argmax(similarity))
    return float(similarity[best]), best


# ------------------------------------------------------------------ detector
def _working_image(plane: np.ndarray, spacing_mm: Optional[Sequence[float]]) -> tuple[np.ndarray, int]:
    """Block-mean downsample by an integer factor f (3x3 mean when f = 1), 3x3 grey closing -> (image, f).

    The grey closing (max then min filter) equals a binary closing of every
    threshold of the image, so it is done once here for all levels.
    """
    if spacing_mm is not None:
        factor = max(1, int(WORKING_PIXEL_MM / min(float(s) for s in spacing_mm)))
    else:
        factor = max(1, -(-max(plane.shape) // WORKING_LONG_SIDE))
    rows, cols = plane.shape[0] // factor, plane.shape[1] // factor
    small = np.zeros((rows, cols), np.float32)
    for dy in range(factor):  # strided sums: much faster than reshape().mean()
        for dx in range(factor):
            small += plane[dy:rows * factor:factor, dx:cols * factor:factor]
    small /= factor**2
    if factor == 1:  # no block mean to average the noise away
        small = ndi.uniform_filter(small, size=3, mode="nearest")
    return _grey_closing3(small), factor


def _grey_closing3(image: np.ndarray) -> np.ndarray:
    """3x3 grey closing with edge replication (so objects cut by the border stay touching it)."""
    return _filter3(_filter3(image, np.maximum), np.minimum)


def _filter3(image: np.ndarray, op: np.ufunc) -> np.ndarray:
    """Separable 3x3 max or min filter with edge replication; numpy slices are several times
    faster here than scipy.ndimage.maximum_filter."""
    p = np.pad(image, 1, mode="edge")
    rows = op(op(p[:-2], p[1:-1]), p[2:])
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _size_range_px(plane_shape: tuple[int, int], spacing_mm: Optional[Sequence[float]],
                   factor: int) -> tuple[float, float]:
    """Allowed long side of a letter's box in working pixels."""
    if spacing_mm is not None:
        pixel_mm = max(float(s) for s in spacing_mm) * factor
        return LETTER_SIZE_MM[0] / pixel_mm, LETTER_SIZE_MM[1] / pixel_mm
    long_side = max(plane_shape) / factor
    return LETTER_SIZE_FRACTION[0] * long_side, LETTER_SIZE_FRACTION[1] * long_side


def _intensity_range(work: np.ndarray) -> tuple[float, float]:
    """(median, 99.99th percentile) of the working image.

    The median from every 3rd pixel each way and the top value by a single
    partition: several times faster than one np.percentile call for both.
    """
    flat = work.reshape(-1)
    top = flat.size - max(1, int(np.ceil(1e-4 * flat.size)))
    return float(np.median(work[::3, ::3])), float(np.partition(flat, top)[top])


def _letter_like(component: np.ndarray, min_side: float, max_side: float, touches_edge: bool) -> bool:
    """Size, fill and aspect of a component's box (cropped bool mask) fit a lead letter.

    A component cut by the image edge is exempt from the aspect test so that
    it can still be reported as a partial marker.
    """
    long_side, short_side = max(component.shape), min(component.shape)
    if not min_side <= long_side <= max_side:
        return False
    if not FILL_RANGE[0] <= component.mean() <= FILL_RANGE[1]:
        return False
    return touches_edge or short_side >= MIN_ASPECT * long_side


def _full_resolution_shape(plane: np.ndarray, threshold: float, box: tuple[int, int, int, int],
                           margin: int) -> Optional[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """The candidate's own component re-found at full resolution around box -> (mask cropped to it, its box),
    or None when no full-resolution pixel inside the box passes the threshold.

    Small letters lose their thin strokes in the working image; the shape that
    is matched comes from the full-resolution pixels (3x3 mean, same threshold,
    3x3 closing), taking the component that covers most of the working box.
    """
    x0, y0 = max(0, box[0] - margin), max(0, box[1] - margin)
    x1, y1 = min(plane.shape[1], box[2] + 1 + margin), min(plane.shape[0], box[3] + 1 + margin)
    crop = ndi.uniform_filter(plane[y0:y1, x0:x1].astype(np.float32), size=3, mode="nearest")
    crop = _grey_closing3(crop)
    labels, count = ndi.label(crop > threshold, structure=np.ones((3, 3), bool))
    inside = labels[box[1] - y0:box[3] + 1 - y0, box[0] - x0:box[2] + 1 - x0]
    votes = np.bincount(inside.reshape(-1), minlength=count + 1)
    votes[0] = 0
    if not votes.any():
        return None
    best = int(np.argmax(votes))
    sl = ndi.find_objects(labels)[best - 1]
    mask = labels[sl] == best
    return mask, (x0 + sl[1].start, y0 + sl[0].start, x0 + sl[1].stop - 1, y0 + sl[0].stop - 1)


def _box_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller box (inclusive bounds)."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((r[2] - r[0] + 1) * (r[3] - r[1] + 1) for r in (a, b))
    return w * h / smaller


def detect_marker(plane: np.ndarray, *, spacing_mm: Optional[Sequence[float]] = None) -> MarkerResult:
    """Find a complete L or R lead marker on a radiograph.

    Args:
        plane: 2D array (rows, cols), MONOCHROME2 sense (lead bright), any
            numeric type.
        spacing_mm: ``(sx, sy)`` pixel size in mm, or None when unknown (the
            letter size limits are then relative to the image size).

    Returns:
        A :class:`MarkerResult`; ``found`` only for a candidate with similarity
        > 0.85 that does not touch the image border.
    """
    plane = np.asarray(plane)
    if plane.ndim != 2 or min(plane.shape) < 8:
        raise ValueError(f"detect_marker needs a 2D plane of at least 8x8 pixels, got shape {plane.shape}")
    work, factor = _working_image(plane, spacing_mm)
    low, high = _intensity_range(work)
    if not high > low:
        return MarkerResult(found=False, reason="no L/R marker: the image has no bright objects")
    min_side, max_side = _size_range_px(plane.shape, spacing_mm, factor)
    templates = marker_templates()

    seen: list[dict] = []
    for level in LEVELS:
        threshold = low + level * (high - low)
        labels, _ = ndi.label(work > threshold, structure=np.ones((3, 3), bool))
        for index, sl in enumerate(ndi.find_objects(labels), start=1):
            if not min_side <= max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) <= max_side:
                continue  # cheap early exit for the many noise specks
            touches_edge = (sl[0].start == 0 or sl[1].start == 0
                            or sl[0].stop == work.shape[0] or sl[1].stop == work.shape[1])
            if not _letter_like(labels[sl] == index, min_side, max_side, touches_edge):
                continue
            coarse_box = (sl[1].start * factor, sl[0].start * factor, sl[1].stop * factor - 1, sl[0].stop * factor - 1)
            refined = _full_resolution_shape(plane, threshold, coarse_box, margin=2 * factor + 2)
            if refined is None:
                continue
            shape, box = refined
            touches_edge = touches_edge or box[0] == 0 or box[1] == 0 or \
                box[2] == plane.shape[1] - 1 or box[3] == plane.shape[0] - 1
            if not _letter_like(shape, min_side * factor, max_side * factor, touches_edge):
                continue
            similarity, best = match_templates(scale_to_template(shape))
            if touches_edge:
                reason = EDGE_REASON
            elif similarity > SIMILARITY_THRESHOLD:
                reason = ""
            else:
                reason = f"similarity {similarity:.3f} is not above {SIMILARITY_THRESHOLD}"
            seen.append({
                "letter": templates.letters[best], "box": box,
                "position_px": ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
                "similarity": round(similarity, 4), "reason": reason,
                "mirrored": templates.mirrored[best], "rotation_deg": templates.rotation_deg[best],
            })

    # One entry per object (the same object appears at several levels): keep its best reading.
    seen.sort(key=lambda c: (c["reason"] == "", c["similarity"]), reverse=True)
    objects: list[dict] = []
    for cand in seen:
        if all(_box_overlap(cand["box"], kept["box"]) < 0.5 for kept in objects):
            objects.append(cand)

    accepted = [c for c in objects if c["reason"] == ""]
    near_misses = [
        {k: c[k] for k in ("letter", "box", "position_px", "similarity", "reason")}
        for c in objects
        if c["reason"] and (c["similarity"] >= REPORTED_CANDIDATE_SIMILARITY or c["reason"] == EDGE_REASON)
    ][:MAX_REPORTED_CANDIDATES]
    if accepted:
        best = accepted[0]
        return MarkerResult(found=True, letter=best["letter"], position_px=best["position_px"], box=best["box"],
                            similarity=best["similarity"], mirrored=best["mirrored"],
                            rotation_deg=best["rotation_deg"], candidates=near_misses)
    best_similarity = max((c["similarity"] for c in objects), default=0.0)
    if near_misses:
        reason = f"no complete L/R marker: best candidate {near_misses[0]['reason']}"
    elif objects:
        reason = f"no L/R marker: best candidate similarity {best_similarity:.3f} (needs > {SIMILARITY_THRESHOLD})"
    else:
        reason = "no L/R marker: no bright object of letter size and shape"
    return MarkerResult(found=False, similarity=best_similarity, reason=reason, candidates=near_misses)
