"""``mskai batch cervical``: a folder (or list) of phantom DICOM studies, one worklist with the
studies that have positive findings first, a broken study as a one-line failure, ``--resume``.

To stay quick the networks are replaced by the phantom's own labels (``truth_segmenter``) and
the finding classifiers by the phantom's truth (``truth_classifiers``: a positive finding gets
the study's probability, a negative one 0.1); without classifiers every finding is "not
assessed" and the worklist says so.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from mskai.batch import read_rows
from mskai.cervical import pipeline
from mskai.cervical.classifiers import FINDINGS, LoadedClassifier
from mskai.cervical.phantoms import make_cervical_study, write_cervical_study
from mskai.cervical.seg_training import class_map
from mskai.cervical.task import TASK
from mskai.cli import main

NONE = {"disc": {}, "pll": {}, "osteophytes": {}, "slip": {}, "lf": {}}
STUDIES = {  # folder name: (seed, findings, probability of the positive findings)
    "a_normal": (701, "none", 0.9),
    "b_two": (702, {**NONE, "disc": {"C5/6": ("herniation", "paracentral_left", 6.5)}, "pll": {"C4/5": 3.8}}, 0.8),
    "c_one": (703, {**NONE, "lf": {"C5/6": 5.0}}, 0.95),
}


def _fake_models(classifiers: bool):
    """Loaded models as :meth:`CervicalTask.load_model` returns them (the nets are never run)."""
    models = {"sagittal": (torch.nn.Linear(1, 1), None, {"info": {"id": "truth"}}),
              "axial": (torch.nn.Linear(1, 1), None, {"info": {"id": "truth"}})}
    if classifiers:
        models["classifiers"] = {key: LoadedClassifier(key, None, {}, 0.5, {"info": {"id": f"truth-{key}"}})
                                 for key in FINDINGS}
    return models


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three phantom DICOM studies in one folder, an empty folder beside them, and the
    segmentation labels and truth of each by series UID."""
    root = tmp_path_factory.mktemp("cervical_batch")
    folder = root / "studies"
    folder.mkdir()
    labels, truths = {}, {}
    for name, (seed, findings, probability) in STUDIES.items():
        study = make_cervical_study(seed, findings=findings, axial="per_disc")
        files = write_cervical_study(study, root / "raw" / name, fmt="dicom")
        shutil.move(str(files["study"]), str(folder / name))
        for key in ("sag_t1", "sag_t2"):
            labels[study.series[key].meta["series_instance_uid"]] = study.labels[key]
            truths[study.series[key].meta["series_instance_uid"]] = (study.truth, probability)
        for image, label in zip(study.series["axial_t2"], study.labels["axial_t2"]):
            labels[image.meta["series_instance_uid"]] = label
    (folder / "d_empty").mkdir()
    (folder / "notes.txt").write_text("not a study\n")  # loose files are not studies
    return {"root": root, "folder": folder, "labels": labels, "truths": truths}


@pytest.fixture()
def truth_segmenter(monkeypatch, studies):
    """The networks replaced by the phantom's labels (mapped to the networks' classes)."""
    import mskai.cervical.segmentation as segmentation

    def segment(network, image, grid, plane, device="cpu", batch=8, features=None):  # no features: no check
        classes = class_map(studies["labels"][image.meta["series_instance_uid"]], plane)
        names = {1: "vertebral body", 2: "disc", 3: "dural sac", 4: "spinal cord"} if plane == "sagittal" else \
            {1: "dural sac", 2: "spinal cord", 3: "disc", 4: "PLL", 5: "LF"}
        return image.with_array(classes, meta={**image.meta, "segment_names": names}, warnings=[])

    monkeypatch.setattr(segmentation, "segment_series", segment)
    calls = []
    analyze = pipeline.analyze_study

    def counted(study, *args, **kwargs):
        calls.append(study.sagittal.meta["series_instance_uid"])
        return analyze(study, *args, **kwargs)

    monkeypatch.setattr(pipeline, "analyze_study", counted)
    return calls


@pytest.fixture()
def truth_classifiers(monkeypatch, studies):
    """The classifiers' probabilities from the phantom's truth."""
    from mskai.cervical import findings

    def vertebrae(study, vertebrae, labels, classifiers, device, features=None):
        truth, p = studies["truths"][study.sagittal.meta["series_instance_uid"]]
        by_name = {v["name"]: v for v in truth["vertebrae"]}
        out = {"hyperplasia": {}, "listhesis": {}}
        for v in vertebrae:
            t = by_name.get(v["name"])
            if t is not None:
                out["hyperplasia"][v["name"]] = p if t["hyperplasia"] else 0.1
                out["listhesis"][v["name"]] = p if t["slip"]["direction"] != "none" else 0.1
        return out

    def levels(study, levels, axial_labels, classifiers, device, features=None):
        truth, p = studies["truths"][study.sagittal.meta["series_instance_uid"]]
        by_name = {lv["name"]: lv for lv in truth["levels"]}
        out = {}
        for lv in levels:
            t = by_name.get(lv["name"])
            if t is not None:
                out[lv["name"]] = {"herniation": p if t["disc"]["finding"] == "herniation" else 0.1,
                                   "pll_thickening": p if t["pll"]["thickened"] else 0.1,
                                   "lf_thickening": p if t["lf"]["thickened"] else 0.1}
        return out

    monkeypatch.setattr(findings, "_vertebra_probabilities", vertebrae)
    monkeypatch.setattr(findings, "_level_probabilities", levels)


def test_worklist_positive_findings_first_broken_study_failed_and_resume(studies, truth_segmenter,
                                                                         truth_classifiers, tmp_path):
    out = tmp_path / "out"
    summary = TASK.batch(studies["folder"], out, model=_fake_models(True), device="cpu")
    assert summary["items"] == 4 and summary["failed"] == 1 and summary["with_findings"] == 2
    rows = read_rows(out / "worklist.csv")
    assert [row["study"] for row in rows] == ["b_two", "c_one", "a_normal", "d_empty"]
    two, one, normal, empty = rows
    assert two["positive_findings"] == "2" and two["status"] == "ok"
    assert two["findings"] == "PLL thickening C4/5 (0.80); herniation C5/6 (0.80)"  # ties: cranial first
    assert two["verdict"].startswith("herniation C5/6") and "PLL thickening C4/5" in two["verdict"]
    assert one["positive_findings"] == "1" and one["findings"] == "LF thickening C5/6 (0.95)"
    assert one["highest_probability"] == "0.9500"
    assert normal["positive_findings"] == "0" and normal["verdict"] == "no finding" and not normal["findings"]
    assert normal["highest_probability"] == "0.1000" and not normal["not_assessed"]
    assert normal["labelling"].startswith("7 vertebrae (C2-T1)") and "C5/6" in normal["levels"].split()
    assert empty["status"].startswith("failed: ") and "\n" not in empty["status"] and not empty["verdict"]
    for row in (two, one, normal):
        result = json.loads((out / "studies" / next(p.name for p in (out / "studies").iterdir()
                                                    if p.name.startswith(row["study"] + "-")) / "result.json")
                            .read_text())
        assert result["task"] == "cervical" and str(len(result["warnings"])) == row["warnings"]
    assert (out / "studies").is_dir() and not any(p.name.startswith("d_empty") for p in (out / "studies").iterdir())
    assert len(truth_segmenter) == 3

    # --resume: the finished studies are not analysed again (the broken one is retried and fails again)
    stamps = {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "studies").iterdir()}
    again = TASK.batch(studies["folder"], out, model=_fake_models(True), device="cpu", resume=True)
    assert again["skipped"] == 3 and again["failed"] == 1 and len(truth_segmenter) == 3
    assert {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "studies").iterdir()} == stamps
    assert read_rows(out / "worklist.csv") == rows


def test_without_classifiers_the_worklist_says_not_assessed_list_file_and_cli(studies, truth_segmenter, tmp_path,
                                                                               monkeypatch, capsys):
    listing = tmp_path / "studies.txt"
    listing.write_text(f"# two studies and a text file\n{studies['folder'] / 'c_one'}\n"
                       f"{studies['folder'] / 'notes.txt'}\n{studies['folder'] / 'a_normal'}\n")
    out = tmp_path / "out"
    summary = TASK.batch(listing, out, model=_fake_models(False), device="cpu")
    assert summary["items"] == 3 and summary["failed"] == 1
    rows = {row["study"]: row for row in read_rows(out / "worklist.csv")}
    for name in ("c_one", "a_normal"):
        row = rows[name]
        assert row["status"] == "ok" and row["positive_findings"] == "0" and row["highest_probability"] == ""
        assert row["verdict"] == ("no finding; not assessed: hyperplasia, listhesis, herniation, PLL thickening, "
                                  "LF thickening")
        assert row["not_assessed"] == "hyperplasia, listhesis, herniation, PLL thickening, LF thickening"
    assert rows["notes.txt"]["status"].startswith("failed: ")
    assert list(read_rows(out / "worklist.csv"))[-1]["study"] == "notes.txt"

    # the command line: the shipped segmentation bundles load (the stand-in segmenter runs),
    # a classifier bundle not installed leaves its finding unassessed; a failed study is not an error
    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    code = main(["batch", "cervical", str(studies["folder"]), "--output", str(tmp_path / "cli"),
                 "--device", "cpu", "--resume"])
    assert code == 0
    rows = read_rows(tmp_path / "cli" / "worklist.csv")
    assert len(rows) == 4 and rows[-1]["study"] == "d_empty" and rows[-1]["status"].startswith("failed: ")
    assert all(row["status"] == "ok" for row in rows[:3])
    assert "d_empty" in capsys.readouterr().err
