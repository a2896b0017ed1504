"""Input checks of the tasks that analyse a CT (SpineOVF, SacroiliitisCT).

Each problem is a one-line :class:`mskai.InputError` naming the module that refuses
the input (``module``, e.g. ``"SpineOVF"``), so a message reads
``"...; SpineOVF needs a CT (use --force to analyse anyway)"``:

* :func:`check_ct`: not a CT, unless ``force``.  A DICOM ``Modality``
  (``meta["modality"]``) other than CT is refused; without a modality (NIfTI/NRRD)
  the intensities decide: a CT in HU has air or gas (at least 0.1 % of the voxels
  below -500 HU) and bone (at least 0.1 % above 200 HU); an MR or other image in
  arbitrary non-negative units has no voxel below -500.  With ``force`` the
  analysis runs and the returned warning goes into the result;
* :func:`check_coverage`: a cranio-caudal extent below what the task needs;
* :func:`finite_image`: NaN/inf voxels (possible when an :class:`Image` comes from
  elsewhere than :mod:`mskai.io`) are replaced by the finite minimum, with a warning;
* :func:`labelmap_overlap_warning`: a labelling given with the CT (vertebrae, bones)
  whose labels lie entirely outside the CT, or that has no label at all, gets a
  warning (it names nothing).
"""
from __future__ import annotations

import numpy as np

from mskai.errors import InputError
from mskai.geometry import index_to_lps, world_bounds
from mskai.image import Image

AIR_OR_GAS_HU = -500.0
BONE_HU = 200.0
MIN_VOXEL_SHARE = 0.001
"""Share of the voxels that must be air (below :data:`AIR_OR_GAS_HU`) and bone
(above :data:`BONE_HU`) for an image without a modality to pass as a CT."""
_MAX_VOXELS_SAMPLED = 2e6


def check_ct(image: Image, force: bool = False, *, module: str) -> str | None:
    """Refuse (InputError) an image that is not a CT unless ``force``; with ``force``
    return the warning to record (None for a CT).  ``module`` names the refusing
    module in the message.  See the module docstring for the rule."""
    modality = str(image.meta.get("modality") or "").strip().upper()
    if modality:
        if modality == "CT":
            return None
        problem = f"the input is {_article(modality)} {modality} image (DICOM Modality {modality}), not CT"
    else:
        # A regular subsample of at most about 2 million voxels decides (fast on large scans).
        step = max(1, int(np.ceil((image.array.size / _MAX_VOXELS_SAMPLED) ** (1 / 3))))
        values = image.array[::step, ::step, ::step]
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise InputError("the input holds no finite voxel values")
        air_share = float(np.count_nonzero(finite < AIR_OR_GAS_HU)) / finite.size
        bone_share = float(np.count_nonzero(finite > BONE_HU)) / finite.size
        if air_share >= MIN_VOXEL_SHARE and bone_share >= MIN_VOXEL_SHARE:
            return None
        low, high = np.percentile(finite, [1, 99])
        missing = " and ".join(what for what, share in (("no air near -1000 HU", air_share),
                                                        ("no bone above 200 HU", bone_share))
                               if share < MIN_VOXEL_SHARE)
        kind = "MR or another non-CT image" if low >= -1.0 else "not a CT in HU"
        problem = (f"the input looks like {kind}, not CT (intensities {low:.0f} to {high:.0f}: "
                   f"{missing})")
    if not force:
        raise InputError(f"{problem}; {module} needs a CT (use --force to analyse anyway)")
    return f"{problem}; analysed anyway because of --force: the result is not reliable"


def _article(word: str) -> str:
    return "an" if word[:1] in "AEFHILMNORSX" else "a"


def check_coverage(image: Image, min_mm: float, *, module: str, purpose: str = "") -> float:
    """Cranio-caudal (LPS z) extent of ``image`` in mm; InputError below ``min_mm``, with
    ``"<module> needs at least <min_mm> mm <purpose>"`` in the message (``purpose``
    e.g. ``"of spine (about three vertebrae) for a sagittal analysis"``)."""
    low, high = world_bounds(image)
    extent = float(high[2] - low[2])
    if extent < min_mm:
        needed = f"{module} needs at least {min_mm:.0f} mm" + (f" {purpose}" if purpose else "")
        raise InputError(f"the scan covers only {extent:.0f} mm cranio-caudally; {needed}")
    return extent


def finite_image(image: Image) -> tuple[Image, str | None]:
    """``image`` with floating-point voxels (integers become float32) and every NaN/inf
    voxel replaced by the finite minimum (0 when none is finite; the result is then
    float32), and the warning saying how many were replaced (None when none was)."""
    array = image.array
    if not np.issubdtype(array.dtype, np.floating):
        return image.with_array(array.astype(np.float32)), None
    bad = ~np.isfinite(array)
    if not bad.any():
        return image, None
    finite = array[~bad]
    fill = float(finite.min()) if finite.size else 0.0
    fixed = np.where(bad, np.float32(fill), array).astype(np.float32)
    return image.with_array(fixed), (f"{int(bad.sum())} voxels were NaN or infinite and were "
                                     f"replaced by the finite minimum {fill:g}")


def labelmap_overlap_warning(labels: Image, image: Image, *, what: str = "labelmap") -> str | None:
    """The warning for a labelmap (any grid) whose labelled voxels lie entirely
    outside ``image``'s volume (their LPS box and the image's do not meet), or that
    has no labelled voxel; None when it overlaps.  ``what`` names it
    (``"vertebra labelling"``)."""
    array = np.asarray(labels.array)
    labelled = array != 0
    if not labelled.any():
        return f"the {what} has no labelled voxel: it names nothing"
    ranges = []
    for axis in (2, 1, 0):  # i, j, k of the array's [k, j, i]
        present = np.flatnonzero(labelled.any(axis=tuple(a for a in range(3) if a != axis)))
        ranges.append((present[0] - 0.5, present[-1] + 0.5))
    corners = np.array([[i, j, k] for i in ranges[0] for j in ranges[1] for k in ranges[2]], dtype=float)
    points = index_to_lps(labels, corners)
    label_low, label_high = points.min(axis=0), points.max(axis=0)
    low, high = world_bounds(image)
    if np.all(label_high >= low) and np.all(label_low <= high):
        return None

    def box(a: np.ndarray, b: np.ndarray) -> str:
        return " x ".join(f"{lo:.0f}..{hi:.0f}" for lo, hi in zip(a, b))

    return (f"the {what} does not overlap the CT (its labels span {box(label_low, label_high)} mm LPS, the CT "
            f"{box(low, high)} mm): it was made for another scan or another position, and names nothing here")
