"""Wrist radiograph quality control on MRML nodes.

The analysis is :func:`mskai.wrist.pipeline.analyze_radiograph` (through the
``wrist`` task); this Logic

* loads a DX/CR DICOM file or a PNG/JPEG through :mod:`mskai.io` and pushes it
  as a one-slice scalar volume (:meth:`WristQCLogic.load_radiograph`); the file
  path is kept on the node so that the DICOM header (the 34 tag points) is
  read again at analysis time;
* runs the analysis, blocking or in the module's worker process (the shared
  :class:`mskai_slicer.module_logic.MSKAIModuleLogic`), and files its nodes
  beside the radiograph in the subject hierarchy:

  - ``WristQC result`` (Table): verdict, score, model, warnings;
  - ``WristQC scores`` (Table): every item with points, max, measured value,
    grade and reason (:func:`mskai.wrist.report.item_rows`);
  - ``WristQC keypoints`` (Markups points P1..P3 or P1..P5; a keypoint that was
    not found is an unplaced point the user can place);
  - ``WristQC marker`` (Markups closed curve around the L/R marker found);
  - ``WristQC artifact heatmap`` (scalar volume 0..1 on the radiograph's grid,
    shown as foreground) when an artifact is found;

* re-scores the layout at once when a keypoint is moved
  (:meth:`WristQCLogic.rescore_from_markups`, called by the panel from the
  markups node's PointModifiedEvent), and exports the report (HTML and PDF).

Pixel <-> patient mapping, in one place (:func:`pixel_to_lps`,
:func:`lps_to_pixel`): pixel ``(x, y)`` = voxel ``(i, j, k=0)`` of the
radiograph volume, mapped with the node's world geometry (parent transforms
included) by :func:`mskai.geometry.index_to_lps` / :func:`lps_to_index`; RAS
<-> LPS happens in :mod:`mskai_slicer.geometry` and
:class:`mskai_slicer.outputs.OutputManager`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import slicer

from mskai.errors import InputError
from mskai.geometry import index_to_lps, lps_to_index
from mskai.image import Image
from mskai.tasks import ProgressCallback, Task
from mskai_slicer.geometry import image_to_volume_node, node_world_lps_points, volume_node_to_image
from mskai_slicer.module_logic import AnalysisJob, MSKAIModuleLogic
from mskai_slicer.outputs import ATTRIBUTE_FINGERPRINT, OutputManager, content_fingerprint

SCORES_TABLE_ROLE = "scores"
KEYPOINTS_ROLE = "keypoints"
MARKER_ROLE = "marker"
HEATMAP_ROLE = "artifact-heatmap"
ATTRIBUTE_SOURCE_PATH = "MSKAI.SourcePath"
"""Node attribute: the file the radiograph was loaded from (its DICOM header gives the tag points)."""
ATTRIBUTE_SPACING_SOURCE = "MSKAI.SpacingSource"
"""Node attribute: ``assumed`` when the file had no pixel spacing (the node holds the default)."""
REPORT_FILES = ("overlay.png", "artifact_heatmap.png", "report.html", "report.pdf")


def pixel_to_lps(image: Image, points_xy: Any) -> np.ndarray:
    """Pixels ``(x, y)`` (N, 2) of a radiograph -> patient LPS mm (N, 3)."""
    xy = np.asarray(points_xy, dtype=float).reshape(-1, 2)
    return index_to_lps(image, np.column_stack([xy, np.zeros(len(xy))]))


def lps_to_pixel(image: Image, points_lps: Any) -> np.ndarray:
    """Patient LPS mm (N, 3) -> pixels ``(x, y)`` (N, 2) of a radiograph (the
    component across the image plane is dropped)."""
    return lps_to_index(image, np.asarray(points_lps, dtype=float).reshape(-1, 3))[:, :2]


class WristQCOutputs(OutputManager):
    """The shared output manager plus the kind of node WristQC adds: a closed curve
    (the marker outline)."""

    def closed_curve(self, role: str, points_lps: Any, input_node: Any, name: str) -> Any:
        """A ``vtkMRMLMarkupsClosedCurveNode`` through ``points_lps`` (N, 3), straight segments."""
        from mskai_slicer.geometry import lps_to_ras

        node = self._claim(role, input_node, "vtkMRMLMarkupsClosedCurveNode")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", name)
        was_modifying = node.StartModify()
        node.SetName(name)
        node.SetCurveTypeToLinear()
        node.RemoveAllControlPoints()
        for point in lps_to_ras(np.asarray(points_lps, dtype=float).reshape(-1, 3)):
            node.AddControlPoint(point.tolist(), "")
        node.SetLocked(True)
        node.EndModify(was_modifying)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetPointLabelsVisibility(False)
        return self._stamp(node, role, input_node)

class WristQCLogic(MSKAIModuleLogic):
    task_name = "wrist"
    # A run writes result.json only; the Logic makes the reports when the result is
    # saved or exported (they follow keypoint corrections).
    scene_run_options = {"reports": False}

    def __init__(self, task: Task | None = None, outputs: OutputManager | None = None):
        super().__init__(task, outputs if outputs is not None else WristQCOutputs("WristQC"))
        self.last_analysis: Any = None
        self._reports_written = False

    # ---- input -----------------------------------------------------------------------

    def load_radiograph(self, path: str | Path, name: str | None = None) -> Any:
        """Read a DX/CR DICOM file or a PNG/JPEG with :func:`mskai.io.read_image`
        (MONOCHROME1 inverted there) and add it as a one-slice scalar volume.
        Without pixel spacing the node gets the default wrist spacing and is
        marked ``assumed``.  Returns the volume node."""
        from mskai.io import read_image
        from mskai.wrist.pipeline import DEFAULT_SPACING_MM

        path = Path(path)
        image = read_image(path)
        if not image.is_2d:
            raise InputError(f"{path.name} holds {image.shape[0]} slices; WristQC needs one radiograph "
                             "(a single 2D image)")
        assumed = image.meta.get("spacing_source") == "assumed"
        if assumed:
            image = image.with_array(image.array, spacing=(*DEFAULT_SPACING_MM, 1.0))
        node = image_to_volume_node(image, name or path.name.split(".")[0])
        node.SetAttribute(ATTRIBUTE_SOURCE_PATH, str(path.resolve()))
        node.SetAttribute(ATTRIBUTE_SPACING_SOURCE, "assumed" if assumed else str(image.meta.get("spacing_source")))
        return node

    def _read_inputs(self, inputs: dict[str, Any]) -> tuple[list, Any]:  # type: ignore[override]
        images, input_node = MSKAIModuleLogic._read_inputs(inputs)
        return [self._with_source_facts(images[0], input_node)], input_node

    @staticmethod
    def _source_file(node: Any) -> Path | None:
        """The file a radiograph node came from: the path this Logic stored, or the
        first instance of a series loaded by Slicer's DICOM module."""
        stored = node.GetAttribute(ATTRIBUTE_SOURCE_PATH)
        if stored:
            return Path(stored)
        database = getattr(slicer, "dicomDatabase", None)
        uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
        if database is not None and uids:
            found = database.fileForInstance(uids[0])
            return Path(found) if found else None
        return None

    def _with_source_facts(self, image: Image, node: Any) -> Image:
        """The node's image with the source file's pixels (MONOCHROME1 already
        inverted by mskai.io), DICOM header, facts and reading warnings, when the
        file is still there and has the node's size; the node's geometry is kept."""
        from mskai.io import read_image

        source_path = self._source_file(node)
        if source_path is None or not source_path.is_file():
            if node.GetAttribute(ATTRIBUTE_SPACING_SOURCE) == "assumed":
                image.meta.update(spacing_source="assumed", has_geometry=False)
            return image
        source = read_image(source_path)
        if source.shape != image.shape:
            image.warnings.append(f"{source_path.name} no longer matches the volume '{node.GetName()}'; "
                                  "its DICOM header was not used")
            return image
        keep = {"mrml_node_id": image.meta.get("mrml_node_id"), "name": image.meta.get("name")}
        image.array = source.array
        image.header = source.header
        image.meta.update(source.meta)
        image.meta.update(keep)
        image.warnings.extend(source.warnings)
        if source.meta.get("spacing_source") == "assumed":
            image.meta["has_geometry"] = False
        return image

    # ---- analysis --------------------------------------------------------------------

    def analyze(self, input_volume_node: Any, model_path: str | Path | None = None, device: str = "auto",
                progress: ProgressCallback | None = None, force: bool = False) -> dict:
        """Score the quality of the wrist radiograph ``input_volume_node`` and
        wait for the result (the ``result.json`` dict); for scripts and tests.
        ``force`` analyses an image that does not look like a wrist radiograph."""
        return self.run({"wrist radiograph": input_volume_node}, model_path=model_path, device=device,
                        progress=progress, force=force)

    def analyze_async(self, input_volume_node: Any, model_path: str | Path | None = None,
                      device: str = "auto", force: bool = False) -> AnalysisJob:
        """Start the same analysis in the worker process (see :meth:`finish`)."""
        return self.start({"wrist radiograph": input_volume_node}, model_path=model_path, device=device,
                          force=force)

    # ---- results ---------------------------------------------------------------------

    def forget_result(self) -> None:
        super().forget_result()
        self.last_analysis = None

    def _publish(self, result: dict, output_dir: Path, input_node: Any) -> dict:
        """The shared result table, then the scores table, the keypoints, the marker
        outline and the artifact heatmap."""
        result = super()._publish(result, output_dir, input_node)
        run = self._taken_run(output_dir)
        self.last_analysis = run.analysis if run is not None else None
        self._reports_written = False
        if "parts" not in result:  # not a WristQC result (a stand-in task): only the table
            return result
        image = volume_node_to_image(input_node)
        self._publish_scores(result, input_node)
        self._publish_keypoints(result, image, input_node)
        marker = result["parts"]["marker"]
        if marker["found"]:
            x0, y0, x1, y1 = marker["box"]
            corners = [(x0 - 0.5, y0 - 0.5), (x1 + 0.5, y0 - 0.5), (x1 + 0.5, y1 + 0.5), (x0 - 0.5, y1 + 0.5)]
            self.outputs.closed_curve(MARKER_ROLE, pixel_to_lps(image, corners), input_node,
                                      f"{self.moduleName} marker {marker['letter']}")
        else:
            self.outputs.remove_role(MARKER_ROLE, input_node)
        heatmap = getattr(self.last_analysis, "heatmap", None)
        if heatmap is not None and result["parts"]["artifact"]["found"]:
            self.outputs.heatmap(HEATMAP_ROLE, image.with_array(np.asarray(heatmap, np.float32)[np.newaxis]),
                                 input_node, f"{self.moduleName} artifact heatmap")
        else:
            self.outputs.remove_role(HEATMAP_ROLE, input_node)
        return result

    def _publish_scores(self, result: dict, input_node: Any) -> None:
        from mskai.wrist.report import item_rows

        rows = item_rows(result)
        self.outputs.table(SCORES_TABLE_ROLE, {
            "Part": [row["part"] for row in rows], "Item": [row["item"] for row in rows],
            "Points": [int(row["points"]) for row in rows], "Max": [int(row["max"]) for row in rows],
            "Measured": [row["measured"] for row in rows], "Grade": [row["grade"] for row in rows],
            "Reason": [row["reason"] for row in rows],
        }, input_node, f"{self.moduleName} scores")

    def _publish_keypoints(self, result: dict, image: Image, input_node: Any) -> None:
        from mskai.wrist.pipeline import KEYPOINT_DESCRIPTIONS

        keypoints = result["keypoints"]
        found = [name for name, point in keypoints.items() if point is not None]
        positions = pixel_to_lps(image, [keypoints[name] for name in found]) if found else np.zeros((0, 3))
        node = self.outputs.fiducials(KEYPOINTS_ROLE, positions, found, input_node,
                                      f"{self.moduleName} keypoints ({result['view']})")
        was_modifying = node.StartModify()
        for name in keypoints:
            if keypoints[name] is None:  # not found: an unplaced point the user can place
                index = node.AddControlPoint([0.0, 0.0, 0.0], name)
                node.UnsetNthControlPointPosition(index)
        for index in range(node.GetNumberOfControlPoints()):
            label = node.GetNthControlPointLabel(index)
            node.SetNthControlPointDescription(index, KEYPOINT_DESCRIPTIONS[result["view"]].get(label, ""))
        node.EndModify(was_modifying)
        node.SetAttribute(ATTRIBUTE_FINGERPRINT, content_fingerprint(node))

    # ---- nodes of the last result ----------------------------------------------------

    def scores_table_node(self) -> Any:
        """The per-item Table node of the last analysis (None before one)."""
        return self._output_of_role(SCORES_TABLE_ROLE)

    def keypoints_node(self) -> Any:
        """The keypoints Markups node of the last analysis (None before one or once edited:
        the panel keeps the node it observes)."""
        return self._output_of_role(KEYPOINTS_ROLE)

    def marker_node(self) -> Any:
        """The closed curve around the marker found (None when none was found)."""
        return self._output_of_role(MARKER_ROLE)

    def heatmap_node(self) -> Any:
        """The artifact heatmap volume (None when no artifact was found)."""
        return self._output_of_role(HEATMAP_ROLE)

    # ---- corrections -----------------------------------------------------------------

    def rescore_from_markups(self, markups_node: Any) -> dict:
        """Re-score the layout from the control points of ``markups_node`` (labelled
        P1..P5; an unplaced point counts as not found) and update the result, its
        tables and ``last_result``; returns the new result.  The points are mapped to
        pixels with the radiograph's current world geometry (:func:`lps_to_pixel`)."""
        from mskai.wrist.pipeline import rescore_layout
        from mskai.wrist.scoring import VIEW_KEYPOINTS

        if self.last_result is None or self.last_analysis is None or "parts" not in self.last_result:
            raise InputError("there is no WristQC result to re-score yet; run the analysis first")
        view = self.last_result["view"]
        image = volume_node_to_image(self.last_input_node)
        labels = [markups_node.GetNthControlPointLabel(index)
                  for index in range(markups_node.GetNumberOfControlPoints())]
        points_lps = node_world_lps_points(markups_node)
        keypoints: dict[str, tuple[float, float] | None] = {name: None for name in VIEW_KEYPOINTS[view]}
        for label, point in zip(labels, points_lps):
            if label in keypoints and np.all(np.isfinite(point)):
                x, y = lps_to_pixel(image, point)[0]
                keypoints[label] = (float(x), float(y))
        result = rescore_layout(self.last_result, keypoints, image, self.last_analysis.heatmap)
        super()._publish(result, self.last_output_dir, self.last_input_node)
        self._publish_scores(result, self.last_input_node)
        self.last_analysis.result = result
        self._write_result_file()
        self._reports_written = False
        return result

    def _write_result_file(self) -> None:
        from mskai.results import write_result

        if self.last_output_dir is not None and self.last_output_dir.is_dir():
            write_result(self.last_output_dir, self.last_result)

    def export_report(self, destination: str | Path) -> list[Path]:
        """Write the last (possibly re-scored) result as ``result.json``, ``overlay.png``,
        ``artifact_heatmap.png`` (with a heatmap), ``report.html`` and ``report.pdf``
        into ``destination``; returns the written paths."""
        from mskai.results import write_result
        from mskai.wrist.report import write_reports

        if self.last_analysis is None or self.last_result is None:
            raise InputError("there is no WristQC result to export yet; run the analysis first")
        destination = Path(destination)
        names = write_reports(self.last_result, self.last_analysis.plane, destination, self.last_analysis.heatmap)
        written = [write_result(destination, self.last_result)]
        return written + [destination / name for name in names.values()]

    def save_result(self, destination: str | Path) -> list[Path]:
        """The run's folder (``result.json``, ``overlay.png``, ``artifact_heatmap.png``,
        ``report.html``, ``report.pdf``); the reports are made first when the last
        result (or its re-scoring) has none yet."""
        if not self._reports_written and self.last_analysis is not None and self.last_output_dir is not None:
            for name in REPORT_FILES:
                (self.last_output_dir / name).unlink(missing_ok=True)
            self.export_report(self.last_output_dir)
            self._reports_written = True
        return super().save_result(destination)

    def result_summary(self) -> str:
        """The last result's verdict and parts in one line, for the panel's log."""
        if not self.last_result or "parts" not in self.last_result:
            return ""
        parts = self.last_result["parts"]
        return (f"{self.last_result['verdict']}: tags {parts['tags']['score']}/34, marker "
                f"{parts['marker']['score']}/20, artifact {parts['artifact']['score']}/10, layout "
                f"{parts['layout']['score']}/36 ({self.last_result['view']} from {self.last_result['view_source']})")

