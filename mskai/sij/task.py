"""The ``sij`` task object (SacroiliitisCT): what ``mskai analyze|demo|train|evaluate|batch sij`` call.

Everything tasks share is :class:`mskai.tasks.Task`; this file says what is
SacroiliitisCT's own: its options (``--bones``, ``--range``), its model, its demo
cases and its batch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mskai.errors import ModelError
from mskai.image import Image
from mskai.results import StageTimer
from mskai.tasks import DemoCase, PhantomVolume, ProgressCallback, Task, TaskOption

if TYPE_CHECKING:
    from mskai.batch import BatchPlan
    from mskai.bundles import Bundle
    from mskai.sij.model import SIJNet
    from mskai.sij.pipeline import SIJAnalysis

DEMO_BUNDLE_DIR = "sij-demo"


class SacroiliitisTask(Task):
    """SacroiliitisCT: MS-2.5D-Net sacroiliitis grading on pelvic CT."""

    name = "sij"
    title = "sacroiliitis grading on pelvic CT (MS-2.5D-Net)"
    slicer_module = "SacroiliitisCT"
    order = 1
    input_what = "CT"
    files_of_one_series = True
    options = (
        TaskOption("--bones", "bone segmentation (sacrum, hip_left, hip_right: .seg.nrrd, or labelmap + .json "
                   "names) to take the joints from", "SEG"),
        TaskOption("--range", "analysed axial range as two LPS z positions in mm, e.g. --range=-120,-95 "
                   "(default: proposed from the CT)", "Z0,Z1"),
        TaskOption("--architecture", "train one of the paper's Table 1 baselines instead of MS-2.5D-Net: "
                   "resnet2d, resnet3d or single_scale (or ms-2.5d-net)", "NAME", ("train",)),
    )
    slicer_phantom_inputs = (
        PhantomVolume("input_volume_node", "Pelvis CT", (10, 24, 32), (0.8, 0.8, 2.5), "CT"),
    )
    demo_cases = (DemoCase("sacroiliitis", 410_001, {"grades": (3, 2)}),
                  DemoCase("normal", 410_002, {"grades": (0, 0)}))

    # ---- the analysis -------------------------------------------------------------------

    def is_loaded_model(self, model: Any) -> bool:
        return isinstance(model, tuple)

    def load_model(self, model: Bundle | str | Path | None, device: str) -> tuple[SIJNet, dict[str, Any]]:
        """``(SIJNet, metadata)`` of bundle ``model`` (None: the default ``sij`` bundle)."""
        from mskai.device import resolve_device
        from mskai.sij.model import load_sij_bundle

        return load_sij_bundle(model, device=resolve_device(device))

    def analyse_image(self, image: Image, loaded: tuple[SIJNet, dict[str, Any]], *, device: str,
                      force: bool, timer: StageTimer, progress: ProgressCallback,
                      bones: str | os.PathLike[str] | None = None, bone_labels: Image | None = None,
                      bone_names: Mapping[int, str] | None = None,
                      range: str | Sequence[float] | None = None) -> SIJAnalysis:
        """:func:`mskai.sij.pipeline.analyze_image` of one CT.

        Args:
            bones: path of a bone segmentation (``.seg.nrrd``, or a labelmap with a
                sidecar ``.json`` of names); ``bone_labels``: the same as an
                :class:`Image` (from Slicer) with ``bone_names``.
            range: the analysed range (two LPS z positions in mm, ``"z0,z1"`` or a pair).
        """
        from mskai.sij.joints import read_bones
        from mskai.sij.pipeline import analyze_image

        labels, names = bone_labels, bone_names
        if labels is None and bones is not None:
            with timer("read"):
                labels, names = read_bones(bones, bone_names)
        return analyze_image(image, model=loaded, device=device, bones=labels, bone_names=names,
                             range_mm=range, force=force, timer=timer, progress=progress)

    def write_outputs(self, analysis: SIJAnalysis, output_dir: Path, *, reports: bool = True) -> None:
        """``result.json``, ``heatmap.nii.gz`` and the overlay PNGs."""
        from mskai.sij.pipeline import write_outputs

        write_outputs(analysis, output_dir)

    def verdict_line(self, result: dict) -> str:
        from mskai.distribution import short_note

        side = result["side_grades"]
        return (f"{result['verdict']} (grade {result['grade']}, left {side['left']}, right {side['right']}, "
                f"p = {result['probability']:.3f}){short_note(result)}")

    def portable(self, analysis: SIJAnalysis) -> SIJAnalysis:
        """The result, heatmap and per-slice probabilities; the CT and the crops stay in the worker."""
        from dataclasses import replace

        return replace(analysis, stacks=None, lesion=None, image=None)

    # ---- the demo --------------------------------------------------------------------------

    def demo_model(self) -> Path:
        """The shipped demo bundle (the demo never runs an installed model by surprise)."""
        from mskai.paths import resources_dir

        folder = resources_dir() / "Models" / DEMO_BUNDLE_DIR
        if not (folder / "metadata.json").is_file():
            raise ModelError(f"the SacroiliitisCT demo bundle is missing ({folder}); train it with "
                             "Utilities/train_sij_demo.sh or pass --model")
        return folder

    def make_demo_case(self, case: DemoCase, folder: Path) -> dict[str, Path]:
        """A normal or sacroiliitis pelvis phantom as a DICOM series with its bones and truth."""
        from mskai.sij.phantoms import make_sij_case, write_sij_case

        phantom = make_sij_case(case.seed, grades=case.options["grades"])
        return write_sij_case(phantom, folder, fmt="dicom")

    def demo_entry(self, case: DemoCase, truth: dict, result: dict) -> tuple[dict[str, Any], str]:
        truth_sides = {"left": truth["grade_left"], "right": truth["grade_right"]}
        entry = {"truth": truth["verdict"], "truth_side_grades": truth_sides, "verdict": result["verdict"],
                 "grade": result["grade"], "side_grades": result["side_grades"],
                 "probability": result["probability"], "correct": result["verdict"] == truth["verdict"]}
        line = (f"truth {truth['verdict']} (left {truth_sides['left']}, right {truth_sides['right']}); "
                f"verdict {result['verdict']} (left {result['side_grades']['left']}, right "
                f"{result['side_grades']['right']}, p = {result['probability']:.3f})")
        return entry, line

    # ---- batch -------------------------------------------------------------------------------

    def batch_plan(self, *, force: bool = False) -> BatchPlan:
        """Worklist sorted by probability: :func:`mskai.sij.batch.batch_plan`."""
        from mskai.sij.batch import batch_plan

        return batch_plan(force=force)


TASK = SacroiliitisTask()
