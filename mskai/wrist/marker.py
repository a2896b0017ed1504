"""Side-marker part of WristQC (SPEC §4.2): find a complete L or R lead letter.

The paper's method at its core -- binarize, closing, connected components, each
component scaled to 64x64 and compared with L and R templates, similarity > 0.85
-- with the steps around it that real films need (a letter inside a plate, next
to the collimation border, dimmer than the border, small, tilted, blurred):

1. **Working image.** The plane (MONOCHROME2 sense: lead is bright) is
   block-averaged to about 0.3 mm pixels (or to a long side of at most 800
   pixels when the spacing is unknown; a 3x3 mean when it is not reduced) and
   closed (3x3 grey closing: the morphological closing of every threshold at
   once).
2. **Proposals** (:func:`_proposals`): connected components (8-connected) of
   letter size, of several binarizations of the working image:
   * *global* levels at 85, 70 and 55 % of the way from the median to the
     99.99th percentile (a saturating letter on a plain film);
   * *local* levels: the white top-hat (the image minus its grey opening by a
     square of 0.35 x a letter's height: wider than its strokes, narrower than
     its plate) at one scale per doubling of the allowed letter heights, seeded
     where it rises above the noise and 5 % of the image's range, each seed
     cut at 50, 35 and 65 % of its own contrast.  What is brighter than what
     lies around it stays, whether that is air, soft tissue, a plate darker or
     brighter than the background, or the collimation border.
   Letter sizes: the long side of the letter's box 1.6-12.5 % of the image's
   short side (letters of about 2-10 %), widened to 4-30 mm when the spacing is
   known; short/long side >= 0.4; fill 15-75 % of the box.
3. **Plate-relative binarization at full resolution** (:func:`_regrow`): the
   letter's level (75th percentile of the proposal's pixels), its plate's level
   (the median of the pixels between its strokes and around it) and the
   brightest of those (90th percentile) give thresholds at 50 % and 30 % of the
   way from the plate to the letter, never below a quarter of the way from the
   brightest neighbour (a bone or the border between its strokes).  The
   component at that threshold around the proposal (3x3 mean and closing; a
   light Gaussian and no closing for letters under 36 pixels, whose counters
   are a few pixels wide) is the candidate; one that runs out of a window half
   its size around it is part of something larger (a plate, the border, a
   watch) and is dropped.
4. **Template match** (:func:`match_shape`): the candidate's box is scaled to
   64x64 (both sides stretched, as the paper scales each component, which also
   removes the width differences between fonts) and compared pixel by pixel
   with 64x64 L and R templates in 8 orientations each (mirrored or not,
   rotated by 0/90/180/270 degrees).  Similarity is the **balanced pixel
   agreement** ``0.5 * (fraction of the template's letter pixels the candidate
   covers + fraction of the template's background pixels it leaves empty)``,
   with an outline tolerance of one template pixel (1.6 % of the letter: a
   stroke a little thicker or thinner than the template's, as fonts, blur and
   the threshold make it, is not a mismatch); a candidate between 0.75 and the
   threshold is tried again turned by 4 and 8 degrees either way (a marker put
   down by hand).  Similarity > 0.85 (*paper*) means found.
5. **Lead, complete only.** A found letter must be lead (:func:`lead_contrast`):
   at least 0.2 of the image's range brighter than its own gaps, and evenly so
   (10-90 % spread at most 0.45 of that contrast): a rib crossing or a bone
   corner that looks like an L is neither.  A candidate within 2 pixels of the
   image border may be cut by the edge: it is reported as a candidate with
   that reason and never counts.  Of several found letters, the most similar.
6. **Report**: the letter, its box and centre, the similarity, the
   orientation, and the box of its plate (:func:`plate_box`; None for a letter
   on the background without one), plus the near misses with their reasons.

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
OUTLINE_TOLERANCE = 1  # template pixels
MAX_TILT_DEG = 8
TILTS_DEG = (-4.0, 4.0, -8.0, 8.0)
TILT_WINDOW = 0.1  # a candidate this close below the threshold is tried again, turned

WORKING_PIXEL_MM = 0.3
WORKING_LONG_SIDE = 800  # when the spacing is unknown
LEVELS = (0.85, 0.70, 0.55)
LOCAL_LEVELS = (0.5, 0.35, 0.65)  # of a seed's own top-hat contrast
STROKE_FRACTION = 0.35  # top-hat square side / letter height
SEED_CONTRAST = 0.05  # a local seed rises this much of the image's range above its surroundings ...
SEED_NOISE_SIGMAS = 8.0  # ... and this many noise sigmas
MIN_LEAD_CONTRAST = 0.2  # a letter's brightness over its gaps, of the image's range
MAX_LEAD_SPREAD = 0.45  # the 10-90 % range of the letter's brightness, of that contrast
LETTER_SIZE_MM = (4.0, 30.0)
LETTER_SIZE_FRACTION = (0.016, 0.125)  # of the image's short side
MIN_LETTER_PX = 10
PLATE_FRACTIONS = (0.5, 0.3)  # binarization levels between a letter's plate and the letter
SMALL_LETTER_PX = 36  # below this long side (full-resolution pixels) a letter is not closed before matching
MIN_ASPECT = 0.4
FILL_RANGE = (0.15, 0.75)
REPORTED_CANDIDATE_SIMILARITY = 0.7  # interior near misses listed from here; edge-cut ones always
EDGE_REASON = "touches the image edge: the marker may be cut (partial)"
EDGE_MARGIN_PX = 2  # a letter this close to the image edge counts as touching it (its cut end may read dimmer)
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
    plate_box: Optional[tuple[int, int, int, int]] = None

    @property
    def score(self) -> int:
        return MARKER_POINTS if self.found else 0

    def to_dict(self) -> dict:
        """JSON-friendly form for result.json's ``parts.marker`` (adds ``score`` and ``max``)."""
        d = asdict(self)
        d["position_px"] = list(self.position_px) if self.position_px else None
        d["box"] = list(self.box) if self.box else None
        d["plate_box"] = list(self.plate_box) if self.plate_box else None
        return {"score": self.score, "max": MARKER_POINTS, **d}


# ----------------------------------------------------------------- templates
@dataclass(frozen=True)
class MarkerTemplates:
    """The 64x64 templates as rows of ``masks``, with what each one is."""

    masks: np.ndarray  # (n, 64*64) float32 0/1
    grown: np.ndarray  # (n, 64*64) float32 0/1: each mask dilated by OUTLINE_TOLERANCE pixels
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
    grown = np.asarray([_grow(mask.reshape(TEMPLATE_SIZE, TEMPLATE_SIZE) > 0.5, OUTLINE_TOLERANCE).reshape(-1)
                        for mask in stack], dtype=np.float32)
    return MarkerTemplates(stack, grown, stack.sum(axis=1), (1 - stack).sum(axis=1), tuple(letters), tuple(mirrored),
                      tuple(rotations), tuple(sources))


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """A bool mask dilated by ``pixels`` (3x3 steps); itself for 0."""
    return ndi.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=pixels) if pixels else mask


def match_templates(candidate: np.ndarray, tolerance: int = OUTLINE_TOLERANCE) -> tuple[float, int]:
    """Best balanced pixel agreement of a 64x64 bool candidate with every template -> (similarity, index).

    ``0.5 * (fraction of the template's letter pixels that have a candidate pixel
    within ``tolerance`` pixels + fraction of the template's background pixels
    left empty, counting as wrong only candidate pixels farther than
    ``tolerance`` from the template's letter)``.  With ``tolerance=0`` it is the
    plain pixel-by-pixel agreement; the detector uses :data:`OUTLINE_TOLERANCE`
    (one pixel of 64, 1.6 % of the letter's size), which forgives a stroke that is
    a little thicker or thinner than the template's, as fonts, blur and the
    binarization level make it, and nothing else.
    """
    if tolerance not in (0, OUTLINE_TOLERANCE):
        raise ValueError(f"tolerance must be 0 or {OUTLINE_TOLERANCE}, got {tolerance}")
    templates = marker_templates()
    shape = np.asarray(candidate, bool).reshape(TEMPLATE_SIZE, TEMPLATE_SIZE)
    c = shape.reshape(-1).astype(np.float32)
    near = _grow(shape, tolerance).reshape(-1).astype(np.float32)
    grown = templates.grown if tolerance else templates.masks
    letter_hit = (templates.masks @ near) / templates.letter_pixels
    stray = c.sum() - grown @ c  # candidate pixels away from the template's letter
    background_hit = 1.0 - stray / templates.background_pixels
    similarity = 0.5 * (letter_hit + background_hit)
    best = int(np.argmax(similarity))
    return float(similarity[best]), best


def _turned(mask: np.ndarray, degrees: float) -> np.ndarray:
    """A bool mask turned by a few degrees (counter-clockwise on screen), cropped to its content."""
    image = PILImage.fromarray(mask.astype(np.uint8) * 255).rotate(degrees, resample=PILImage.BILINEAR, expand=True)
    turned = np.asarray(image) >= 128
    return _crop_to_content(turned) if turned.any() else mask


def match_shape(shape: np.ndarray) -> tuple[float, int, float]:
    """Best match of a candidate's cropped bool mask, upright or turned by up to
    :data:`MAX_TILT_DEG` (a marker put down by hand is rarely square to the film)
    -> (similarity, template index, tilt in degrees)."""
    similarity, best = match_templates(scale_to_template(shape))
    tilt = 0.0
    if SIMILARITY_THRESHOLD - TILT_WINDOW < similarity <= SIMILARITY_THRESHOLD:
        for degrees in TILTS_DEG:
            turned_similarity, turned_best = match_templates(scale_to_template(_turned(shape, degrees)))
            if turned_similarity > similarity:
                similarity, best, tilt = turned_similarity, turned_best, degrees
    return similarity, best, tilt


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
    factor = max(1, min(factor, min(plane.shape) // 64))  # keep a small image big enough to see letters
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


def _top_hat(image: np.ndarray, size: int) -> np.ndarray:
    """White top-hat: the image minus its grey opening by a size x size square (edges replicated).

    What is brighter than its surroundings and narrower than the square stays: a
    letter's strokes, over a plate, soft tissue, air or the collimation border
    alike; the plate, the border and the background (wider than the square) go.
    """
    opened = ndi.maximum_filter(ndi.minimum_filter(image, size=size, mode="nearest"), size=size, mode="nearest")
    return image - opened


def _size_range_px(plane_shape: tuple[int, int], spacing_mm: Optional[Sequence[float]]) -> tuple[float, float]:
    """Allowed long side of a letter's box in full-resolution pixels: 1.6-12.5 % of the image's
    short side, widened to 4-30 mm when the spacing is known."""
    short = float(min(plane_shape))
    low, high = LETTER_SIZE_FRACTION[0] * short, LETTER_SIZE_FRACTION[1] * short
    if spacing_mm is not None:
        pixel_mm = max(float(s) for s in spacing_mm)
        low, high = min(low, LETTER_SIZE_MM[0] / pixel_mm), max(high, LETTER_SIZE_MM[1] / pixel_mm)
    return max(low, MIN_LETTER_PX), max(high, MIN_LETTER_PX + 1)


def _intensity_range(work: np.ndarray) -> tuple[float, float, float]:
    """(1st percentile, median, 99.99th percentile) of the working image, from every 3rd pixel
    each way for the first two and a single partition for the top."""
    flat = work.reshape(-1)
    top = flat.size - max(1, int(np.ceil(1e-4 * flat.size)))
    sample = work[::3, ::3]
    return float(np.percentile(sample, 1)), float(np.median(sample)), float(np.partition(flat, top)[top])


def _noise_sigma(image: np.ndarray) -> float:
    """Robust pixel noise: the median absolute difference of horizontal neighbours / 0.954."""
    return float(np.median(np.abs(np.diff(image[::2], axis=1)))) / 0.954


def _letter_like(component: np.ndarray, min_side: float, max_side: float, touches_edge: bool,
                 fill_range: tuple[float, float] = FILL_RANGE) -> bool:
    """Size, fill and aspect of a component's box (cropped bool mask) fit a lead letter.

    A component cut by the image edge is exempt from the aspect test so that
    it can still be reported as a partial marker.
    """
    long_side, short_side = max(component.shape), min(component.shape)
    if not min_side <= long_side <= max_side:
        return False
    if not fill_range[0] <= component.mean() <= fill_range[1]:
        return False
    return touches_edge or short_side >= MIN_ASPECT * long_side


def _box_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over the smaller box (inclusive bounds)."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((r[2] - r[0] + 1) * (r[3] - r[1] + 1) for r in (a, b))
    return w * h / smaller


@dataclass
class _Proposal:
    """A letter-sized bright component of one binarization of the working image."""

    box: tuple[int, int, int, int]  # working pixels, inclusive
    mask: np.ndarray  # bool, cropped to the box
    touches_edge: bool


def _proposals(work: np.ndarray, min_side: float, max_side: float) -> list[_Proposal]:
    """Letter-sized components of every binarization of the working image (sizes in working pixels).

    * **global** levels: three levels between the median and the 99.99th
      percentile (a lead letter is among the brightest things on most films);
    * **local** levels: the white top-hat at scales for the letter sizes allowed
      (a square of :data:`STROKE_FRACTION` x the letter's height: wider than its
      strokes, narrower than its plate), seeded where it rises clearly above the
      noise, each seed then cut at fractions of its own contrast
      (:data:`LOCAL_LEVELS`): a letter brighter than its plate, the plate darker
      or brighter than what lies around it, next to the collimation border or
      on it, on soft tissue or in air.

    Each object is proposed once (boxes that differ by less than 15 % are the same).
    """
    low_p, median, high = _intensity_range(work)
    rows, cols = work.shape
    eight = np.ones((3, 3), bool)
    found: list[_Proposal] = []
    boxes = np.zeros((0, 4), np.float32)  # the boxes of ``found``, to compare with all at once
    lenient = (0.7 * min_side, 1.3 * max_side)

    def add(mask: np.ndarray, offset: tuple[int, int] = (0, 0), step: int = 1) -> None:
        """The letter-like components of ``mask`` (at ``step`` working pixels per pixel, its
        top-left at ``offset`` of that grid)."""
        nonlocal boxes
        labels, _ = ndi.label(mask, structure=eight)
        for index, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            if not lenient[0] <= step * max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) <= lenient[1]:
                continue  # cheap early exit for the many noise specks
            y0, x0 = (sl[0].start + offset[0]) * step, (sl[1].start + offset[1]) * step
            y1 = min((sl[0].stop + offset[0]) * step, rows) - 1
            x1 = min((sl[1].stop + offset[1]) * step, cols) - 1
            touches = y0 == 0 or x0 == 0 or y1 >= rows - step or x1 >= cols - step
            component = labels[sl] == index
            if not _letter_like(component, lenient[0] / step, lenient[1] / step, touches, (0.08, 0.9)):
                continue
            if step > 1:
                component = np.repeat(np.repeat(component, step, axis=0), step, axis=1)[:y1 - y0 + 1, :x1 - x0 + 1]
            box = (x0, y0, x1, y1)
            if len(boxes):  # the same object as one already proposed: each side within 15 % of its size
                sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                tolerance = 0.15 * np.maximum(sizes, max(x1 - x0, y1 - y0)) + 1
                if np.any(np.all(np.abs(boxes - np.asarray(box, np.float32)) <= tolerance[:, None], axis=1)):
                    continue
            boxes = np.vstack([boxes, np.asarray(box, np.float32)[None]])
            found.append(_Proposal(box, component, touches))

    if high > median:
        for level in LEVELS:
            add(work > median + level * (high - median))
    seed_level = max(SEED_CONTRAST * (high - low_p), SEED_NOISE_SIGMAS * _noise_sigma(work))
    height = max(min_side, 4.0)
    while height < 1.25 * max_side:
        size = max(3, int(np.ceil(STROKE_FRACTION * height)))
        # Large letters are looked for on a coarser grid (a block mean by ``step``), where their
        # square is still 6 pixels or more: the same top-hat at a fraction of the cost.
        step = 2 ** max(0, int(np.floor(np.log2(size / 6.0))))
        grid = work if step == 1 else _block_mean(work, step)
        hat = _top_hat(grid, max(3, int(round(size / step))))
        seeds, _ = ndi.label(hat > seed_level, structure=eight)
        for index, sl in enumerate(ndi.find_objects(seeds), start=1):
            if sl is None:
                continue
            long_side = step * max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
            if not max(lenient[0], height / 2.5) <= long_side <= min(lenient[1], height * 2.5):
                continue
            y0, y1 = max(sl[0].start - 2, 0), min(sl[0].stop + 2, grid.shape[0])
            x0, x1 = max(sl[1].start - 2, 0), min(sl[1].stop + 2, grid.shape[1])
            peak = float(np.percentile(hat[sl][seeds[sl] == index], 90))
            for level in LOCAL_LEVELS:
                add(hat[y0:y1, x0:x1] > max(level * peak, 0.5 * seed_level), (y0, x0), step)
        height *= 2.0
    return found


def _block_mean(image: np.ndarray, step: int) -> np.ndarray:
    """Mean of step x step blocks (the last partial row and column of blocks dropped)."""
    rows, cols = image.shape[0] // step, image.shape[1] // step
    return image[:rows * step, :cols * step].reshape(rows, step, cols, step).mean(axis=(1, 3))


def _levels(plane: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], factor: int
            ) -> Optional[tuple[float, float, float]]:
    """(letter level, plate level, brightest beside it) of a working-image component, read from
    the full-resolution pixels: the 75th percentile of its pixels (its strokes' inner pixels,
    whatever its edges' blur), and the median and the 90th percentile of the other pixels of its
    box more than ``factor`` + 1 pixels away from it (its counters and gaps: the plate, or the
    background where there is no plate); the ring around the box when the box has no such pixels."""
    x0, y0, x1, y1 = (v * factor for v in box)
    x1, y1 = x1 + factor - 1, y1 + factor - 1
    full = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    crop = plane[y0:y1 + 1, x0:x1 + 1]
    full = full[:crop.shape[0], :crop.shape[1]]
    gaps = ~ndi.binary_dilation(full, iterations=factor + 1)
    if gaps.sum() >= 4:
        around = crop[gaps]
    else:
        rows, cols = plane.shape
        ya, yb, xa, xb = max(y0 - 3, 0), min(y1 + 4, rows), max(x0 - 3, 0), min(x1 + 4, cols)
        ring = plane[ya:yb, xa:xb]
        inner = np.zeros(ring.shape, bool)
        inner[y0 - ya:y0 - ya + crop.shape[0], x0 - xa:x0 - xa + crop.shape[1]] = True
        if (~inner).sum() < 4:
            return None
        around = ring[~inner]
    return (float(np.percentile(crop[full], 75)), float(np.median(around)), float(np.percentile(around, 90)))


def _regrow(plane: np.ndarray, threshold: float, box: tuple[int, int, int, int]
            ) -> Optional[tuple[np.ndarray, tuple[int, int, int, int], bool]]:
    """The object at full resolution: the plane (3x3 mean, 3x3 closing) above the plate-relative
    ``threshold`` around ``box`` (full-resolution pixels), the component that covers most of
    the box -> (mask cropped to it, its box, whether it runs out of the search window), or None.

    The window reaches half the box's size beyond it: a component that runs out of
    it (and is not stopped by the image edge) is part of something larger than a
    letter (a plate brighter than the threshold, the collimation border, a watch).
    """
    rows, cols = plane.shape
    reach = int(0.5 * max(box[2] - box[0], box[3] - box[1])) + 3
    x0, y0 = max(0, box[0] - reach), max(0, box[1] - reach)
    x1, y1 = min(cols, box[2] + 1 + reach), min(rows, box[3] + 1 + reach)
    if max(box[2] - box[0], box[3] - box[1]) < SMALL_LETTER_PX:
        # A small letter's counters are a few pixels wide: a light smoothing, no closing, keeps them open.
        crop = ndi.gaussian_filter(plane[y0:y1, x0:x1], 0.7, mode="nearest")
    else:
        crop = _grey_closing3(ndi.uniform_filter(plane[y0:y1, x0:x1], size=3, mode="nearest"))
    labels, count = ndi.label(crop > threshold, structure=np.ones((3, 3), bool))
    inside = labels[box[1] - y0:box[3] + 1 - y0, box[0] - x0:box[2] + 1 - x0]
    votes = np.bincount(inside.reshape(-1), minlength=count + 1)
    votes[0] = 0
    if not votes.any():
        return None
    best = int(np.argmax(votes))
    sl = ndi.find_objects(labels)[best - 1]
    grown = (x0 + sl[1].start, y0 + sl[0].start, x0 + sl[1].stop - 1, y0 + sl[0].stop - 1)
    runs_out = ((sl[1].start == 0 and x0 > 0) or (sl[0].start == 0 and y0 > 0)
                or (sl[1].stop == crop.shape[1] and x1 < cols) or (sl[0].stop == crop.shape[0] and y1 < rows))
    return labels[sl] == best, grown, runs_out


def lead_contrast(plane: np.ndarray, shape: np.ndarray, box: tuple[int, int, int, int], span: float
                  ) -> tuple[float, float]:
    """How lead-like a candidate is: ``(contrast, spread)``.

    ``contrast``: the median of the letter's inner pixels (the middle of its
    strokes: at least half the stroke's half-width in from its outline, so that
    a blurred outline does not count) minus the median of the other pixels of
    its box one pixel away from it (its counters and gaps: the plate, or the
    background), over ``span`` (the image's 1st to 99.99th percentile).
    ``spread``: the 10th to 90th percentile range of the letter's inner pixels
    over that difference.
    Lead stops nearly all of the beam: a lead letter is much brighter than what
    lies beside it, and evenly so; a bone edge or a rib crossing that happens
    to look like an L is neither.
    """
    x0, y0, x1, y1 = box
    crop = plane[y0:y1 + 1, x0:x1 + 1]
    depth = ndi.distance_transform_edt(np.pad(shape, 1))[1:-1, 1:-1]
    core = depth >= max(1.5, 0.5 * float(depth.max()))
    if core.sum() < 5:
        core = shape
    gaps = ~ndi.binary_dilation(shape, iterations=1)
    if gaps.sum() < 5 or span <= 0:
        return 0.0, float("inf")
    letter = crop[core]
    difference = float(np.median(letter)) - float(np.median(crop[gaps]))
    if difference <= 0:
        return difference / span, float("inf")
    spread = float(np.percentile(letter, 90) - np.percentile(letter, 10)) / difference
    return difference / span, spread


def plate_box(plane: np.ndarray, letter_mask: np.ndarray, box: tuple[int, int, int, int]
              ) -> Optional[tuple[int, int, int, int]]:
    """The box ``(x0, y0, x1, y1)`` of the plate that holds a letter, or None when the letter
    lies on the background without a plate of its own.

    The plate level is the median of the non-letter pixels inside the letter's
    box (its counters and gaps).  From each side of the letter's box (from 3
    pixels out: nearer is the letter's own blur) the median of a strip as long
    as that side is followed outward; the plate's edge is the first strip that
    differs from the plate level by more than a threshold (6 noise sigmas of the
    plate, and 3 % of the letter's contrast over it).  A plate needs such an
    edge on at least three sides within 1.2 letter sizes of the same kind
    (what lies beyond is brighter than the plate on each of them, or darker on
    each); on the fourth it may meet the collimation border or another object
    (it ends there) or run into the image edge.
    """
    x0, y0, x1, y1 = box
    crop = plane[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    gaps = ~ndi.binary_dilation(letter_mask, iterations=1)
    if gaps.sum() < 4:
        return None
    level = float(np.median(crop[gaps]))
    letter_level = float(np.median(crop[letter_mask]))
    noise = 1.4826 * float(np.median(np.abs(crop[gaps] - level)))
    threshold = max(6.0 * noise, 0.03 * abs(letter_level - level), 1e-6)
    reach = int(round(1.2 * max(x1 - x0, y1 - y0) + 2))
    rows, cols = plane.shape
    edges: dict[str, tuple[int, float]] = {}
    for side, start, stop, step in (("left", x0 - 3, max(x0 - reach, 0) - 1, -1),
                                    ("right", x1 + 3, min(x1 + reach, cols - 1) + 1, 1),
                                    ("top", y0 - 3, max(y0 - reach, 0) - 1, -1),
                                    ("bottom", y1 + 3, min(y1 + reach, rows - 1) + 1, 1)):
        for position in range(start, stop, step):
            strip = plane[y0:y1 + 1, position] if side in ("left", "right") else plane[position, x0:x1 + 1]
            difference = float(np.median(strip)) - level
            if abs(difference) > threshold:
                edges[side] = (position, np.sign(difference))
                break
    signs = [sign for _, sign in edges.values()]
    if max(signs.count(1.0), signs.count(-1.0)) < 3:
        return None  # (a side of the other kind is where the plate meets something else: it ends there)
    left = edges["left"][0] + 1 if "left" in edges else max(0, x0 - reach)
    right = edges["right"][0] - 1 if "right" in edges else min(cols - 1, x1 + reach)
    top = edges["top"][0] + 1 if "top" in edges else max(0, y0 - reach)
    bottom = edges["bottom"][0] - 1 if "bottom" in edges else min(rows - 1, y1 + reach)
    return int(left), int(top), int(right), int(bottom)


def _reading(plane: np.ndarray, shape: np.ndarray, box: tuple[int, int, int, int], runs_out: bool,
             touched_edge: bool, span: float, min_side: float, max_side: float) -> Optional[dict]:
    """One object's reading (letter, box, similarity, orientation, the reason it does not count),
    or None when it is not letter-like or is part of something larger than a letter (it runs
    out of its search window: a plate brighter than the threshold, the border, a watch)."""
    rows, cols = plane.shape
    touches_edge = touched_edge or box[0] <= EDGE_MARGIN_PX or box[1] <= EDGE_MARGIN_PX or \
        box[2] >= cols - 1 - EDGE_MARGIN_PX or box[3] >= rows - 1 - EDGE_MARGIN_PX
    if runs_out:
        return None
    if not _letter_like(shape, min_side, max_side, touches_edge):
        return None
    similarity, best, _ = match_shape(shape)
    contrast, spread = lead_contrast(plane, shape, box, span) if similarity > SIMILARITY_THRESHOLD else (0.0, 0.0)
    if touches_edge:
        reason = EDGE_REASON
    elif similarity <= SIMILARITY_THRESHOLD:
        reason = f"similarity {similarity:.3f} is not above {SIMILARITY_THRESHOLD}"
    elif contrast < MIN_LEAD_CONTRAST:
        reason = (f"not lead: {contrast:.2f} of the image's range brighter than beside it "
                  f"(a lead letter: at least {MIN_LEAD_CONTRAST})")
    elif spread > MAX_LEAD_SPREAD:
        reason = (f"not lead: uneven brightness ({spread:.2f} of its contrast; a lead letter: at most "
                  f"{MAX_LEAD_SPREAD})")
    else:
        reason = ""
    templates = marker_templates()
    return {"letter": templates.letters[best], "box": box,
            "position_px": ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
            "similarity": round(similarity, 4), "reason": reason,
            "mirrored": templates.mirrored[best], "rotation_deg": templates.rotation_deg[best], "shape": shape}


def detect_marker(plane: np.ndarray, *, spacing_mm: Optional[Sequence[float]] = None) -> MarkerResult:
    """Find a complete L or R lead marker on a radiograph.

    Args:
        plane: 2D array (rows, cols), MONOCHROME2 sense (lead bright), any
            numeric type.
        spacing_mm: ``(sx, sy)`` pixel size in mm, or None when unknown (the
            letter size limits are then relative to the image size).

    Returns:
        A :class:`MarkerResult`; ``found`` only for a candidate with similarity
        > 0.85 that does not touch the image border and is lead-like.
    """
    plane = np.asarray(plane)
    if plane.ndim != 2 or min(plane.shape) < 8:
        raise ValueError(f"detect_marker needs a 2D plane of at least 8x8 pixels, got shape {plane.shape}")
    plane = plane.astype(np.float32, copy=False)
    work, factor = _working_image(plane, spacing_mm)
    low_p, _, high = _intensity_range(work)
    if not high > low_p:
        return MarkerResult(found=False, reason="no L/R marker: the image has no bright objects")
    span = high - low_p
    min_side, max_side = _size_range_px(plane.shape, spacing_mm)

    seen: list[dict] = []
    done: set = set()
    for proposal in _proposals(work, min_side / factor, max_side / factor):
        levels = _levels(plane, proposal.mask, proposal.box, factor)
        if levels is None or not levels[0] - levels[1] > MIN_LEAD_CONTRAST * span / 2:
            continue  # too faint to be lead, whatever its shape
        letter, plate, beside = levels
        x0, y0, x1, y1 = proposal.box
        coarse = (x0 * factor, y0 * factor, (x1 + 1) * factor - 1, (y1 + 1) * factor - 1)
        for fraction in PLATE_FRACTIONS:
            # Plate-relative: part of the way from the plate to the letter, and above what is brightest
            # beside the letter (a bone or the border showing between its strokes).
            threshold = max(plate + fraction * (letter - plate), beside + 0.25 * (letter - beside))
            regrown = _regrow(plane, threshold, coarse)
            if regrown is None:
                continue
            shape, box, runs_out = regrown
            key = (box, int(shape.sum()))
            if key in done:
                continue
            done.add(key)
            candidate = _reading(plane, shape, box, runs_out, proposal.touches_edge, span, min_side, max_side)
            if candidate is not None:
                seen.append(candidate)

    # One entry per object: keep its best reading.
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
                            rotation_deg=best["rotation_deg"], candidates=near_misses,
                            plate_box=plate_box(plane, best["shape"], best["box"]))
    best_similarity = max((c["similarity"] for c in objects), default=0.0)
    if near_misses:
        reason = f"no complete L/R marker: best candidate {near_misses[0]['reason']}"
    elif objects:
        reason = f"no L/R marker: best candidate similarity {best_similarity:.3f} (needs > {SIMILARITY_THRESHOLD})"
    else:
        reason = "no L/R marker: no bright object of letter size and shape"
    return MarkerResult(found=False, similarity=best_similarity, reason=reason, candidates=near_misses)
