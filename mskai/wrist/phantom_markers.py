"""Lead side markers and collimation borders of the wrist phantoms, as real films show them.

:mod:`mskai.wrist.phantoms` draws a marker in one of two ways:

* the **classic** look (the generator's first one): a letter of 6-12 mm, in a
  thin lead frame or not, in an empty corner, saturating;
* the **real-film** looks drawn here (:func:`draw_marker_look`): a letter 2.5-10 %
  of the image's short side, in one of :data:`LOOK_FONTS` (sans and serif,
  bold and regular, none of them a font the detector's templates are made of),
  on a plastic **plate** brighter than what lies around it, or on a plate that
  reads darker (the halo that film processing leaves around lead), or on no
  plate; with a **dot** or a small **operator initial** beside it on the plate;
  placed in an empty corner, on the **soft tissue**, or **beside** the bright
  **collimation border** (its plate touching the border, as on the NEMA
  lower-leg film of ``Testing/data/radiographs``) or **on** it; mirrored,
  turned by 90-degree steps and tilted by a few degrees as a hand puts it down;
  blurred (a marker away from the detector) and not always saturating: its
  lead may read dimmer than the collimation border.

:func:`collimation_band` draws the border itself: the unexposed band along one
or two image edges, bright with a soft (penumbra) edge, kept clear of the
keypoints.  Every choice comes from the generator passed in, drawn before the
marker's state is applied, so that a seed gives the same look whatever the state.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from scipy import ndimage

LOOK_FONTS = ("DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf", "cmb10.ttf", "DejaVuSansMono.ttf", "cmss10.ttf")
"""Fonts of the real-film looks: serif bold, sans bold (two), sans regular (two); never
DejaVuSans(-Bold) or STIXGeneral Bold, whose letters are the detector's templates."""
PLACEMENTS = ("corner", "tissue", "beside_border", "on_border")
PLATES = ("bright", "dark", None)
EXTRAS = ("dot", "initial", None)
INITIALS = "ACGMNSTWYZ"  # initials that look like neither an L nor an R in any orientation
HEIGHT_FRACTION = (0.025, 0.10)  # letter height, of the image's short side
MIN_HEIGHT_PX = 14.0
CLASSIC_SHARE = 0.3
COLLIMATION_SHARE = 0.4


@lru_cache(maxsize=32)
def glyph(font_name: str, letter: str) -> np.ndarray:
    """High-resolution coverage bitmap (0..1) of ``letter``, tight box, upright."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font_name
    font = ImageFont.truetype(str(path), 160)
    canvas = PILImage.new("L", (260, 260), 0)
    ImageDraw.Draw(canvas).text((40, 20), letter, fill=255, font=font)
    arr = np.asarray(canvas, np.float32) / 255.0
    ys, xs = np.nonzero(arr > 0.02)
    return arr[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def _resized(cover: np.ndarray, height: int) -> np.ndarray:
    width = max(int(round(height * cover.shape[1] / cover.shape[0])), 3)
    pil = PILImage.fromarray((np.clip(cover, 0, 1) * 255).astype(np.uint8)).resize((width, height),
                                                                                  PILImage.Resampling.BOX)
    return np.asarray(pil, np.float32) / 255.0


def draw_look(rng: np.random.Generator, short_side_px: int, spacing_mm: float, collimated: bool) -> dict[str, Any]:
    """The look of a real-film marker (module docstring), every choice drawn here, once."""
    height_px = max(float(rng.uniform(*HEIGHT_FRACTION)) * short_side_px, MIN_HEIGHT_PX)
    placements = PLACEMENTS if collimated else PLACEMENTS[:2]
    weights = np.array([0.3, 0.25, 0.3, 0.15] if collimated else [0.55, 0.45])
    tilt = float(rng.uniform(-5.0, 5.0)) if rng.random() < 0.6 else 0.0
    return {
        "style": "real-film",
        "font": LOOK_FONTS[int(rng.integers(len(LOOK_FONTS)))],
        "height_px": round(height_px, 2),
        "height_mm": round(height_px * spacing_mm, 2),
        "plate": PLATES[int(rng.choice(3, p=[0.4, 0.35, 0.25]))],
        "plate_density": float(rng.uniform(0.15, 0.45)),  # bright plate; a dark one uses minus 0.6 x this
        "plate_margin": float(rng.uniform(0.15, 0.35)),  # of the letter height, each side
        "extra": EXTRAS[int(rng.choice(3, p=[0.25, 0.25, 0.5]))],
        "initial": INITIALS[int(rng.integers(len(INITIALS)))],
        "placement": str(rng.choice(placements, p=weights / weights.sum())),
        "tilt_deg": round(tilt, 2),
        "blur_px": round(float(rng.uniform(0.0, min(1.6, 0.06 * height_px))), 2),  # a stroke stays a stroke
        "lead_density": float(rng.uniform(1.6, 6.0)),
        "position_draw": float(rng.random()),
        "gap_mm": float(rng.uniform(0.0, 1.5)),
    }


def marker_bitmaps(look: dict[str, Any], letter: str, mirrored: bool, quarter_turns: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lead coverage, letter coverage, plate coverage) of one marker, same shape, 0..1.

    The marker is composed upright (letter, then the dot or the initial to its
    right, both on the plate), then mirrored, turned by ``quarter_turns`` (counter-
    clockwise on screen), tilted by ``tilt_deg`` and blurred by ``blur_px``."""
    h = int(round(look["height_px"]))
    letter_cov = _resized(glyph(look["font"], letter), h)
    gap = max(int(round(0.2 * h)), 2)
    if look["extra"] == "dot":
        d = max(int(round(0.22 * h)), 3)
        yy, xx = np.mgrid[:d, :d]
        extra = ((yy - (d - 1) / 2) ** 2 + (xx - (d - 1) / 2) ** 2 <= (d / 2) ** 2).astype(np.float32)
    elif look["extra"] == "initial":
        extra = _resized(glyph(look["font"], look["initial"]), max(int(round(0.4 * h)), 4))
    else:
        extra = np.zeros((0, 0), np.float32)
    width = letter_cov.shape[1] + (gap + extra.shape[1] if extra.size else 0)
    margin = int(round(look["plate_margin"] * h)) + 2
    pad = margin + int(math.ceil(3 * look["blur_px"])) + 2
    side_h, side_w = h + 2 * pad, width + 2 * pad
    lead = np.zeros((side_h, side_w), np.float32)
    only = np.zeros_like(lead)
    only[pad:pad + h, pad:pad + letter_cov.shape[1]] = letter_cov
    lead[:] = only
    if extra.size:
        ex0, ey0 = pad + letter_cov.shape[1] + gap, pad + h - extra.shape[0]  # on the baseline
        lead[ey0:ey0 + extra.shape[0], ex0:ex0 + extra.shape[1]] = np.maximum(
            lead[ey0:ey0 + extra.shape[0], ex0:ex0 + extra.shape[1]], extra)
    plate = np.zeros_like(lead)
    if look["plate"] is not None:
        plate[pad - margin:pad + h + margin, pad - margin:pad + width + margin] = 1.0
    layers = [lead, only, plate]
    if mirrored:
        layers = [layer[:, ::-1] for layer in layers]
    layers = [np.rot90(layer, quarter_turns) for layer in layers]
    if look["tilt_deg"]:
        layers = [np.asarray(PILImage.fromarray(layer, mode="F").rotate(look["tilt_deg"], resample=PILImage.BILINEAR,
                                                                        expand=True), np.float32) for layer in layers]
    if look["blur_px"] > 0.05:  # the letter layer stays sharp: it gives the letter's true box
        layers[0] = ndimage.gaussian_filter(layers[0], look["blur_px"])
    # Cropped to what is drawn, so that a placement puts the plate (or the letter) where it says.
    ys, xs = np.nonzero((layers[0] > 0.02) | (layers[2] > 0.02))
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return tuple(np.clip(layer[crop], 0.0, 1.0) for layer in layers)  # type: ignore[return-value]


def collimation_band(rng: np.random.Generator, rows: int, cols: int, spacing_mm: float,
                     keypoints: dict[str, Optional[tuple[float, float]]]) -> tuple[np.ndarray, dict[str, Any]]:
    """Attenuation of the collimation border (0 where the field is exposed) and what was drawn:
    ``{"edges": {edge: width_px}, "density"}``.  One or two edges, each band 3-12 % of the
    side it cuts, narrowed to stay 3 mm clear of every keypoint (an edge with no room is left out)."""
    density = float(rng.uniform(1.8, 2.6))
    edges = ["left", "right", "top", "bottom"]
    chosen = [str(edge) for edge in rng.permutation(edges)[: int(rng.integers(1, 3))]]
    fractions = {edge: float(rng.uniform(0.03, 0.12)) for edge in edges}
    penumbra = max(0.8 / spacing_mm, 1.0)
    points = [p for p in keypoints.values() if p is not None]
    clear = 3.0 / spacing_mm
    yy = np.arange(rows, dtype=np.float32)[:, None]
    xx = np.arange(cols, dtype=np.float32)[None, :]
    inside_depth = np.full((rows, cols), -np.inf, np.float32)  # how far into a band, px
    drawn: dict[str, int] = {}
    for edge in chosen:
        along = cols if edge in ("left", "right") else rows
        width = fractions[edge] * along
        for x, y in points:
            distance = {"left": x, "right": cols - 1 - x, "top": y, "bottom": rows - 1 - y}[edge]
            width = min(width, distance - clear)
        if width < 0.02 * along:
            continue
        depth = {"left": width - xx, "right": xx - (cols - 1 - width), "top": width - yy,
                 "bottom": yy - (rows - 1 - width)}[edge]
        inside_depth = np.maximum(inside_depth, np.broadcast_to(depth, (rows, cols)))
        drawn[edge] = int(round(width))
    if not drawn:
        return np.zeros((rows, cols), np.float32), {"edges": {}, "density": density}
    ramp = 0.5 * (1.0 + np.tanh(inside_depth / penumbra))
    return (density * ramp).astype(np.float32), {"edges": drawn, "density": round(density, 3)}


def place_marker(look: dict[str, Any], box_shape: tuple[int, int], rows: int, cols: int, spacing_mm: float,
                 occupied: np.ndarray, soft_tissue: np.ndarray, keypoints: dict[str, Any],
                 collimation: dict[str, Any], corners: list[int], inset_px: int) -> tuple[int, int, str]:
    """Top-left (y0, x0) of a marker bitmap of ``box_shape`` and the placement used.

    ``corner``: the first of ``corners`` whose surroundings are empty (as the
    classic look); ``tissue``: centred on the soft tissue, 10 mm clear of the
    keypoints; ``beside_border``: in the exposed field with its plate
    ``gap_mm`` from a collimation band's inner edge; ``on_border``: inside a band
    wide enough.  A placement that finds no room falls back to the corner."""
    bh, bw = box_shape
    placement = look["placement"]
    draw = look["position_draw"]
    edges = collimation.get("edges", {})
    if placement in ("beside_border", "on_border") and edges:
        edge = sorted(edges)[int(draw * len(edges)) % len(edges)]
        width = edges[edge]
        gap = int(round(look["gap_mm"] / spacing_mm))
        along_rows = edge in ("left", "right")
        span = (rows if along_rows else cols) - (bh if along_rows else bw)
        offset = int(round(0.1 * span + 0.8 * span * draw)) if span > 0 else 0
        thick = bw if along_rows else bh
        if placement == "on_border":
            if width < thick + 4:
                placement = "corner"
            else:
                depth = (width - thick) // 2
        else:
            depth = width + gap
        if placement != "corner":
            if edge == "left":
                return offset, depth, placement
            if edge == "right":
                return offset, cols - depth - bw, placement
            if edge == "top":
                return depth, offset, placement
            return rows - depth - bh, offset, placement
        placement = "corner"
    if placement == "tissue":
        candidates = np.argwhere(ndimage.binary_erosion(soft_tissue, iterations=max(1, min(bh, bw) // 2)))
        clear = 10.0 / spacing_mm
        points = [p for p in keypoints.values() if p is not None]
        if len(candidates):
            order = np.random.default_rng(int(draw * 1e9)).permutation(len(candidates))[:200]
            for index in order:
                cy, cx = candidates[index]
                if all(math.hypot(cx - x, cy - y) > clear + max(bh, bw) / 2 for x, y in points):
                    y0, x0 = int(cy - bh // 2), int(cx - bw // 2)
                    if 2 <= y0 and y0 + bh <= rows - 2 and 2 <= x0 and x0 + bw <= cols - 2:
                        return y0, x0, "tissue"
    best = None
    clearance = int(round(3.0 / spacing_mm))
    for corner in corners:
        top, left = corner in (0, 1), corner in (0, 2)
        y0 = inset_px if top else rows - inset_px - bh
        x0 = inset_px if left else cols - inset_px - bw
        ya, yb = max(y0 - clearance, 0), min(y0 + bh + clearance, rows)
        xa, xb = max(x0 - clearance, 0), min(x0 + bw + clearance, cols)
        overlap = occupied[ya:yb, xa:xb].mean() if yb > ya and xb > xa else 1.0
        if best is None or overlap < best[0] - 1e-9:
            best = (overlap, y0, x0)
        if overlap == 0:
            break
    return best[1], best[2], "corner"
