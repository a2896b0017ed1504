"""Department QC (SPEC §4.7, beyond): ``mskai batch wrist`` over many radiographs.

The runner (input discovery, resume, ``torchrun`` shards, the failure rule) is
:mod:`mskai.batch`; this file is what WristQC's batch is:

* a **folder** is searched recursively: every DICOM file (recognised by its
  ``DICM`` preamble, whatever its name, or by a ``.dcm``/``.dicom`` suffix) and
  every PNG/JPEG file is one image; other files (JSON sidecars, notes) are not
  images and are left out;
* ``images/<key>/result.json`` per analysed image, with the department facts;
* **not a wrist**: an image that the analysis refuses as not a wrist film
  (:class:`mskai.wrist.pipeline.NotAWristError`: a BodyPartExamined naming
  another part, or no wrist found on an image whose tag does not say wrist) is
  not scored: its ``result.json`` has ``verdict`` "not a wrist" and the reason
  (``not_a_wrist``), its row the status ``not a wrist: <reason>`` (with
  ``--force`` it is scored, with the warning);
* ``images.csv``: one row per image, :data:`CSV_COLUMNS`; ``like_training_data`` is
  ``no`` when the radiograph is unlike a network's training data (:mod:`mskai.distribution`),
  ``unknown`` for a bundle without the summary; ``device`` is
  Manufacturer + ManufacturerModelName (+ StationName in brackets),
  ``operator`` OperatorsName (empty when absent), ``month`` YYYY-MM of
  StudyDate; a failed image keeps the facts its header still gives;
* ``summary.json`` and ``summary.html`` (self-contained, plots embedded): the
  grade distribution overall, by device, by operator (when any image has the
  tag) and by month, the mean score per group, the items that lose the most
  points, the images that are not a wrist (counted apart from the graded ones
  and from the failures, overall and per group) and the failures;
* ``grades_by_device.png``, ``grades_by_operator.png``, ``grades_by_month.png``
  (:func:`mskai.plots.plot_bars`).

The models are loaded once per process; each network uses all of torch's
intra-op threads (the cores of the machine).
"""
from __future__ import annotations

import base64
import html
import json
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mskai.batch import RESULT_NAME, BatchItem, BatchPlan, item_key
from mskai.distribution import like_training_data
from mskai.progress import log

if TYPE_CHECKING:
    from mskai.wrist.models import WristModels
    from mskai.wrist.task import WristTask

CSV_NAME = "images.csv"
CSV_COLUMNS = ("path", "sop_instance_uid", "device", "operator", "month", "view", "view_source", "total",
               "grade", "tags", "marker", "artifact", "layout", "like_training_data", "warnings", "status")
IMAGES_DIR = "images"
GRADES = ("A", "B", "C", "D")
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
GROUPINGS = (("device", "by device"), ("operator", "by operator"), ("month", "by month"))


# --------------------------------------------------------------------------- finding images

def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def images_in_folder(folder: Path) -> list[Path]:
    """The images of a folder (recursive, hidden folders and files left out), in a stable order."""
    return [path for path in sorted(folder.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
            and (path.name.lower().endswith(IMAGE_SUFFIXES) or _is_dicom_file(path))]


# --------------------------------------------------------------------------- department facts

def department_facts(header: Any) -> dict[str, str]:
    """``{"device", "operator", "month", "sop_instance_uid"}`` from a DICOM header (None: unknown)."""
    def text(keyword: str) -> str:
        value = header.get(keyword) if header is not None else None
        return " ".join(str(value).replace("^", " ").split()) if value not in (None, "") else ""

    device = " ".join(v for v in (text("Manufacturer"), text("ManufacturerModelName")) if v)
    station = text("StationName")
    if station:
        device = f"{device} ({station})" if device else station
    date = text("StudyDate")
    month = f"{date[:4]}-{date[4:6]}" if re.fullmatch(r"\d{8}", date) else ""
    return {"device": device or "unknown", "operator": text("OperatorsName"), "month": month or "unknown",
            "sop_instance_uid": text("SOPInstanceUID")}


def _header_only(path: Path) -> Any:
    """The DICOM header of a file that failed, to still group its row (None if unreadable)."""
    import pydicom

    try:
        with warnings.catch_warnings():  # the file already failed; its reading notes are noise
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM, truncated, ...: the row keeps "unknown"
        return None


# --------------------------------------------------------------------------- rows

NOT_A_WRIST = "not a wrist"


def _not_a_wrist_result(image: Any, facts: dict[str, str], reason: str) -> dict[str, Any]:
    """``result.json`` of an image refused as not a wrist film: no score, the reason."""
    from mskai.results import new_result

    result = new_result("wrist", image)
    result.update(verdict=NOT_A_WRIST, not_a_wrist=reason, department=facts)
    return result


def _row(path: Path, facts: dict[str, str], result: dict | None, status: str) -> dict[str, Any]:
    row = {"path": str(path), **{key: facts.get(key, "") for key in ("sop_instance_uid", "device", "operator",
                                                                    "month")}}
    if result is not None and result.get("not_a_wrist"):
        status = f"{NOT_A_WRIST}: {result['not_a_wrist']}"
        result = None
    if result is None:
        row.update({key: "" for key in ("view", "view_source", "total", "grade", "tags", "marker", "artifact",
                                        "layout", "like_training_data", "warnings")})
    else:
        row.update(view=result["view"], view_source=result["view_source"], total=result["total"],
                   grade=result["grade"], like_training_data=like_training_data(result),
                   warnings=" | ".join(result.get("warnings", [])),
                   **{name: result["parts"][name]["score"] for name in ("tags", "marker", "artifact", "layout")})
    row["status"] = status
    return row


def batch_plan(task: WristTask, *, force: bool = False) -> BatchPlan:
    """WristQC's department batch (module docstring); ``force`` scores non-wrist images too."""

    def analyse(models: WristModels, item: BatchItem, output_dir: Path, device: str) -> dict:
        from mskai.batch import one_line
        from mskai.io import read_image
        from mskai.results import write_result
        from mskai.wrist.pipeline import NotAWristError

        image = read_image(item.path)
        facts = department_facts(image.header)
        try:
            analysis = task.run(image, None, model=models, device=device, force=force, heatmap=False,
                                progress=lambda fraction, message: None)
        except NotAWristError as refused:
            result = _not_a_wrist_result(image, facts, one_line(refused))
            write_result(output_dir, result)
            return result
        result = analysis.result
        result["department"] = facts
        write_result(output_dir, result)
        return result

    def finish(rows: list[dict[str, str]], output_dir: Path, models: WristModels,
               counts: dict[str, Any]) -> dict[str, Any]:
        summary = summarise_rows(rows, output_dir)
        summary.update(model=models.info(), source=counts["source"], reused_from_previous_run=counts["skipped"])
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                                 encoding="utf-8")
        (output_dir / "summary.html").write_text(_summary_html(summary, output_dir), encoding="utf-8")
        grades = ", ".join(f"{grade} {summary['grades'][grade]}" for grade in GRADES)
        log(f"wrist batch: {summary['n_ok']} of {summary['n_images']} images graded ({grades}), "
            f"{summary['n_not_a_wrist']} not a wrist, {summary['n_failed']} failed -> {output_dir / 'summary.html'}")
        return summary

    return BatchPlan(label="wrist batch", item_word="images",
                     folder_expects="DICOM, PNG or JPEG images, searched recursively", csv_name=CSV_NAME,
                     items_dir=IMAGES_DIR, columns=CSV_COLUMNS, find_in_folder=images_in_folder, analyse=analyse,
                     row=lambda item, result: _row(item.path, result.get("department", {}), result, "ok"),
                     failed_row=lambda item, reason: _row(item.path, department_facts(_header_only(item.path)),
                                                          None, f"failed: {reason}"),
                     finish=finish)


# --------------------------------------------------------------------------- summary

def _is_not_a_wrist(row: dict[str, Any]) -> bool:
    return row["status"].startswith(f"{NOT_A_WRIST}: ")


def _distribution(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Per group: the grades and the mean score of the graded rows (``n``), and the rows
    refused as not a wrist (``not_a_wrist``), counted apart."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row[key] or "unknown"].append(row)
    table = {}
    for name, members in sorted(groups.items()):
        graded = [r for r in members if r["status"] == "ok"]
        table[name] = {**{grade: sum(r["grade"] == grade for r in graded) for grade in GRADES}, "n": len(graded),
                       "mean_total": round(sum(float(r["total"]) for r in graded) / len(graded), 2) if graded
                       else None,
                       "not_a_wrist": len(members) - len(graded)}
    return table


def summarise_rows(rows: list[dict[str, Any]], output_dir: Path) -> dict[str, Any]:
    """Grade distributions overall and per device / operator / month (graded rows; the
    images that are not a wrist counted apart), the plots, the items that lose most
    points, the images that are not a wrist, and the failures."""
    from mskai.plots import plot_bars

    ok = [row for row in rows if row["status"] == "ok"]
    not_wrist = [row for row in rows if _is_not_a_wrist(row)]
    summary: dict[str, Any] = {
        "n_images": len(rows), "n_ok": len(ok), "n_not_a_wrist": len(not_wrist),
        "n_failed": len(rows) - len(ok) - len(not_wrist),
        "grades": {grade: sum(row["grade"] == grade for row in ok) for grade in GRADES},
        "mean_total": round(sum(float(row["total"]) for row in ok) / len(ok), 2) if ok else None,
        "not_a_wrist": [{"path": row["path"], "reason": row["status"][len(NOT_A_WRIST) + 2:]} for row in not_wrist],
        "failures": [{"path": row["path"], "reason": row["status"][len("failed: "):]}
                     for row in rows if row["status"] != "ok" and not _is_not_a_wrist(row)],
        "plots": {},
    }
    for key, title in GROUPINGS:
        if key == "operator" and not any(row["operator"] for row in ok + not_wrist):
            summary["by_operator"] = None  # no image carries OperatorsName
            continue
        table = _distribution(ok + not_wrist, key)
        summary[f"by_{key}"] = table
        if table:
            name = f"grades_by_{key}.png"
            plot_bars({group: [counts[g] for g in GRADES] for group, counts in table.items()}, GRADES,
                      output_dir / name, title=f"Grades {title}", xlabel="grade", ylabel="images")
            summary["plots"][key] = name
    summary["most_lost_items"] = _most_lost_items(rows, output_dir)
    return summary


def _most_lost_items(rows: list[dict[str, Any]], output_dir: Path, top: int = 10) -> list[dict[str, Any]]:
    """The items that lose most points over the batch (from the per-image results)."""
    lost: Counter[str] = Counter()
    images: Counter[str] = Counter()
    for row in rows:
        if row["status"] != "ok":
            continue
        path = output_dir / IMAGES_DIR / item_key(Path(row["path"])) / RESULT_NAME
        if not path.is_file():
            continue
        for entry in json.loads(path.read_text(encoding="utf-8")).get("lost_points", []):
            lost[entry["item"]] += int(entry["points_lost"])
            images[entry["item"]] += 1
    return [{"item": item, "points_lost": points, "images": images[item]} for item, points in lost.most_common(top)]


def _summary_html(summary: dict[str, Any], output_dir: Path) -> str:
    def cell(value: Any) -> str:
        return html.escape("" if value is None else str(value))

    sections = []
    for key, title in GROUPINGS:
        table = summary.get(f"by_{key}")
        if table is None:
            sections.append(f"<h2>Grades {title}</h2><p>No image carries OperatorsName.</p>" if key == "operator"
                            else "")
            continue
        rows = "".join(f"<tr><td>{cell(group)}</td>" + "".join(f"<td class=n>{counts[g]}</td>" for g in GRADES)
                       + f"<td class=n>{counts['n']}</td><td class=n>{cell(counts['mean_total'])}</td>"
                       f"<td class=n>{counts['not_a_wrist']}</td></tr>"
                       for group, counts in table.items())
        plot = summary["plots"].get(key)
        image = (f"<img alt='grades {cell(title)}' src='data:image/png;base64,"
                 f"{base64.b64encode((output_dir / plot).read_bytes()).decode()}'>") if plot else ""
        sections.append(f"<h2>Grades {cell(title)}</h2><table><tr><th>{cell(key)}</th>"
                        + "".join(f"<th>{g}</th>" for g in GRADES)
                        + f"<th>graded</th><th>mean score</th><th>not a wrist</th></tr>{rows}</table>{image}")
    lost = "".join(f"<tr><td>{cell(e['item'])}</td><td class=n>{e['points_lost']}</td>"
                   f"<td class=n>{e['images']}</td></tr>" for e in summary["most_lost_items"])
    failures = "".join(f"<li>{cell(f['path'])}: {cell(f['reason'])}</li>"
                       for f in summary["failures"]) or "<li>none</li>"
    not_wrist = "".join(f"<li>{cell(f['path'])}: {cell(f['reason'])}</li>"
                        for f in summary["not_a_wrist"]) or "<li>none</li>"
    grades = ", ".join(f"{g}: {summary['grades'][g]}" for g in GRADES)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>WristQC department summary</title>
<style>body {{ font-family: sans-serif; margin: 1.5em; }} table {{ border-collapse: collapse; margin: 0.6em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; }} th {{ background: #eee; }} td.n {{ text-align: right; }}
img {{ max-width: 720px; display: block; }}</style></head><body>
<h1>WristQC department summary</h1>
<p>{summary['n_ok']} of {summary['n_images']} images graded ({cell(grades)}); mean score
{cell(summary['mean_total'])}; {summary['n_not_a_wrist']} not a wrist (not scored); {summary['n_failed']} failed.
Per-image rows: {CSV_NAME}.</p>
{''.join(sections)}
<h2>Items that lose most points</h2><table><tr><th>item</th><th>points lost</th><th>images</th></tr>{lost}</table>
<h2>Not a wrist (not scored)</h2><ul>{not_wrist}</ul>
<h2>Failures</h2><ul>{failures}</ul>
</body></html>
"""

