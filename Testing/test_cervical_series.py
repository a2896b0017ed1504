"""CervicalMR inputs: the study's series found and given roles (sagittal T1, sagittal T2,
axial T2) from orientation and tags, roles set by hand, and the refusals (CT, radiograph,
MR of another body part)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mskai.cervical.series import read_study
from mskai.errors import InputError
from mskai.image import Image
from mskai.phantoms.writers import write_dicom_series, write_nifti, write_radiograph_dicom

SAGITTAL = np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], dtype=float).T  # i P, j inferior, k L
T1_TIMES = {"EchoTime": "12", "RepetitionTime": "550"}
T2_TIMES = {"EchoTime": "110", "RepetitionTime": "3500"}
NO_TIMES = {"EchoTime": None, "RepetitionTime": None}


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _volume(direction: np.ndarray, slices: int = 6, spacing=(0.8, 0.8, 3.0), seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    return Image(rng.uniform(0, 400, (slices, 12, 12)).astype(np.float32), spacing=spacing,
                 origin=(-10.0, -20.0, 40.0), direction=direction)


def _series(folder: Path, name: str, direction: np.ndarray, tags: dict, *, number: int, slices: int = 6,
            modality: str = "MR", body_part: str = "CSPINE", study: str = "1.2.3.4.5") -> str:
    uid = f"1.2.3.4.5.{number}"
    write_dicom_series(_volume(direction, slices, seed=number), folder / name, modality=modality,
                       study_uid=study, series_uid=uid, series_number=number, series_description=name,
                       rescale_intercept=0.0 if modality == "MR" else -1024.0, body_part=body_part,
                       extra_tags=tags, seed=7)
    return uid


def _role_of(study, uid: str):
    return next(s["role"] for s in study.series if s["uid"] == uid)


@pytest.fixture
def study_folder(tmp_path: Path) -> dict:
    folder = tmp_path / "study"
    uids = {
        "sag_t1": _series(folder, "s1", SAGITTAL, T1_TIMES, number=1, slices=7),
        "sag_t2": _series(folder, "s2", SAGITTAL, T2_TIMES, number=2, slices=8),
        "ax_t2": _series(folder, "s3", _rotation_x(15), T2_TIMES, number=3, slices=5),
    }
    return {"folder": folder, **uids}


def test_roles_from_orientation_and_echo_times(study_folder):
    study = read_study(study_folder["folder"])
    assert study.sagittal_t1.meta["series_instance_uid"] == study_folder["sag_t1"]
    assert study.sagittal_t2.meta["series_instance_uid"] == study_folder["sag_t2"]
    assert [im.meta["series_instance_uid"] for im in study.axial_t2] == [study_folder["ax_t2"]]
    assert study.sagittal is study.sagittal_t2
    axial = next(s for s in study.series if s["uid"] == study_folder["ax_t2"])
    assert axial["plane"] == "axial" and axial["obliquity_deg"] == pytest.approx(15, abs=0.5)
    assert "echo and repetition times" in axial["why"]
    assert study.warnings == [], study.warnings
    assert set(study.describe()) >= {"sagittal_t1", "sagittal_t2", "axial_t2", "series"}


def test_roles_from_descriptions_when_times_are_missing(tmp_path):
    folder = tmp_path / "study"
    t1 = _series(folder, "SAG T1 TSE", SAGITTAL, NO_TIMES, number=1)
    t2 = _series(folder, "t2_tse_sag", SAGITTAL, NO_TIMES, number=2)
    # The description says AX but the geometry is sagittal: the geometry wins.
    stir = _series(folder, "AX STIR", SAGITTAL, NO_TIMES, number=4)
    axial = _series(folder, "T2 TRA", np.eye(3), NO_TIMES, number=3)
    study = read_study(folder)
    assert _role_of(study, t1) == "sagittal_t1"
    assert _role_of(study, t2) == "sagittal_t2"  # a true T2 is preferred to the STIR
    assert _role_of(study, stir) is None
    assert _role_of(study, axial) == "axial_t2"
    assert "description" in next(s["why"] for s in study.series if s["uid"] == t1)


def test_description_wins_over_the_times_with_a_warning(tmp_path):
    folder = tmp_path / "study"
    named = _series(folder, "t2_tse_sag", SAGITTAL, T1_TIMES, number=1)
    study = read_study(folder)
    assert _role_of(study, named) == "sagittal_t2"
    assert any("names T2 but the echo and repetition times" in w for w in study.warnings)


def test_gradient_echo_axial_is_t2_star_and_axial_t1_is_not_used(tmp_path):
    folder = tmp_path / "study"
    _series(folder, "sag", SAGITTAL, T2_TIMES, number=1)
    medic = _series(folder, "ax medic", np.eye(3), {"EchoTime": "20", "RepetitionTime": "600",
                                                    "ScanningSequence": "GR", "FlipAngle": "30"}, number=2)
    ax_t1 = _series(folder, "ax", np.eye(3), T1_TIMES, number=3)
    study = read_study(folder)
    described = {s["uid"]: s for s in study.series}
    assert described[medic]["role"] == "axial_t2" and described[medic]["weighting"] == "T2*"
    assert described[ax_t1]["role"] is None and "not used" in described[ax_t1]["why"]
    assert any("no sagittal T1" in w for w in study.warnings)


def test_several_axial_stacks_are_all_kept(tmp_path):
    folder = tmp_path / "study"
    _series(folder, "sag t2", SAGITTAL, T2_TIMES, number=1)
    stacks = [_series(folder, f"ax t2 {n}", _rotation_x(angle), T2_TIMES, number=n, slices=3)
              for n, angle in ((2, -10), (3, 0), (4, 12))]
    study = read_study(folder)
    assert sorted(im.meta["series_instance_uid"] for im in study.axial_t2) == sorted(stacks)
    assert study.sagittal_t1 is None and any("no sagittal T1" in w for w in study.warnings)


def test_manual_roles_by_uid_and_by_path(tmp_path):
    folder = tmp_path / "study"
    big = _series(folder, "sag a", SAGITTAL, T2_TIMES, number=1, slices=8)
    small = _series(folder, "sag b", SAGITTAL, T2_TIMES, number=2, slices=5)
    plain = _series(folder, "sag c", SAGITTAL, NO_TIMES, number=3, slices=5)
    automatic = read_study(folder)
    assert _role_of(automatic, big) == "sagittal_t2" and _role_of(automatic, small) is None
    assert any("could be the sagittal T2" in w for w in automatic.warnings)

    by_hand = read_study(folder, sagittal_t2=small, sagittal_t1=str(folder / "sag c"))
    assert by_hand.sagittal_t2.meta["series_instance_uid"] == small
    assert by_hand.sagittal_t1.meta["series_instance_uid"] == plain
    assert "set by hand" in next(s["why"] for s in by_hand.series if s["uid"] == small)
    assert _role_of(by_hand, big) is None

    with pytest.raises(InputError, match="neither a file or folder nor the UID"):
        read_study(folder, axial_t2="1.2.3.9.9.9")


def test_manual_axial_list_and_wrong_plane_warning(tmp_path):
    folder = tmp_path / "study"
    _series(folder, "sag t2", SAGITTAL, T2_TIMES, number=1)
    sag_t1 = _series(folder, "sag t1", SAGITTAL, T1_TIMES, number=2)
    ax = _series(folder, "ax", np.eye(3), T2_TIMES, number=3)
    study = read_study(folder, axial_t2=[ax, sag_t1])
    # A series set by hand takes no other role; a sagittal one set as axial gets a warning.
    assert sorted(im.meta["series_instance_uid"] for im in study.axial_t2) == sorted([ax, sag_t1])
    assert study.sagittal_t1 is None and study.sagittal_t2 is not None
    assert any("set by hand as axial T2 but its slices are sagittal" in w for w in study.warnings)


def test_only_axial_series_is_refused(tmp_path):
    folder = tmp_path / "study"
    _series(folder, "ax", np.eye(3), T2_TIMES, number=1)
    with pytest.raises(InputError, match="no sagittal series"):
        read_study(folder)


def test_ct_is_refused_unless_forced(tmp_path):
    folder = tmp_path / "ct"
    _series(folder, "ct sag", SAGITTAL, {}, number=1, modality="CT")
    with pytest.raises(InputError, match="a CT .*use --force") as error:
        read_study(folder)
    assert "\n" not in str(error.value)
    forced = read_study(folder, force=True)
    assert forced.sagittal_t2 is not None
    assert any("--force" in w for w in forced.warnings)


def test_ct_nifti_is_refused_by_its_intensities(tmp_path):
    values = np.full((6, 12, 12), -1000.0, dtype=np.float32)
    values[:, 4:8, 4:8] = 700.0
    path = write_nifti(Image(values, spacing=(0.8, 0.8, 3.0), direction=SAGITTAL), tmp_path / "neck.nii.gz")
    with pytest.raises(InputError, match="HU-like"):
        read_study(path)


def test_radiograph_is_refused_even_when_forced(tmp_path):
    path = write_radiograph_dicom(np.full((32, 32), 100), tmp_path / "cspine.dcm", body_part="CSPINE",
                                  view_position="LL")
    with pytest.raises(InputError, match="radiograph"):
        read_study(path)
    with pytest.raises(InputError, match="no sagittal series|radiograph"):
        read_study(path, force=True)


def test_lumbar_mr_is_refused_and_ignored_beside_a_cervical_study(tmp_path):
    lumbar = tmp_path / "lumbar"
    _series(lumbar, "sag t2 lws", SAGITTAL, T2_TIMES, number=1, body_part="LSPINE")
    with pytest.raises(InputError, match="another body part .*LSPINE"):
        read_study(lumbar)
    assert read_study(lumbar, force=True).sagittal_t2 is not None

    mixed = tmp_path / "mixed"
    cervical = _series(mixed, "sag t2", SAGITTAL, T2_TIMES, number=1)
    other = _series(mixed, "sag t2 lws", SAGITTAL, T2_TIMES, number=2, slices=9, body_part="LSPINE")
    study = read_study(mixed)
    assert _role_of(study, cervical) == "sagittal_t2" and _role_of(study, other) is None
    assert any("LSPINE" in w and "not used" in w for w in study.warnings)


def test_nifti_without_tags_counts_as_t2_with_a_warning(tmp_path):
    sag = write_nifti(_volume(SAGITTAL, 7), tmp_path / "sagittal.nii.gz")
    # An axial volume stored with its thick axis first (i) is still axial.
    axial_image = Image(np.zeros((10, 10, 4), np.float32) + 50, spacing=(4.0, 0.6, 0.6),
                        direction=np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=float).T)
    ax = write_nifti(axial_image, tmp_path / "axial.nii.gz")
    study = read_study([sag, ax])
    assert study.sagittal_t2 is not None and study.sagittal_t1 is None
    assert len(study.axial_t2) == 1
    assert any("counts as the sagittal T2" in w for w in study.warnings)
    assert any("counts as an axial T2" in w for w in study.warnings)


def test_series_of_two_patients_are_refused(tmp_path):
    folder = tmp_path / "study"
    _series(folder, "sag t1", SAGITTAL, T1_TIMES, number=1)
    uid = _series(folder, "sag t2", SAGITTAL, T2_TIMES, number=2)
    write_dicom_series(_volume(np.eye(3)), folder / "other", modality="MR", series_uid="1.2.3.4.5.9",
                       series_number=9, series_description="ax t2", rescale_intercept=0.0,
                       patient={"id": "SOMEONE-ELSE"}, extra_tags=T2_TIMES)
    with pytest.raises(InputError, match="2 patients"):
        read_study(folder)
    assert uid


def _block(folder: Path, angle: float, z: float, number: int, uid: str = "1.2.3.4.5.50") -> None:
    values = np.random.default_rng(number).uniform(0, 300, (3, 12, 12)).astype(np.float32)
    image = Image(values, spacing=(1.0, 1.0, 3.0), origin=(-6.0, -6.0, z), direction=_rotation_x(angle))
    write_dicom_series(image, folder / f"block{number}", modality="MR", study_uid="1.2.3.4.5",
                       series_uid=uid, series_number=5, series_description="t2_tse_tra per disc",
                       rescale_intercept=0.0, extra_tags=T2_TIMES, seed=7)


def test_one_series_of_angled_or_gapped_blocks_gives_one_stack_per_block(tmp_path):
    folder = tmp_path / "study"
    _series(folder, "sag t2", SAGITTAL, T2_TIMES, number=1)
    for number, (angle, z) in enumerate(((-15.0, 30.0), (0.0, 50.0), (12.0, 70.0)), start=1):
        _block(folder / "angled", angle, z, number)
    for number, z in enumerate((100.0, 130.0), start=1):
        _block(folder / "gapped", 5.0, z, number, uid="1.2.3.4.5.60")
    study = read_study(folder)
    assert len(study.axial_t2) == 5 and all(im.shape[0] == 3 for im in study.axial_t2)
    normals_z = sorted(round(float(im.direction[2, 2]), 3) for im in study.axial_t2)
    assert normals_z == sorted(round(float(np.cos(np.radians(a))), 3) for a in (-15, 0, 12, 5, 5))
    groups = [s["slice_group"] for s in study.series if s["uid"] == "1.2.3.4.5.50"]
    assert sorted(groups) == ["1/3", "2/3", "3/3"]
    # By hand, the series' UID names all its slice groups.
    by_hand = read_study(folder, axial_t2="1.2.3.4.5.60")
    assert len(by_hand.axial_t2) == 2
