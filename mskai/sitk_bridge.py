"""Exact conversion between :class:`mskai.Image` and ``SimpleITK.Image``.

Both use LPS and the same index order, so the conversion copies geometry
unchanged; it exists once so that no caller re-derives it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from mskai.image import Image


def to_sitk(image: Image) -> sitk.Image:
    """A SimpleITK image with the same voxels (``[k, j, i]``) and LPS geometry."""
    out = sitk.GetImageFromArray(np.ascontiguousarray(image.array), isVector=False)
    out.SetSpacing(image.spacing)
    out.SetOrigin(image.origin)
    out.SetDirection(tuple(float(v) for v in image.direction.reshape(-1)))
    return out


def from_sitk(img: sitk.Image, meta: dict[str, Any] | None = None, **kwargs: Any) -> Image:
    """An :class:`Image` from a 3D (or 2D, stored as one slice) SimpleITK image."""
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("multi-component images are not supported here")
    array = sitk.GetArrayFromImage(img)
    if img.GetDimension() == 2:
        sx, sy = img.GetSpacing()
        ox, oy = img.GetOrigin()
        d = np.asarray(img.GetDirection(), dtype=float).reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d
        return Image(array[np.newaxis], (sx, sy, 1.0), (ox, oy, 0.0), direction,
                     meta=dict(meta or {}), **kwargs)
    if img.GetDimension() != 3:
        raise ValueError(f"{img.GetDimension()}D images are not supported")
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    return Image(array, img.GetSpacing(), img.GetOrigin(), direction, meta=dict(meta or {}), **kwargs)
