"""The series of a cervical MR study found and told apart: sagittal T1, sagittal T2, axial T2.

:func:`read_study` takes what the user gives (a study folder, several folders or files,
NIfTI/NRRD volumes), finds every series and gives each one a role by these rules:

Plane (from the geometry, which wins over the words of the description)
    The slice normal is the k axis of a DICOM series (ImageOrientationPatient), and for a
    NIfTI/NRRD volume its thickest axis when one is clearly thicker (>= 1.2 x the others,
    a 2D acquisition stored in any axis order), else its k axis.  The LPS component the
    normal is mostly along names the plane: x sagittal, z axial, y coronal (unused).

Slice groups
    A DICOM series whose slices have several orientations (axial blocks angled per disc,
    stored as one series by many scanners) or blocks of parallel slices with gaps between
    them (a step over 1.5 x the usual one) is split into one stack per group when every
    group has at least 2 slices; each group is judged and used like a series (its
    ``slice_group`` is ``"2/3"``...).  A SeriesInstanceUID given by hand names all its groups.

Weighting (first rule that decides)
    1. an inversion-recovery series with a short inversion time (< 300 ms) is STIR
       (a T2-like contrast; it serves as sagittal T2 only when no true T2 exists);
    2. a gradient echo with a small flip angle (< 45 degrees) and TE >= 10 ms is T2*
       (the usual axial "T2" of the cervical spine: MEDIC, MERGE, FFE);
    3. the description (SeriesDescription, ProtocolName, SequenceName; for a NIfTI/NRRD
       file its file name) naming exactly one of T1 or T2 (``t1``, ``T1W``, ``t2_tse``...);
    4. the echo and repetition times: T1 when TE < 30 ms and TR < 1000 ms, T2 when
       TE > 60 ms;
    5. nothing decides: unknown, which counts as T2 with a warning.
    When the description and the times disagree the description wins and a warning
    says so (it is what the operator chose; the times mislead for T2* and T1-FLAIR).

Roles
    sagittal T1: the sagittal T1 series; sagittal T2: the sagittal T2 series, else a
    STIR, else a sagittal series of unknown weighting (with a warning); axial T2: every
    axial series that is not T1 (several stacks, e.g. one per disc, are all kept).
    When several series compete for a sagittal role the one with the most slices wins
    (ties: the lowest series number) and the others are listed as unused.
    ``sagittal_t1``/``sagittal_t2``/``axial_t2`` (a path, or a SeriesInstanceUID of a
    series among the inputs; ``axial_t2`` may be a list) set a role by hand: that role
    is then not detected, and the series set by hand takes no other role.

What is refused
    A series that is a CT (DICOM Modality CT, or without a modality HU-like intensities:
    air below -500 and bone above 200 in at least 0.1 % of the voxels each), a radiograph
    (Modality DX/CR/MG/RF/XA/IO/PX, or a single frame), another non-MR modality, or an MR
    of another body part (BodyPartExamined naming another region such as LSPINE, TSPINE,
    KNEE, BRAIN; CSPINE, NECK, SPINE and an empty value are cervical) takes no role.
    When no series is left the input is refused with one line naming the first problem
    (:class:`mskai.InputError`); otherwise the left-out series are named in the warnings
    (a study folder may hold an old radiograph or a lumbar series beside the cervical
    ones).  With ``force`` the CT and other-region series are used anyway, with a warning.
    Localizers (ImageType LOCALIZER) and single-slice MR series are never used.
    At least one sagittal series is needed; a missing sagittal T1, sagittal T2 or axial
    T2 is said in ``warnings``.  Series of different patients are refused unless
    ``force``; series of different studies or frames of reference get a warning (the
    disc levels go from the sagittal to the axial series through patient coordinates).
"""
from __future__ import annotations

import os
import re
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from mskai.ct import AIR_OR_GAS_HU, BONE_HU, MIN_VOXEL_SHARE
from mskai.errors import InputError
from mskai.image import Image
from mskai.io import SITK_FORMATS, list_dicom_series, read_image

MODULE = "CervicalMR"
ROLES = ("sagittal_t1", "sagittal_t2", "axial_t2")
ROLE_NAMES = {"sagittal_t1": "sagittal T1", "sagittal_t2": "sagittal T2", "axial_t2": "axial T2"}
T1_MAX_TE_MS = 30.0
T1_MAX_TR_MS = 1000.0
T2_MIN_TE_MS = 60.0
STIR_MAX_TI_MS = 300.0
T2STAR_MAX_FLIP_DEG = 45.0
T2STAR_MIN_TE_MS = 10.0
THICK_AXIS_RATIO = 1.2
RADIOGRAPH_MODALITIES = {"DX", "CR", "MG", "RF", "XA", "IO", "PX", "RG", "DR"}
CERVICAL_BODY_PARTS = {"", "CSPINE", "NECK", "SPINE", "CERVICAL", "CERVICALSPINE", "SPINECERVICAL",
                       "HEADNECK", "CTSPINE", "WHOLESPINE", "HWS", "CERVIX"}
"""BodyPartExamined values (upper case, letters only) taken as a cervical study
(``CERVIX`` is what some consoles write for the neck; ``HWS`` the German
Halswirbelsaeule; ``CTSPINE`` the cervico-thoracic spine)."""
OTHER_BODY_PARTS = {
    "LSPINE", "TSPINE", "SSPINE", "TLSPINE", "LSSPINE", "COCCYX", "SACRUM", "LUMBAR", "LUMBARSPINE",
    "THORACIC", "THORACICSPINE", "BWS", "LWS", "BRAIN", "HEAD", "SKULL", "IAC", "ORBIT", "SELLA",
    "KNEE", "HIP", "SHOULDER", "ELBOW", "WRIST", "HAND", "FINGER", "ANKLE", "FOOT", "TOE", "LEG",
    "ARM", "THIGH", "EXTREMITY", "CHEST", "THORAX", "BREAST", "HEART", "ABDOMEN", "LIVER", "KIDNEY",
    "PANCREAS", "PELVIS", "PROSTATE", "BLADDER", "UTERUS", "SIJOINT", "TMJ"}
"""BodyPartExamined values of other regions (DICOM's defined terms and common variants);
a value in neither set is accepted with a warning."""

_T1_WORDS = re.compile(r"(?<![a-z0-9])t1(?![0-9])|t1w|t1_|_t1", re.IGNORECASE)
_T2_WORDS = re.compile(r"(?<![a-z0-9])t2(?![0-9])|t2w|t2_|_t2|t2\*", re.IGNORECASE)
_STIR_WORDS = re.compile(r"stir|(?<![a-z])tirm|(?<![a-z])tir(?![a-z])", re.IGNORECASE)

Source = Union[str, "os.PathLike[str]"]


@dataclass
class SeriesRecord:
    """One series found in the inputs and what was decided about it (``describe()`` is
    the JSON form listed in the result)."""

    uid: str
    description: str
    source: str
    plane: str = "unknown"
    obliquity_deg: float = 0.0
    weighting: str = "unknown"
    weighting_from: str = ""
    n_slices: int = 0
    modality: str = ""
    role: str | None = None
    why: str = ""
    problem: str | None = None
    usable_with_force: bool = True
    header: Dataset | None = None
    study_uid: str = ""
    patient_id: str = ""
    frame_of_reference: str = ""
    series_number: int | None = None
    loader: Callable[[], Image] | None = None
    image: Image | None = None
    by_hand: bool = False
    conflict: str = ""
    group: str = ""
    """``"2/3"`` for the second of three slice groups of one series (see
    :func:`_slice_group_records`), else empty."""

    def load(self) -> Image:
        if self.image is None:
            assert self.loader is not None
            self.image = self.loader()
        return self.image

    def describe(self) -> dict[str, Any]:
        return {"uid": self.uid, "description": self.description, "source": self.source,
                "role": self.role, "why": self.why, "plane": self.plane,
                "obliquity_deg": round(self.obliquity_deg, 1), "weighting": self.weighting,
                "n_slices": self.n_slices, "modality": self.modality, "slice_group": self.group or None}


@dataclass
class CervicalStudyInput:
    """The images of a cervical MR study by role, with what was decided and why."""

    sagittal_t1: Image | None = None
    sagittal_t2: Image | None = None
    axial_t2: list[Image] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    """Every series found: ``uid``, ``description``, ``source``, ``role`` (``sagittal_t1``,
    ``sagittal_t2``, ``axial_t2`` or None), ``why``, ``plane``, ``obliquity_deg``,
    ``weighting``, ``n_slices``, ``modality``."""
    warnings: list[str] = field(default_factory=list)

    @property
    def sagittal(self) -> Image:
        """The sagittal image to segment: T2 when there is one, else T1."""
        image = self.sagittal_t2 if self.sagittal_t2 is not None else self.sagittal_t1
        assert image is not None  # read_study refuses a study without a sagittal series
        return image

    def describe(self) -> dict[str, Any]:
        """The ``input`` block of ``result.json``: each role's image and every series."""
        out: dict[str, Any] = {"modality": "MR", "series": list(self.series)}
        if self.sagittal_t1 is not None:
            out["sagittal_t1"] = self.sagittal_t1.describe()
        if self.sagittal_t2 is not None:
            out["sagittal_t2"] = self.sagittal_t2.describe()
        out["axial_t2"] = [image.describe() for image in self.axial_t2]
        return out


# --------------------------------------------------------------------------- public API

def read_study(inputs: Source | Sequence[Source], *, sagittal_t1: Source | None = None,
               sagittal_t2: Source | None = None,
               axial_t2: Source | Sequence[Source] | None = None,
               force: bool = False) -> CervicalStudyInput:
    """Find the series of a cervical MR study in ``inputs`` and give each its role.

    ``inputs``: a folder (searched recursively for DICOM; a folder without DICOM gives
    its NIfTI/NRRD/MetaImage files), a file, or a list of those (several DICOM files of
    one or more series, several NIfTI volumes...).  ``sagittal_t1``, ``sagittal_t2``,
    ``axial_t2`` set roles by hand: a path, or the SeriesInstanceUID of a series in
    ``inputs`` (``axial_t2`` may be a list).  ``force`` uses CT and other-region series
    anyway (with a warning).  Rules: see the module docstring.  Raises
    :class:`mskai.InputError` (one line) when nothing usable is left or no sagittal
    series exists.
    """
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not paths and sagittal_t1 is None and sagittal_t2 is None and not axial_t2:
        raise InputError("no input was given; CervicalMR needs the series of a cervical MR study")
    notes: list[str] = []
    records = _dedupe(_records_of_paths([Path(p) for p in paths], notes))

    manual: dict[str, list[SeriesRecord]] = {}
    axial_values = ([] if axial_t2 is None else [axial_t2] if isinstance(axial_t2, (str, os.PathLike))
                    else list(axial_t2))
    for role, values in (("sagittal_t1", [sagittal_t1] if sagittal_t1 is not None else []),
                         ("sagittal_t2", [sagittal_t2] if sagittal_t2 is not None else []),
                         ("axial_t2", axial_values)):
        for value in values:
            for record in _resolve_manual(value, records, ROLE_NAMES[role], notes, several=role == "axial_t2"):
                if record.by_hand:
                    raise InputError(f"{value}: this series is set by hand for two roles "
                                     f"({record.role and ROLE_NAMES[record.role]} and {ROLE_NAMES[role]})")
                record.by_hand, record.role = True, role
                record.why = f"set by hand (--{role.replace('_', '-')})"
                if all(r is not record for r in records):
                    records.append(record)
                manual.setdefault(role, []).append(record)

    for record in records:
        _judge(record)
    for record in records:
        if record.problem is None:
            continue
        if record.by_hand and not force:
            raise InputError(f"{record.source}: {record.problem}; {MODULE} needs an MR series of the cervical "
                             "spine (use --force to analyse anyway)")
        if force and record.usable_with_force:
            notes.append(f"series '{record.description}' ({record.source}): {record.problem}; used anyway because "
                         "of --force: the result is not reliable")
            record.problem = None
        else:
            record.role = None
            record.why = f"not used: {record.problem}"

    usable = [r for r in records if r.problem is None]
    if not usable:
        first = next((r for r in records if r.problem and r.usable_with_force), records[0] if records else None)
        if first is None:
            raise InputError("no series found in the input")
        hint = " (use --force to analyse anyway)" if first.usable_with_force and not force else ""
        raise InputError(f"{first.source}: {first.problem}; {MODULE} needs an MR study of the cervical spine{hint}")
    for record in records:
        if record.problem is not None:
            notes.append(f"series '{record.description}' ({record.source}) is not used: {record.problem}")

    _assign_roles(usable, manual, notes)
    return _study(records, notes, force)


# --------------------------------------------------------------------------- finding series

def _records_of_paths(paths: list[Path], notes: list[str]) -> list[SeriesRecord]:
    records: list[SeriesRecord] = []
    dicom_files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_dir():
            records.extend(_records_of_folder(path, notes))
        elif _is_volume_file(path):
            records.append(_volume_record(path))
        else:
            dicom_files.append(path)
    if dicom_files:
        records.extend(_records_of_dicom_files(dicom_files))
    return records


def _is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(tuple(SITK_FORMATS)) and not path.name.lower().endswith(".seg.nrrd")


def _records_of_folder(folder: Path, notes: list[str]) -> list[SeriesRecord]:
    try:
        infos = list_dicom_series(folder)
    except InputError:
        volumes = sorted(p for p in folder.iterdir() if p.is_file() and _is_volume_file(p))
        if not volumes:
            raise
        return [_volume_record(p) for p in volumes]
    records = []
    for info in infos:
        label = f"{folder} (series {info.series_number})" if info.series_number is not None else str(folder)
        records.extend(_slice_group_records(list(info.files), label))
    return records


def _slice_group_records(files: list[Path], label: str) -> list[SeriesRecord]:
    """One record per slice group of a series: a series whose slices have several
    orientations (axial blocks angled per disc) or gaps between blocks of parallel
    slices (more than 1.5 x the usual step) is several stacks, each read by itself,
    when every group has at least 2 slices (else the series is one, and the reader's
    rules apply: the main orientation, uniform spacing)."""
    header = _header(files[0])
    groups = _slice_groups(files) if len(files) >= 4 else [files]
    if len(groups) == 1:
        return [_dicom_record(header, files, label)]
    records = []
    for number, group in enumerate(groups, start=1):
        record = _dicom_record(_header(group[0]), group, f"{label}, slice group {number} of {len(groups)}")
        record.group = f"{number}/{len(groups)}"
        record.description = f"{record.description} [slice group {number} of {len(groups)}]"
        records.append(record)
    return records


def _slice_groups(files: list[Path]) -> list[list[Path]]:
    by_orientation: dict[tuple, list[tuple[float, Path]]] = {}
    for path in files:
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(path), stop_before_pixels=True,
                                     specific_tags=["ImageOrientationPatient", "ImagePositionPatient"])
            orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
            position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        except Exception:  # no geometry (or unreadable): the reader decides
            return [files]
        if orientation.shape != (6,) or position.shape != (3,):
            return [files]
        normal = np.cross(orientation[:3], orientation[3:])
        key = tuple(np.round(orientation, 3))
        by_orientation.setdefault(key, []).append((float(position @ normal), path))
    groups: list[list[Path]] = []
    for members in by_orientation.values():
        members.sort(key=lambda m: m[0])
        steps = np.diff([m[0] for m in members])
        usual = float(np.median(steps[steps > 1e-3])) if np.any(steps > 1e-3) else 0.0
        current = [members[0][1]]
        for step, (_, path) in zip(steps, members[1:]):
            if usual > 0 and step > 1.5 * usual:
                groups.append(current)
                current = []
            current.append(path)
        groups.append(current)
    if len(groups) > 1 and min(len(g) for g in groups) < 2:
        return [files]
    return groups


def _records_of_dicom_files(files: list[Path]) -> list[SeriesRecord]:
    groups: dict[str, list[Path]] = {}
    headers: dict[str, Dataset] = {}
    unreadable: list[Path] = []
    for path in files:
        try:
            header = _header(path)
        except Exception:  # not DICOM or damaged: read_image names the problem
            unreadable.append(path)
            continue
        uid = str(header.get("SeriesInstanceUID", "unknown"))
        groups.setdefault(uid, []).append(path)
        headers.setdefault(uid, header)
    if not groups:
        read_image(unreadable if len(unreadable) > 1 else unreadable[0])  # raises the one-line reason
        raise InputError(f"{unreadable[0]}: no readable DICOM image found")
    records = []
    for uid, group in groups.items():
        folder = os.path.commonpath([str(p.absolute().parent) for p in group])
        label = str(group[0]) if len(group) == 1 else f"{len(group)} files in {folder}"
        records.extend(_slice_group_records(group, label))
    return records


def _header(path: Path) -> Dataset:
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path), stop_before_pixels=True)


def _dicom_record(header: Dataset, files: list[Path], source: str) -> SeriesRecord:
    uid = str(header.get("SeriesInstanceUID", "unknown"))
    n_frames = int(_number(header.get("NumberOfFrames")) or 1)
    record = SeriesRecord(
        uid=uid, description=str(header.get("SeriesDescription", "") or ""), source=source,
        modality=str(header.get("Modality", "") or "").strip().upper(), header=header,
        n_slices=len(files) * n_frames if n_frames > 1 else len(files),
        study_uid=str(header.get("StudyInstanceUID", "") or ""),
        patient_id=str(header.get("PatientID", "") or ""),
        frame_of_reference=str(header.get("FrameOfReferenceUID", "") or ""),
        series_number=_int_or_none(header.get("SeriesNumber")))

    def load() -> Image:
        return read_image(files, series_uid=uid if uid != "unknown" else None)

    record.loader = load
    orientation = _nested(header, "ImageOrientationPatient")
    if orientation is not None and len(orientation) == 6:
        row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
        normal = np.cross(row, column)
        if np.linalg.norm(normal) > 0.5:
            _set_plane(record, normal / np.linalg.norm(normal))
    return record


def _volume_record(path: Path) -> SeriesRecord:
    image = read_image(path)
    name = path.name
    for suffix in SITK_FORMATS:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    record = SeriesRecord(uid=str(path), description=name, source=str(path), image=image,
                          n_slices=image.shape[0], modality=str(image.meta.get("modality") or "").upper())
    _set_plane(record, _volume_normal(image))
    return record


def _volume_normal(image: Image) -> np.ndarray:
    """The slice normal of a volume: its thickest axis when clearly thicker, else k."""
    spacing = np.asarray(image.spacing)
    thickest = int(np.argmax(spacing))
    others = np.delete(spacing, thickest)
    axis = thickest if spacing[thickest] >= THICK_AXIS_RATIO * others.max() else 2
    return image.direction[:, axis]


def _set_plane(record: SeriesRecord, normal: np.ndarray) -> None:
    axis = int(np.argmax(np.abs(normal)))
    record.plane = ("sagittal", "coronal", "axial")[axis]
    record.obliquity_deg = float(np.degrees(np.arccos(min(1.0, abs(float(normal[axis]))))))


def _dedupe(records: list[SeriesRecord]) -> list[SeriesRecord]:
    seen: set[tuple[str, str]] = set()
    out = []
    for record in records:
        if (record.uid, record.group) in seen:
            continue
        seen.add((record.uid, record.group))
        out.append(record)
    return out


def _resolve_manual(value: Source, records: list[SeriesRecord], role: str, notes: list[str],
                    several: bool) -> list[SeriesRecord]:
    """The series (or its slice groups, when ``several`` roles may be taken: axial T2) that
    a path or SeriesInstanceUID given by hand names."""
    text = str(value)
    found = [r for r in records if r.uid == text]
    if not found:
        path = Path(text)
        if not path.exists():
            known = ", ".join(f"{r.uid} ('{r.description}')" for r in records) or "none"
            raise InputError(f"--{role.replace(' ', '-').lower()} {text}: neither a file or folder nor the UID of "
                             f"a series in the input (series found: {known})")
        found = _records_of_paths([path], notes)
        # the same series reached through the inputs
        known_records = {(r.uid, r.group): r for r in records}
        found = [known_records.get((r.uid, r.group), r) for r in found]
    if len({r.uid for r in found}) != 1 or (len(found) > 1 and not several):
        raise InputError(f"{value}: holds {len(found)} series or slice groups; give the {role} series by its "
                         f"folder, files or SeriesInstanceUID ({', '.join(r.description for r in found)})")
    return found


# --------------------------------------------------------------------------- judging a series

def _judge(record: SeriesRecord) -> None:
    """Set ``problem`` (why it cannot be a cervical MR series) and whether ``force`` can
    overrule it, the plane of a series whose header had none, and the weighting."""
    record.problem, record.usable_with_force = _problem(record)
    if record.problem is not None and not record.usable_with_force:
        return
    if record.plane == "unknown" or not record.modality:
        try:
            image = record.load()
        except InputError as error:
            record.problem, record.usable_with_force = f"unreadable ({error})", False
            return
        if record.plane == "unknown":
            _set_plane(record, image.direction[:, 2] if record.header is not None else _volume_normal(image))
        if not record.modality and record.problem is None and _looks_like_ct(image):
            record.problem = "HU-like intensities with air near -1000 (a CT), not MR"
    record.weighting, record.weighting_from = _weighting(record)


def _problem(record: SeriesRecord) -> tuple[str | None, bool]:
    """``(problem, usable with force)`` from the tags and the number of slices."""
    header = record.header
    image_type = [str(v).upper() for v in _as_list(header.get("ImageType"))] if header is not None else []
    if "LOCALIZER" in image_type:
        return "a localizer (ImageType LOCALIZER)", False
    modality = record.modality
    if modality in RADIOGRAPH_MODALITIES:
        return f"a radiograph (DICOM Modality {modality}), not an MR volume", False
    if record.n_slices <= 1:
        kind = "a single MR slice" if modality == "MR" else "a radiograph or a single slice"
        return f"{kind} (one frame), not a volume", False
    if modality == "CT":
        return "a CT (DICOM Modality CT), not MR", True
    if modality and modality != "MR":
        return f"a {modality} image (DICOM Modality {modality}), not MR", True
    if header is not None:
        part = str(header.get("BodyPartExamined", "") or "")
        key = re.sub(r"[^A-Z]", "", part.upper())
        if key in OTHER_BODY_PARTS:
            return f"an MR of another body part (BodyPartExamined {part})", True
        if key not in CERVICAL_BODY_PARTS:
            record.why = f"BodyPartExamined '{part}' is not a known name of the cervical spine; taken as one. "
    return None, True


def _looks_like_ct(image: Image) -> bool:
    step = max(1, int(np.ceil((image.array.size / 2e6) ** (1 / 3))))
    values = image.array[::step, ::step, ::step]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return False
    air = np.count_nonzero(values < AIR_OR_GAS_HU) / values.size
    bone = np.count_nonzero(values > BONE_HU) / values.size
    return bool(air >= MIN_VOXEL_SHARE and bone >= MIN_VOXEL_SHARE)


def _weighting(record: SeriesRecord) -> tuple[str, str]:
    """``(weighting, how it was decided)``; weighting T1, T2, T2*, STIR or unknown."""
    header = record.header
    words = record.description
    te = tr = ti = flip = None
    scanning = ""
    if header is not None:
        words = " ".join(str(v) for v in (record.description, header.get("ProtocolName", ""),
                                           _nested(header, "SequenceName") or "",
                                           _nested(header, "PulseSequenceName") or "") if v)
        te = _number(_nested(header, "EchoTime")) or _number(_nested(header, "EffectiveEchoTime"))
        tr = _number(_nested(header, "RepetitionTime"))
        ti = _number(_nested(header, "InversionTime")) or _number(_nested(header, "InversionTimes"))
        flip = _number(_nested(header, "FlipAngle"))
        scanning = " ".join(str(v) for v in _as_list(header.get("ScanningSequence"))).upper()
    times = _timing_weighting(te, tr)
    timing_text = ", ".join(f"{name} {value:g} ms" for name, value in (("TE", te), ("TR", tr)) if value is not None)
    if (ti is not None and 0 < ti < STIR_MAX_TI_MS and ("IR" in scanning.split() or _STIR_WORDS.search(words))) \
            or _STIR_WORDS.search(words):
        return "STIR", f"inversion recovery (TI {ti:g} ms)" if ti else f"'{words.strip()}' names STIR"
    if ("GR" in scanning.split() and "SE" not in scanning.split() and flip is not None
            and flip < T2STAR_MAX_FLIP_DEG and te is not None and te >= T2STAR_MIN_TE_MS):
        return "T2*", f"gradient echo, flip angle {flip:g} degrees, TE {te:g} ms"
    named_t1, named_t2 = bool(_T1_WORDS.search(words)), bool(_T2_WORDS.search(words))
    source = "file name" if header is None else "description"
    if named_t1 != named_t2:
        named = "T1" if named_t1 else "T2"
        how = f"the {source} '{words.strip()}' names {named}"
        if times is not None and times != named:
            record.conflict = (f"series '{record.description}': the {source} names {named} but the echo and "
                               f"repetition times ({timing_text}) look {times}; the {source} is followed")
        return named, how
    if times is not None:
        return times, f"echo and repetition times {timing_text}"
    return "unknown", "no tag names the weighting"


def _timing_weighting(te: float | None, tr: float | None) -> str | None:
    if te is not None and tr is not None and te < T1_MAX_TE_MS and tr < T1_MAX_TR_MS:
        return "T1"
    if te is not None and te > T2_MIN_TE_MS:
        return "T2"
    return None


def _nested(ds: Dataset, keyword: str, depth: int = 3) -> Any:
    """A value at the top level or in the functional groups of an enhanced (multi-frame)
    header (shared first, then the first frame's), searched ``depth`` sequences deep."""
    value = ds.get(keyword)
    if value not in (None, ""):
        return value
    if depth == 0:
        return None
    for element in ds:
        if element.VR == "SQ" and element.value:
            found = _nested(element.value[0], keyword, depth - 1)
            if found not in (None, ""):
                return found
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


# --------------------------------------------------------------------------- roles

_T2_PREFERENCE = {"T2": 0, "T2*": 1, "STIR": 2, "unknown": 3}


def _assign_roles(usable: list[SeriesRecord], manual: dict[str, list[SeriesRecord]], notes: list[str]) -> None:
    for role, chosen in manual.items():
        for record in chosen:
            wanted_plane = "axial" if role == "axial_t2" else "sagittal"
            if record.plane != wanted_plane:
                notes.append(f"series '{record.description}' is set by hand as {ROLE_NAMES[role]} but its slices "
                             f"are {record.plane}")
    pool = [r for r in usable if not r.by_hand]
    for record in pool:
        record.role = None
    sagittal = [r for r in pool if r.plane == "sagittal"]
    if "sagittal_t1" not in manual:
        _choose(sorted((r for r in sagittal if r.weighting == "T1"), key=_size_rank), "sagittal_t1", notes)
    if "sagittal_t2" not in manual:
        candidates = [r for r in sagittal if r.weighting != "T1" and r.role is None]
        candidates.sort(key=lambda r: (_T2_PREFERENCE[r.weighting],) + _size_rank(r))
        chosen = _choose(candidates, "sagittal_t2", notes)
        if chosen is not None and chosen.weighting == "unknown":
            notes.append(f"series '{chosen.description}' has no tag that names its weighting: it counts as the "
                         "sagittal T2")
    if "axial_t2" not in manual:
        for record in pool:
            if record.plane == "axial" and record.weighting != "T1":
                record.role = "axial_t2"
                record.why += f"axial slices ({_plane_text(record)}); {record.weighting}: {record.weighting_from}"
                if record.weighting == "unknown":
                    notes.append(f"series '{record.description}' has no tag that names its weighting: it counts as "
                                 "an axial T2")
    for record in pool:
        if record.role is None and not record.why.startswith("not used"):
            if record.plane == "coronal":
                record.why += "coronal slices: not used"
            elif record.plane == "axial":
                record.why += f"axial {record.weighting}: not used (the axial findings need T2)"
            elif not record.why.endswith("chosen)"):
                record.why += f"sagittal {record.weighting}: not used"


def _size_rank(record: SeriesRecord) -> tuple[int, int]:
    return (-record.n_slices, record.series_number if record.series_number is not None else 2**31)


def _plane_text(record: SeriesRecord) -> str:
    return f"{record.obliquity_deg:.0f} degrees oblique" if record.obliquity_deg >= 1 else "not oblique"


def _choose(candidates: list[SeriesRecord], role: str, notes: list[str]) -> SeriesRecord | None:
    if not candidates:
        return None
    chosen = candidates[0]
    chosen.role = role
    chosen.why += f"sagittal slices ({_plane_text(chosen)}); {chosen.weighting}: {chosen.weighting_from}"
    for other in candidates[1:]:
        other.why += f"another {ROLE_NAMES[role]} candidate ('{chosen.description}' chosen)"
    if len(candidates) > 1:
        notes.append(f"{len(candidates)} series could be the {ROLE_NAMES[role]}; used '{chosen.description}' "
                     f"({chosen.n_slices} slices, the most); set another with --{role.replace('_', '-')}")
    return chosen


def _study(records: list[SeriesRecord], notes: list[str], force: bool) -> CervicalStudyInput:
    by_role = {role: [r for r in records if r.role == role] for role in ROLES}
    if not by_role["sagittal_t1"] and not by_role["sagittal_t2"]:
        found = "; ".join(f"'{r.description}' ({r.plane}, {r.weighting})" for r in records)
        raise InputError(f"no sagittal series among the {len(records)} series found ({found}); {MODULE} needs at "
                         "least one sagittal T1 or T2 series (set one with --sagittal-t2 PATH_OR_UID)")
    if not by_role["sagittal_t1"]:
        notes.append("no sagittal T1 series: the findings read on T1 (vertebral hyperplasia) use the sagittal T2")
    if not by_role["sagittal_t2"]:
        notes.append("no sagittal T2 series: the sagittal analysis uses the T1")
    if not by_role["axial_t2"]:
        notes.append("no axial T2 series: the disc levels cannot be carried to axial slices and the axial "
                     "findings (disc herniation, PLL and LF thickening) cannot be given")
    used = [r for role in ROLES for r in by_role[role]]
    patients = sorted({r.patient_id for r in used if r.patient_id})
    if len(patients) > 1:
        message = f"the series belong to {len(patients)} patients ({', '.join(patients)})"
        if not force:
            raise InputError(f"{message}; {MODULE} analyses one study (use --force to analyse anyway)")
        notes.append(f"{message}; analysed anyway because of --force")
    if len({r.study_uid for r in used if r.study_uid}) > 1:
        notes.append("the series come from different studies: the disc levels assume the patient did not move")
    elif len({r.frame_of_reference for r in used if r.frame_of_reference}) > 1:
        notes.append("the series have different frames of reference: the disc levels assume the patient did not "
                     "move between them")
    study = CervicalStudyInput(warnings=notes)
    for record in used:
        if record.conflict:
            notes.append(record.conflict)
        image = record.load()
        for warning in image.warnings:
            notes.append(f"series '{record.description}': {warning}")
        if record.role == "axial_t2":
            study.axial_t2.append(image)
        else:
            setattr(study, record.role, image)
    study.series = [r.describe() for r in records]
    return study
