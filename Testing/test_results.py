"""Result writing (SPEC §0.2): required keys, JSON safety, overlay PNGs."""
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from mskai.image import Image
from mskai.results import (StageTimer, add_stage_seconds, new_result, save_overlay_png, window_to_uint8,
                           write_result)


def test_result_has_required_keys_and_input_description(tmp_path):
    image = Image(np.zeros((4, 5, 6), np.float32), spacing=(0.5, 0.7, 2.0), origin=(1, 2, 3),
                  meta={"format": "dicom", "modality": "CT", "series_instance_uid": "1.2.3"},
                  warnings=["slice spacing was not uniform"])
    result = new_result("ovf", image, model={"id": "x", "version": "1", "sha256": "ab"})
    result["verdict"] = "no fracture"
    result["probability"] = np.float32(0.25)
    result["evidence"] = [{"position_mm": np.array([1.0, 2.0, 3.0]), "voxel_index": np.array([1, 2, 3])}]
    path = write_result(tmp_path, result)
    data = json.loads(path.read_text())
    for key in ("task", "verdict", "model", "input", "warnings", "evidence", "timing", "coordinate_system"):
        assert key in data
    assert data["input"]["size_ijk"] == [6, 5, 4]
    assert data["input"]["spacing_mm"] == [0.5, 0.7, 2.0]
    assert data["input"]["series_instance_uid"] == "1.2.3"
    assert data["warnings"] == ["slice spacing was not uniform"]
    assert data["probability"] == pytest.approx(0.25)
    assert data["evidence"][0]["voxel_index"] == [1, 2, 3]
    assert data["coordinate_system"] == "LPS"


def test_nan_becomes_null_and_missing_keys_are_refused(tmp_path):
    result = new_result("ovf")
    result["verdict"] = "x"
    result["probability"] = float("nan")
    data = json.loads(write_result(tmp_path, result).read_text())
    assert data["probability"] is None
    del result["timing"]
    with pytest.raises(ValueError, match="timing"):
        write_result(tmp_path, result)


def test_stage_timer_sums_stages():
    timer = StageTimer()
    with timer("a"):
        sum(range(1000))
    with timer("b"):
        pass
    d = timer.as_dict()
    assert set(d) == {"a", "b", "total"}
    assert d["total"] == pytest.approx(d["a"] + d["b"], abs=2e-4)


def test_a_stage_timed_after_the_analysis_joins_the_total():
    result = {"timing": {"read": 0.5, "model": 1.25, "total": 1.75}}
    add_stage_seconds(result, "write", 0.25)
    assert result["timing"] == {"read": 0.5, "model": 1.25, "write": 0.25, "total": 2.0}
    empty: dict = {}
    add_stage_seconds(empty, "write", 0.123456)
    assert empty["timing"] == {"write": 0.1235, "total": 0.1235}


def test_window_maps_center_and_edges():
    plane = np.array([[-1000.0, 400.0, 1300.0]])
    out = window_to_uint8(plane, window=(400.0, 1800.0))  # range -500..1300
    assert out.tolist() == [[0, round(900 / 1800 * 255), 255]]


def test_overlay_png_draws_heatmap_and_points(tmp_path):
    plane = np.zeros((40, 60), np.float32)
    heat = np.zeros_like(plane)
    heat[10:20, 30:40] = 1.0
    path = save_overlay_png(tmp_path / "o.png", plane, window=(1, 2), heatmap=heat,
                            points=[(5, 30, "L1")], pixel_aspect=2.0)
    img = np.asarray(PILImage.open(path).convert("RGB"))
    assert img.shape == (80, 60, 3)  # rows stretched by the pixel aspect
    assert img[30, 35].sum() > 100          # heatmap region (row 15 * 2) is coloured
    assert img[70, 55].sum() == 0            # far from evidence stays black
    assert img[60, 5 + 3, 1] > 200 or img[60, 5 - 3, 1] > 200  # green point outline at (5, 30*2)
    with pytest.raises(ValueError, match="heatmap shape"):
        save_overlay_png(tmp_path / "bad.png", plane, heatmap=np.zeros((3, 3)))


def test_to_jsonable_converts_numpy_dataclasses_and_paths_and_nan_on_request():
    import dataclasses
    import math
    from pathlib import Path

    import numpy as np

    from mskai.results import to_jsonable

    @dataclasses.dataclass
    class Pair:
        value: float
        where: Path

    data = {1: np.array([np.float32(0.5), np.nan]), "pair": Pair(np.float64(2.0), Path("a/b")),
            "flag": np.bool_(True), "n": np.int64(3), "t": (np.inf,)}
    strict = to_jsonable(data)
    assert strict == {"1": [0.5, None], "pair": {"value": 2.0, "where": "a/b"}, "flag": True, "n": 3,
                      "t": [None]}
    assert type(strict["n"]) is int and type(strict["flag"]) is bool
    loose = to_jsonable(data, nan_to_null=False)
    assert math.isnan(loose["1"][1]) and loose["t"] == [math.inf]
