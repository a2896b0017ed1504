"""Finding dots and points -> per-vertebra and per-slice labels -> the classifiers' dataset
(:mod:`mskai.cervical.annotations`), on synthetic masks: no Slicer."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from mskai.cervical.annotations import (
    SLICE_COLUMNS,
    VERTEBRA_COLUMNS,
    dot_diameter_px,
    export_dataset,
    index_to_lps,
    labels_from_annotations,
    mask_dot_centres,
    normalize_level,
    parse_finding,
    segment_name,
    split_for_case,
)
from mskai.errors import InputError
from mskai.image import Image


def _rotation_x(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _disk(shape, centre_kji, radius):
    k, j, i = np.indices(shape)
    return ((k == centre_kji[0]) & ((j - centre_kji[1]) ** 2 + (i - centre_kji[2]) ** 2 <= radius ** 2)).astype(np.uint8)


@pytest.fixture
def vertebrae() -> Image:
    """Three vertebral bodies (C3, C4, C5 from top), 10 mm tall, 4 mm apart, on a 1 mm grid;
    z (LPS superior) grows with k."""
    labels = np.zeros((60, 30, 30), np.uint8)
    for value, (low, high) in zip((3, 2, 1), ((4, 14), (18, 28), (32, 42))):
        labels[low:high, 8:22, 8:22] = value
    return Image(labels, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), meta={"segment_names": {1: "C5", 2: "C4", 3: "C3"}})


@pytest.fixture
def stacks() -> dict[str, Image]:
    """An axial stack (3 mm slices) and an oblique one (tilted 15 degrees, 4 mm slices)."""
    straight = Image(np.zeros((10, 40, 40), np.int16), (0.5, 0.5, 3.0), (-5.0, -5.0, 10.0))
    oblique = Image(np.zeros((6, 40, 40), np.int16), (0.5, 0.5, 4.0), (-5.0, -5.0, 30.0), _rotation_x(15))
    return {"axial 1": straight, "axial 2": oblique}


def test_finding_names_and_levels():
    assert parse_finding("C5 anterior osteophyte") == ("hyperplasia", None)
    assert parse_finding("anterolisthesis C4") == ("slip", None)
    assert parse_finding("Herniation paracentral left") == ("herniation", "paracentral")
    assert parse_finding("finding: herniation (central)") == ("herniation", "central")
    assert parse_finding("herniation") == ("herniation", None)
    assert parse_finding("posterior longitudinal ligament") == ("pll", None)
    assert parse_finding("LF") == ("lf", None) and parse_finding("flavum thick") == ("lf", None)
    with pytest.raises(ValueError, match="names no finding"):
        parse_finding("disc bulge")  # a bulge is not a herniation: it is the classifier's negative
    assert segment_name("herniation", "foraminal") == "finding: herniation (foraminal)"
    assert segment_name("pll") == "finding: PLL thickening"
    with pytest.raises(ValueError):
        segment_name("slip", "central")
    assert [dot_diameter_px(name) for name in ("hyperplasia", "slip", "herniation", "pll", "lf")] == [10, 10, 10, 3, 3]
    assert normalize_level("c5-6") == "C5/6" and normalize_level("C7-T1") == "C7/T1"
    for wrong in ("C1/2", "C4/6", "L4/5", "T1/2"):
        with pytest.raises(ValueError):
            normalize_level(wrong)


def test_dot_masks_become_their_centres():
    mask = np.maximum(_disk((5, 40, 40), (2, 10, 12), 5), _disk((5, 40, 40), (4, 30, 25), 1))
    image = Image(mask, (0.5, 0.5, 3.0), (1.0, 2.0, 3.0))
    centres = mask_dot_centres(image)
    np.testing.assert_allclose(centres, index_to_lps(image, [[12, 10, 2], [25, 30, 4]]))
    assert mask_dot_centres(image.with_array(np.zeros_like(mask))).shape == (0, 3)


def test_vertebra_findings_go_to_the_vertebra_they_fall_in_or_the_nearest(vertebrae, stacks):
    hyperplasia = Image(_disk(vertebrae.shape, (22, 15, 15), 5), vertebrae.spacing, vertebrae.origin)
    slip_points = [[15.0, 15.0, 8.0],    # inside C3
                   [15.0, 15.0, 44.5]]   # 3.5 mm below C5's last voxel centre: within 5 mm
    labels = labels_from_annotations({"finding: hyperplasia": hyperplasia, "slip": slip_points,
                                      "osteophyte": [[15.0, 15.0, 55.0]]},  # 14 mm from C5: too far
                                     vertebrae, stacks, [])
    by_name = {v["name"]: v for v in labels["vertebrae"]}
    assert [v["name"] for v in labels["vertebrae"]] == ["C5", "C4", "C3"]  # label order
    assert (by_name["C4"]["hyperplasia"], by_name["C3"]["hyperplasia"], by_name["C5"]["hyperplasia"]) == \
        (True, False, False)
    assert (by_name["C3"]["slip"], by_name["C5"]["slip"], by_name["C4"]["slip"]) == (True, True, False)
    assert [u["finding"] for u in labels["unassigned"]] == ["finding: hyperplasia"]
    assert "within 5 mm" in labels["unassigned"][0]["reason"]
    tight = labels_from_annotations({"slip": slip_points}, vertebrae, stacks, [], tolerance_mm=2.0)
    assert len(tight["unassigned"]) == 1 and not {v["name"]: v for v in tight["vertebrae"]}["C5"]["slip"]


def test_axial_findings_go_to_the_slice_they_lie_on_and_its_level(stacks):
    straight, oblique = stacks["axial 1"], stacks["axial 2"]
    herniation = Image(_disk(straight.shape, (4, 20, 18), 5), straight.spacing, straight.origin)
    pll_on_oblique = index_to_lps(oblique, [[20, 12, 2.3]])  # 1.2 mm from slice 2's centre (4 mm slices)
    levels = [{"level": "C4/5", "stack": "axial 1", "slice_index": 4},
              {"level": "c4-5", "stack": "axial 1", "slice_index": 5},
              {"level": "C5/6", "stack": "axial 2", "slice_index": 2},
              {"level": "C6/7", "stack": "axial 2", "slice_index": 5}]
    lf_without_level = index_to_lps(straight, [[10, 10, 8]])
    outside = index_to_lps(straight, [[60, 10, 3]])  # beyond the field in-plane
    labels = labels_from_annotations({"herniation (paracentral)": herniation, "PLL": pll_on_oblique,
                                      "LF thickening": np.vstack([lf_without_level, outside])},
                                     None, stacks, levels)
    slices = {(s["stack"], s["slice_index"]): s for s in labels["slices"]}
    assert set(slices) == {("axial 1", 4), ("axial 1", 5), ("axial 1", 8), ("axial 2", 2), ("axial 2", 5)}
    assert slices[("axial 1", 4)]["herniation"] and slices[("axial 1", 4)]["herniation_type"] == "paracentral"
    assert not slices[("axial 1", 5)]["herniation"] and slices[("axial 1", 5)]["level"] == "C4/5"
    assert slices[("axial 2", 2)]["pll"] and not slices[("axial 2", 2)]["herniation"]
    assert slices[("axial 1", 8)]["lf"] and slices[("axial 1", 8)]["level"] is None
    assert any("no disc level" in warning for warning in labels["warnings"])
    assert [u["reason"] for u in labels["unassigned"]] == ["on no axial slice"]
    assert labels["levels"] == {
        "C4/5": {"herniation": True, "pll": False, "lf": False, "herniation_type": "paracentral"},
        "C5/6": {"herniation": False, "pll": True, "lf": False, "herniation_type": None},
        "C6/7": {"herniation": False, "pll": False, "lf": False, "herniation_type": None}}
    # a slice tolerance narrower than the point's distance from the slice centre
    narrow = labels_from_annotations({"PLL": pll_on_oblique}, None, stacks, levels, slice_tolerance_mm=1.0)
    assert len(narrow["unassigned"]) == 1


def test_wrong_levels_and_findings_are_refused_or_reported(stacks):
    with pytest.raises(InputError, match="names stack 'axial 9'"):
        labels_from_annotations({}, None, stacks, [{"level": "C3/4", "stack": "axial 9", "slice_index": 1}])
    with pytest.raises(ValueError, match="not a cervical disc level"):
        labels_from_annotations({}, None, stacks, [{"level": "L4/5", "stack": "axial 1", "slice_index": 1}])
    with pytest.raises(InputError, match="names no finding"):
        labels_from_annotations({"tumour": [[0.0, 0.0, 0.0]]}, None, stacks, [])
    with pytest.raises(InputError, match="shape"):
        labels_from_annotations({"slip": [[0.0, 0.0]]}, None, stacks, [])
    twice = labels_from_annotations({}, None, stacks, [{"level": "C3/4", "stack": "axial 1", "slice_index": 1},
                                                       {"level": "C4/5", "stack": "axial 1", "slice_index": 1}])
    assert twice["slices"][0]["level"] == "C4/5" and "assigned both C3/4 and C4/5" in twice["warnings"][0]
    # a vertebra finding without a vertebra map is reported, not dropped silently
    alone = labels_from_annotations({"slip": [[0.0, 0.0, 0.0]]}, None, stacks, [])
    assert alone["vertebrae"] == [] and len(alone["unassigned"]) == 1


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_export_writes_one_csv_per_classifier(vertebrae, stacks, tmp_path):
    folder = tmp_path / "dataset"
    (folder / "P1").mkdir(parents=True)
    labels = labels_from_annotations(
        {"hyperplasia": [[15.0, 15.0, 22.0]], "herniation (central)": index_to_lps(stacks["axial 1"], [[20, 20, 4]]),
         "LF": index_to_lps(stacks["axial 2"], [[20, 20, 2]])},
        vertebrae, stacks, [{"level": "C4/5", "stack": "axial 1", "slice_index": 4},
                            {"level": "C5/6", "stack": "axial 2", "slice_index": 2}])
    case = {"case_id": "P1", "labels": labels, "sagittal_t1": folder / "P1" / "sag_t1.nii.gz",
            "sagittal_t2": folder / "P1" / "sag_t2.nii.gz", "vertebra_mask": folder / "P1" / "vertebrae.nii.gz",
            "axial_series": {"axial 1": "/data/P1/ax1", "axial 2": "/data/P1/ax2"},
            "disc_masks": {"axial 1": folder / "P1" / "disc1.nii.gz"}}
    other = {**case, "case_id": "P2", "split": "Validation"}
    written = export_dataset([case, other], folder)
    assert {path.name for path in written.values()} == {"hyperplasia.csv", "listhesis.csv", "herniation.csv",
                                                        "pll.csv", "lf.csv"}
    columns, rows = _read_csv(written["hyperplasia"])
    assert tuple(columns) == VERTEBRA_COLUMNS and len(rows) == 6
    first = {row["vertebra"]: row for row in rows if row["case_id"] == "P1"}
    assert first["C4"]["positive"] == "1" and first["C3"]["positive"] == "0" and first["C4"]["label_value"] == "2"
    assert first["C4"]["series"] == "P1/sag_t1.nii.gz" and first["C4"]["label_mask"] == "P1/vertebrae.nii.gz"
    assert {row["split"] for row in rows if row["case_id"] == "P1"} == {split_for_case("P1")}
    assert {row["split"] for row in rows if row["case_id"] == "P2"} == {"val"}
    _, listhesis = _read_csv(written["slip"])
    assert {row["series"] for row in listhesis} == {"P1/sag_t2.nii.gz"} and not any(r["positive"] == "1"
                                                                                      for r in listhesis)
    columns, herniation = _read_csv(written["herniation"])
    assert tuple(columns) == SLICE_COLUMNS and len(herniation) == 4
    p1 = {(row["stack"], row["slice_index"]): row for row in herniation if row["case_id"] == "P1"}
    assert p1[("axial 1", "4")] == {"case_id": "P1", "series": "/data/P1/ax1", "stack": "axial 1",
                                    "slice_index": "4", "level": "C4/5", "disc_mask": "P1/disc1.nii.gz",
                                    "positive": "1", "type": "central", "split": split_for_case("P1")}
    assert p1[("axial 2", "2")]["positive"] == "0" and p1[("axial 2", "2")]["disc_mask"] == ""
    _, lf = _read_csv(written["lf"])
    assert [(row["level"], row["positive"], row["type"]) for row in lf if row["case_id"] == "P1"] == \
        [("C4/5", "0", ""), ("C5/6", "1", "")]
    summary = json.loads((folder / "dataset.json").read_text())
    assert summary["cases"] == 2 and summary["files"]["herniation"] == {"file": "herniation.csv", "rows": 4,
                                                                        "positive": 2}


def test_export_refuses_what_it_cannot_write(vertebrae, stacks, tmp_path):
    labels = labels_from_annotations({}, vertebrae, stacks, [{"level": "C4/5", "stack": "axial 1", "slice_index": 4}])
    case = {"case_id": "P1", "labels": labels, "sagittal_t1": "a.nii.gz", "vertebra_mask": "v.nii.gz",
            "axial_series": {"axial 1": "ax1"}}
    with pytest.raises(InputError, match="repeated"):
        export_dataset([case, dict(case)], tmp_path / "a")
    with pytest.raises(InputError, match="no sagittal series"):
        export_dataset([{**case, "sagittal_t1": None}], tmp_path / "b")
    with pytest.raises(InputError, match="axial_series has no path"):
        export_dataset([{**case, "axial_series": {}}], tmp_path / "c")
    with pytest.raises(InputError, match="split 'holdout'"):
        export_dataset([{**case, "split": "holdout"}], tmp_path / "d")


def test_the_split_of_a_case_is_fixed():
    ids = [f"case-{n}" for n in range(400)]
    splits = [split_for_case(case_id) for case_id in ids]
    assert splits == [split_for_case(case_id) for case_id in ids]
    counts = {name: splits.count(name) for name in ("train", "val", "test")}
    assert 240 < counts["train"] < 320 and 35 < counts["val"] < 90 and 35 < counts["test"] < 90
