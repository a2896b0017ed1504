"""How a wrist radiograph becomes a WristQC network input, and back.

The constants are stored in each bundle's metadata (:class:`Preprocessing`):

1. A landscape plane (more columns than rows) is turned 90 degrees clockwise, so
   that the network always sees a portrait image (the phantoms and the paper's
   images are portrait; the flips in training cover a hand pointing down).
2. **Letterbox** resize to the bundle's input (width x height; paper 960x1920 for
   the artifact model, 640x1280 for keypoints): the image keeps its aspect ratio
   (one scale, bilinear with anti-aliasing) and is centred on a zero background;
   a keypoint's shape therefore does not depend on the detector's field of view.
3. Intensities: the 1st and 99th percentiles of the resized image map to 0 and
   1, clipped to [-0.5, 2] (metal stays brighter than bone; air is ~0 like the
   padding).

All coordinates are pixels (x, y) = (column, row) with the origin at the centre
of the top-left pixel; :class:`InputGeometry` maps them between the original
image and the network input, both ways (:func:`prepare_input` makes both).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from mskai.errors import InputError, ModelError


@dataclass(frozen=True)
class Preprocessing:
    """How a plane becomes a network input (stored in a bundle's ``preprocessing``).

    ``input_size`` is (width, height) in pixels, portrait; intensities map the
    ``low_percentile`` / ``high_percentile`` of the resized image to 0 / 1 and are
    clipped to ``clip``.
    """

    input_size: tuple[int, int]
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    clip: tuple[float, float] = (-0.5, 2.0)
    resize: str = "letterbox"
    landscape: str = "rotate 90 degrees clockwise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "clip", tuple(float(v) for v in self.clip))
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"input_size must be (width, height) >= 8, got {self.input_size}")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        # Stored so that a bundle says how its inputs were made; only these are implemented.
        if self.resize != "letterbox" or self.landscape != "rotate 90 degrees clockwise":
            raise ValueError("preprocessing supports resize 'letterbox' with landscape "
                             "'rotate 90 degrees clockwise' only")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["input_size"] = list(self.input_size)
        values["clip"] = list(self.clip)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Preprocessing":
        known = {"input_size", "low_percentile", "high_percentile", "clip", "resize", "landscape"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelError(f"unknown preprocessing field(s) {', '.join(unknown)}")
        return cls(**{key: (tuple(value) if isinstance(value, list) else value)
                      for key, value in values.items()})


@dataclass(frozen=True)
class InputGeometry:
    """The mapping between an original plane and a network input.

    ``original_size`` (cols, rows) of the plane; ``rotated``: the plane was
    landscape and turned 90 degrees clockwise; ``scale`` (sx, sy): input pixels
    per (rotated) original pixel; ``pad`` (px, py): offset of the resized image
    in the input; ``input_size`` (width, height).
    """

    original_size: tuple[int, int]
    rotated: bool
    scale: tuple[float, float]
    pad: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def upright_size(self) -> tuple[int, int]:
        """(cols, rows) of the plane after the landscape rotation."""
        cols, rows = self.original_size
        return (rows, cols) if self.rotated else (cols, rows)

    @property
    def resized_size(self) -> tuple[int, int]:
        cols, rows = self.upright_size
        return int(round(cols * self.scale[0])), int(round(rows * self.scale[1]))

    def to_input(self, points: ArrayLike) -> np.ndarray:
        """(N, 2) original pixels -> (N, 2) input pixels (NaN rows stay NaN)."""
        p = np.array(points, dtype=np.float64).reshape(-1, 2)
        if self.rotated:  # clockwise: (x, y) -> (rows - 1 - y, x)
            rows = self.original_size[1]
            p = np.stack([rows - 1 - p[:, 1], p[:, 0]], axis=1)
        return np.stack([(p[:, 0] + 0.5) * self.scale[0] - 0.5 + self.pad[0],
                         (p[:, 1] + 0.5) * self.scale[1] - 0.5 + self.pad[1]], axis=1)

    def to_original(self, points: ArrayLike) -> np.ndarray:
        """(N, 2) input pixels -> (N, 2) original pixels (inverse of :meth:`to_input`)."""
        q = np.array(points, dtype=np.float64).reshape(-1, 2)
        p = np.stack([(q[:, 0] - self.pad[0] + 0.5) / self.scale[0] - 0.5,
                      (q[:, 1] - self.pad[1] + 0.5) / self.scale[1] - 0.5], axis=1)
        if self.rotated:
            rows = self.original_size[1]
            p = np.stack([p[:, 1], rows - 1 - p[:, 0]], axis=1)
        return p

    def map_to_original(self, values: np.ndarray) -> np.ndarray:
        """An input-sized map (height, width) resampled onto the original plane (rows, cols)."""
        width, height = self.resized_size
        crop = np.ascontiguousarray(values[self.pad[1]:self.pad[1] + height,
                                           self.pad[0]:self.pad[0] + width], dtype=np.float32)
        cols, rows = self.upright_size
        upright = F.interpolate(torch.from_numpy(crop)[None, None], size=(rows, cols),
                                mode="bilinear", align_corners=False)[0, 0].numpy()
        return np.ascontiguousarray(np.rot90(upright, k=1)) if self.rotated else upright

    def to_dict(self) -> dict[str, Any]:
        return {"original_size": list(self.original_size), "rotated": self.rotated,
                "scale": list(self.scale), "pad": list(self.pad), "input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "InputGeometry":
        return cls(original_size=tuple(int(v) for v in values["original_size"]),
                   rotated=bool(values["rotated"]), scale=tuple(float(v) for v in values["scale"]),
                   pad=tuple(int(v) for v in values["pad"]),
                   input_size=tuple(int(v) for v in values["input_size"]))


def prepare_input(plane: np.ndarray, preprocessing: Preprocessing) -> tuple[np.ndarray, InputGeometry]:
    """A plane (rows, cols), MONOCHROME2 sense, as a network input.

    Returns the input (height, width) float32 and its :class:`InputGeometry`.
    Raises :class:`InputError` for a plane that is not 2D, too small or not finite.
    """
    values = np.asarray(plane)
    if values.ndim != 2 or min(values.shape) < 2:
        raise InputError(f"a wrist radiograph must be one 2D plane, got an array of shape {values.shape}")
    values = values.astype(np.float32, copy=False)
    if not np.all(np.isfinite(values)):
        raise InputError("the radiograph holds NaN or infinite pixel values")
    rows, cols = values.shape
    rotated = cols > rows
    if rotated:
        values = np.rot90(values, k=-1)
    up_rows, up_cols = values.shape
    width, height = preprocessing.input_size
    scale = min(width / up_cols, height / up_rows)
    new_cols = min(width, max(1, int(round(up_cols * scale))))
    new_rows = min(height, max(1, int(round(up_rows * scale))))
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(values))[None, None],
                            size=(new_rows, new_cols), mode="bilinear", align_corners=False,
                            antialias=True)[0, 0].numpy()
    low, high = np.percentile(resized, [preprocessing.low_percentile, preprocessing.high_percentile])
    span = float(high - low) if high > low else 1.0
    normalised = np.clip((resized - low) / span, *preprocessing.clip).astype(np.float32)
    pad_x, pad_y = (width - new_cols) // 2, (height - new_rows) // 2
    out = np.zeros((height, width), np.float32)
    out[pad_y:pad_y + new_rows, pad_x:pad_x + new_cols] = normalised
    geometry = InputGeometry(original_size=(cols, rows), rotated=rotated,
                             scale=(new_cols / up_cols, new_rows / up_rows), pad=(pad_x, pad_y),
                             input_size=(width, height))
    return out, geometry
