"""Every JSON file a user hands MSKAI (recipes, keypoints, Slicer markups, segment names,
the model registry) is refused with one line naming the file when it is missing or
not JSON (mskai.files.read_json)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mskai.errors import InputError, ModelError
from mskai.files import read_json
from mskai.image import Image


def broken(path: Path) -> Path:
    path.write_text('{"P1": [1, 2],', encoding="utf-8")  # cut short
    return path


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_read_json_reads_and_names_the_file_when_missing_broken_or_not_text(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert read_json(good, "test file") == {"a": [1, 2]}
    with pytest.raises(InputError) as error:
        read_json(tmp_path / "absent.json", "test file absent.json")
    assert one_line(error) == "test file absent.json does not exist"
    with pytest.raises(InputError) as error:
        read_json(broken(tmp_path / "b.json"), "test file b.json")
    assert one_line(error).startswith("test file b.json is not valid JSON (Expecting")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelError, match=r"^registry is not valid JSON \("):
        read_json(binary, "registry", ModelError)


def test_a_broken_recipe_file_is_one_line(tmp_path):
    from mskai.wrist.recipes import load_recipe

    with pytest.raises(InputError) as error:
        load_recipe(str(broken(tmp_path / "recipe.json")))
    assert one_line(error).startswith(f"recipe file {tmp_path / 'recipe.json'} is not valid JSON")


def test_a_broken_keypoints_file_is_one_line(tmp_path):
    from mskai.wrist.dataset import read_keypoints_file

    with pytest.raises(InputError) as error:
        read_keypoints_file(broken(tmp_path / "k.json"), "AP", "line 2")
    assert one_line(error).startswith(f"line 2: keypoints file {tmp_path / 'k.json'} is not valid JSON")


def test_a_broken_markups_file_is_one_line(tmp_path):
    from mskai.wrist.dataset import import_markups

    image = Image(np.zeros((1, 64, 32), np.float32), spacing=(0.2, 0.2, 1.0))
    with pytest.raises(InputError) as error:
        import_markups(broken(tmp_path / "points.mrk.json"), image, "AP")
    assert one_line(error).startswith("markups file points.mrk.json is not valid JSON")


def test_a_broken_segment_names_file_is_one_line(tmp_path):
    from mskai.labels import sidecar_names

    labelmap = tmp_path / "vertebrae.nii.gz"
    labelmap.write_bytes(b"")
    broken(tmp_path / "vertebrae.json")
    with pytest.raises(InputError) as error:
        sidecar_names(labelmap)
    assert one_line(error).startswith(f"segment names file {tmp_path / 'vertebrae.json'} is not valid JSON")
