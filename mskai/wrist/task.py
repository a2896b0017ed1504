"""The ``wrist`` task object: what ``mskai analyze|demo|train|evaluate|batch wrist`` call.

Everything tasks share (reading, progress, the models kept loaded, the demo loop,
training/evaluation/batch delegation) is :class:`mskai.tasks.Task`; this file
says what is WristQC's own: its models, its input check, its demo cases.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mskai.image import Image
from mskai.results import StageTimer
from mskai.tasks import DemoCase, PhantomVolume, ProgressCallback, Task

if TYPE_CHECKING:
    from mskai.batch import BatchPlan
    from mskai.wrist.models import WristModels
    from mskai.wrist.pipeline import WristAnalysis

_AS_TRAINED = {"marker_look": "classic", "collimation": False}  # the phantoms the demo bundles were trained on
DEMO_CASES = (
    DemoCase("excellent_ap", 410_001, {"view": "AP", "quality": "excellent", "artifact": False, "marker": "present",
                                       **_AS_TRAINED}),
    DemoCase("poor_lateral", 410_003, {"view": "LAT", "quality": "poor", "artifact": False, "marker": "present",
                                       **_AS_TRAINED}),
    DemoCase("ring", 410_008, {"view": "AP", "quality": "moderate", "artifact": "ring", "marker": "present",
                               **_AS_TRAINED}),
)
"""The demo cases: name, phantom seed, :func:`mskai.wrist.phantoms.make_wrist_case` options.
Ground truth with complete tags: grade A (100/100), C (70: layout 6/36) and B (80: no artifact
points, layout 26/36); the demo bundles grade all three right.  The seeds were chosen so that each
total was at least 5 points from a grade boundary; the ``ring`` case lost that margin when AP2's
lower edge was corrected to the forearm's side (its wrist sits low in the image: AP2 went from
0 points, 18.7 cm to the fingers' edge, to 5 points, 4.6 cm to the forearm's edge; the total from
C 75 to B 80)."""


class WristTask(Task):
    """WristQC: the 100-point quality score of a wrist AP or lateral radiograph."""

    name = "wrist"
    title = "wrist radiograph quality control"
    slicer_module = "WristQC"
    order = 4
    input_what = "radiograph"
    slicer_phantom_inputs = (
        PhantomVolume("input_volume_node", "Wrist AP", (1, 64, 48), (0.15, 0.15, 1.0), "DX"),
    )
    demo_cases = DEMO_CASES
    demo_samples_version = "wrist-phantoms-v2"  # v2: AP2's lower edge corrected, the ring case's truth changed
    demo_summary_phrase = "demo cases graded as their ground truth"

    # ---- the analysis -------------------------------------------------------------------

    def is_loaded_model(self, model: Any) -> bool:
        return hasattr(model, "predict_keypoints")

    def load_model(self, model: str | Path | None, device: str) -> WristModels:
        """The three WristQC networks: ``model`` is a folder holding the artifact,
        keypoints and view bundles (as ``mskai train wrist`` writes them), or
        ``"demo"``/None for the shipped demo bundles."""
        from mskai.wrist.models import load_wrist_folder, load_wrist_models

        if model is None or str(model) == "demo":
            return load_wrist_models(device=device)
        return load_wrist_folder(model, device=device)

    def check_input(self, image: Image, *, force: bool = False) -> None:
        """One radiograph of a wrist (:func:`mskai.wrist.pipeline.check_radiograph`)."""
        from mskai.wrist.pipeline import check_radiograph

        check_radiograph(image, force=force)

    def analyse_image(self, image: Image, loaded: WristModels, *, device: str, force: bool, timer: StageTimer,
                      progress: ProgressCallback, heatmap: bool = True,
                      default_spacing_mm: Sequence[float] | None = None) -> WristAnalysis:
        """:func:`mskai.wrist.pipeline.analyze_radiograph` of one radiograph.

        Args:
            heatmap: compute the artifact heatmap (batch runs skip it).
            default_spacing_mm: (x, y) for images without pixel spacing.
        """
        from mskai.wrist.pipeline import analyze_radiograph

        spacing = {} if default_spacing_mm is None else {"default_spacing_mm": default_spacing_mm}
        return analyze_radiograph(image, models=loaded, device=device, force=force, timer=timer,
                                  heatmap=heatmap, progress=progress, **spacing)

    def write_outputs(self, analysis: WristAnalysis, output_dir: Path, *, reports: bool = True) -> None:
        """``result.json`` with ``overlay.png``, ``artifact_heatmap.png``, ``report.html``
        and ``report.pdf``; ``result.json`` only without ``reports``."""
        from mskai.results import write_result
        from mskai.wrist.pipeline import write_outputs

        if reports:
            write_outputs(analysis, output_dir)
        else:
            write_result(output_dir, analysis.result)

    # ---- the demo --------------------------------------------------------------------------

    def demo_model(self) -> str:
        return "demo"

    def make_demo_case(self, case: DemoCase, folder: Path) -> dict[str, Path]:
        """A wrist phantom as a DICOM radiograph with complete tags and its ground truth."""
        from mskai.wrist.phantoms import make_wrist_case, write_wrist_case

        phantom = make_wrist_case(case.seed, **case.options)
        return write_wrist_case(phantom, folder, name=case.name, tags="complete")

    def demo_entry(self, case: DemoCase, truth: dict, result: dict) -> tuple[dict[str, Any], str]:
        expected = truth["expected"]
        parts = {name: result["parts"][name]["score"] for name in ("tags", "marker", "artifact", "layout")}
        correct = result["grade"] == expected["grade"]
        if truth.get("artifact_kind"):
            correct = correct and parts["artifact"] == 0
        entry = {"seed": case.seed, "truth_grade": expected["grade"], "truth_total": expected["total"],
                 "truth_parts": expected["parts"], "grade": result["grade"], "total": result["total"],
                 "parts": parts, "view": result["view"], "correct": correct}
        return entry, (f"truth grade {expected['grade']} ({expected['total']}/100, parts {expected['parts']}); "
                       f"result {result['verdict']} (parts {parts})")

    # ---- batch -------------------------------------------------------------------------------

    def batch_plan(self, *, force: bool = False) -> BatchPlan:
        """Department QC: :func:`mskai.wrist.batch.batch_plan`."""
        from mskai.wrist.batch import batch_plan

        return batch_plan(self, force=force)


TASK = WristTask()
