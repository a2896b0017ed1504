import os
import sys
from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Loaded from a source checkout (Additional module paths), mskai and
# mskai_slicer sit one folder up; an installed extension has them beside this file.
_sourceCheckout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_sourceCheckout, "mskai", "__init__.py")) and _sourceCheckout not in sys.path:
    sys.path.append(_sourceCheckout)

from mskai.tasks import PlaceholderTask, task_for_module  # noqa: E402
from mskai_slicer.dependency_dialog import ensure_dependencies  # noqa: E402
from mskai_slicer.module_logic import AnalysisCancelledError  # noqa: E402
from mskai_slicer.module_widget import DEVICE_CHOICES, MSKAIModuleWidgetMixin  # noqa: E402
from CervicalMRLib import CervicalMRLogic  # noqa: E402


#
# CervicalMR
#


class CervicalMR(ScriptedLoadableModule):
    """Cervical spondylosis findings on MR, per level."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Cervical MR")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MSKAI")]
        self.parent.dependencies = []
        self.parent.contributors = ["MSKAI developers (MSKAI open-source project)"]
        # Hidden from the module list while its analysis has not landed (a placeholder task).
        self.parent.hidden = isinstance(task_for_module("CervicalMR"), PlaceholderTask)
        self.parent.helpText = _("""
<p>Segments a cervical spine MR study and finds its disc levels: the sagittal series (T2, else T1)
into vertebral bodies, discs, dural sac and spinal cord, each axial T2 stack into dural sac, cord,
disc, posterior longitudinal ligament (PLL) and ligamentum flavum (LF); names the vertebrae (C2 is
identified from its dens and height; when it cannot be, the vertebrae get relative names V1, V2, ...
with a warning); for each disc C2/3 ... C6/7, gives its centre and the axial slices that cut it; and
assesses the paper's findings: vertebral hyperplasia (osteophytes) and spondylolisthesis per vertebra,
disc herniation, PLL and LF thickening per disc level, with what is measured beside them (slip and its
grade, protrusion and herniation type, ligament thickness, canal and cord diameters, the C2-C7
lordosis). A finding whose classifier model is not installed reads "not assessed".</p>
<p>Inputs: sagittal T1 and/or sagittal T2 (one of them may be missing) and one to three axial T2
stacks of the same study. Outputs: the segmentations (Segmentation nodes with named segments, to
correct in the Segment Editor embedded in the panel), the vertebra names (Markups points), a levels
table (selecting a level turns the red slice view onto its axial slice), a result table with the
verdict (the positive findings by level), what was found and the warnings, and the
<b>findings table</b> ("CervicalMR findings"): the structured report, one row per finding at each
disc level and vertebra with its result (positive, negative, not assessed), probability, measurement
and the axial slice it is read on. Selecting a row of the findings table jumps to its evidence: a
level's finding turns the red view onto the axial slice the level is read on (with that stack's
segmentation), a vertebra's turns the yellow view to the vertebra on the sagittal series, and what
was measured (protrusion, PLL, LF, canal or slip) is drawn as the "CervicalMR measurement" line.</p>
<p>Learning from corrections: "Save as training case" writes the corrected segmentations and their
series into a segmentation dataset folder (train/val/test split fixed when a case is first saved,
never overwritten); "Fine-tune on saved cases" fine-tunes the current segmentation models in the
background and shows the old and new validation Dice on the same cases; the module switches to the
new models only when you accept them.</p>
<p>Method: Zhu Yifeng, Li Yushi, Sun Zhaonan et al., <i>A preliminary study on establishing
MRI diagnosis model of cervical spondylosis based on deep learning</i>, Radiologic Practice
2024;39(6):779-787 (in Chinese), DOI 10.13609/j.cnki.1000-0313.2024.06.011.</p>
<p><b>Training data</b>: right under the verdict the panel says whether the input looks like the
data the model was trained on (red: it does not, and the verdict is not reliable on it; grey: the
bundle records no summary to compare with), with a demonstration model's disclaimer; the result
table gives the distance and threshold, per network where there are several.</p>
<p>Demonstration models are trained on synthetic data and are not for clinical use.</p>
""")
        self.parent.acknowledgementText = _("""
The method is the one published by the paper's authors; this implementation is independent.
MSKAI is built on 3D Slicer, PyTorch, MONAI, SimpleITK and pydicom.
""")


#
# CervicalMRParameterNode
#


@parameterNodeWrapper
class CervicalMRParameterNode:
    """
    sagittalT1Volume, sagittalT2Volume - the sagittal series (either may be empty, not both).
    axialT2Volume, axialT2Volume2, axialT2Volume3 - the axial T2 stacks (the first is required).
    modelPath - "SAGITTAL_BUNDLE,AXIAL_BUNDLE"; empty for the accepted or demonstration bundles.
    device - where the networks run.
    datasetFolder - where "Save as training case" writes and "Fine-tune" reads.
    """

    sagittalT1Volume: vtkMRMLScalarVolumeNode
    sagittalT2Volume: vtkMRMLScalarVolumeNode
    axialT2Volume: vtkMRMLScalarVolumeNode
    axialT2Volume2: vtkMRMLScalarVolumeNode
    axialT2Volume3: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    datasetFolder: str = ""


#
# CervicalMRWidget
#


class CervicalMRWidget(MSKAIModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel; the shared behaviour is in :class:`mskai_slicer.module_widget.MSKAIModuleWidgetMixin`,
    this class adds the findings and levels tables, the embedded Segment Editor, "Save as training case",
    "Fine-tune on saved cases" and accepting the fine-tuned bundles."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self._fineTuneJob = None
        self._fineTuned = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupPanel(CervicalMRLogic(), CervicalMRParameterNode)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segment_editor_node())
        self.ui.levelsTableView.connect("selectionChanged()", self.onLevelsSelectionChanged)
        self.ui.findingsTableView.connect("selectionChanged()", self.onFindingsSelectionChanged)
        self.ui.saveTrainingCaseButton.connect("clicked(bool)", self.onSaveTrainingCaseButton)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTuneButton)
        self.ui.acceptBundleButton.connect("clicked(bool)", self.onAcceptBundleButton)
        self.ui.datasetPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetPathChanged)
        self._fineTuneTimer = qt.QTimer()
        self._fineTuneTimer.setInterval(200)
        self._fineTuneTimer.connect("timeout()", self.onFineTunePoll)

    def cleanup(self) -> None:
        if self._fineTuneJob is not None:
            self._fineTuneJob.cancel()
        self._fineTuneTimer.stop()
        MSKAIModuleWidgetMixin.cleanup(self)

    def setParameterNode(self, parameterNode) -> None:
        MSKAIModuleWidgetMixin.setParameterNode(self, parameterNode)
        if self._parameterNode:
            self.ui.datasetPathLineEdit.currentPath = self._parameterNode.datasetFolder

    def onDatasetPathChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.datasetFolder = path

    def missingInputs(self) -> list[str]:
        missing = []
        if not self._parameterNode.sagittalT1Volume and not self._parameterNode.sagittalT2Volume:
            missing.append(_("sagittal T1 or T2"))
        if not self._parameterNode.axialT2Volume:
            missing.append(_("axial T2"))
        return missing

    def analysisArguments(self) -> dict:
        axial = [node for node in (self._parameterNode.axialT2Volume, self._parameterNode.axialT2Volume2,
                                   self._parameterNode.axialT2Volume3) if node]
        return {"sagittal_t1_node": self._parameterNode.sagittalT1Volume or None,
                "sagittal_t2_node": self._parameterNode.sagittalT2Volume or None,
                "axial_t2_node": axial}

    def updateButtons(self, caller=None, event=None) -> None:
        MSKAIModuleWidgetMixin.updateButtons(self, caller, event)
        busy = self._job is not None or self._fineTuneJob is not None
        hasResult = self._job is None and self.logic.last_result is not None
        self.ui.saveTrainingCaseButton.enabled = hasResult and self._fineTuneJob is None
        self.ui.fineTuneButton.text = _("Cancel fine-tuning") if self._fineTuneJob is not None \
            else _("Fine-tune on saved cases")
        self.ui.fineTuneButton.enabled = self._fineTuneJob is not None or not busy
        self.ui.acceptBundleButton.enabled = self._fineTuned is not None and not busy
        if self._fineTuneJob is not None:  # one worker: Analyze (and its Cancel) waits for the fine-tuning
            self.ui.applyButton.enabled = False

    def showResult(self, result) -> None:
        """Verdict, what was found, the result, findings and levels tables, the warnings in
        the log; the embedded Segment Editor opens on the sagittal segmentation."""
        MSKAIModuleWidgetMixin.showResult(self, result)
        self.ui.scoreLabel.text = level_summary(result)
        self.ui.findingsTableView.setMRMLTableNode(self.logic.findings_table_node() if result else None)
        self.ui.levelsTableView.setMRMLTableNode(self.logic.levels_table_node() if result else None)
        if not result:
            return
        for warning in result.get("warnings") or []:
            self.appendLog(_("Warning: {warning}").format(warning=warning))
        if self.logic.last_sagittal_node is not None:
            slicer.util.setSliceViewerLayers(background=self.logic.last_sagittal_node, fit=True)
        levels = result.get("levels") or []
        if any(level.get("axial_slices") for level in levels):  # the red view on the first cut level
            row = next(index for index, level in enumerate(levels) if level.get("axial_slices"))
            with slicer.util.tryWithErrorDisplay(_("The level could not be shown."), waitCursor=False):
                self.logic.jump_to_level(row)
        segmentation = self.logic.sagittal_segmentation_node()
        if segmentation is not None:
            self.ui.segmentEditorWidget.setSegmentationNode(segmentation)
            self.ui.segmentEditorWidget.setSourceVolumeNode(self.logic.last_sagittal_node)

    def onLevelsSelectionChanged(self) -> None:
        """Turn the red slice view onto the selected level's axial slice."""
        row = self._selectedRow(self.ui.levelsTableView)
        if row is None or self.logic.last_result is None:
            return
        with slicer.util.tryWithErrorDisplay(_("The level could not be shown."), waitCursor=False):
            target = self.logic.jump_to_level(row)
            self.appendLog(_("{level}: axial stack {stack}, slice {index} ({distance:.1f} mm from the disc "
                             "centre)").format(level=target["level"], stack=target["stack"], index=target["index"],
                                               distance=target["distance_mm"]))

    def onFindingsSelectionChanged(self) -> None:
        """Show the selected finding's slice and draw what was measured."""
        row = self._selectedRow(self.ui.findingsTableView)
        if row is None or self.logic.last_result is None:
            return
        with slicer.util.tryWithErrorDisplay(_("The finding could not be shown."), waitCursor=False):
            shown = self.logic.jump_to_finding(row)
            if shown["kind"] == "level" and shown["slice"]:
                where = _("axial stack {stack}, slice {index}").format(**shown["slice"])
            else:
                where = _("{view} view").format(view=shown["view"].lower())
            self.appendLog(_("{place} {finding}: {where}{line}").format(
                place=shown["where"], finding=shown["finding"], where=where,
                line=_("; measured line drawn") if shown["line_ras"] else ""))

    @staticmethod
    def _selectedRow(view):
        """The table node row of a table view's selection (None without one)."""
        indexes = view.selectionModel().selectedIndexes()
        if not indexes:
            return None
        return view.sortFilterProxyModel().mapToSource(indexes[0]).row()

    # ---- learning from corrections --------------------------------------------------------

    def onSaveTrainingCaseButton(self) -> None:
        folder = self.ui.datasetPathLineEdit.currentPath
        caseId = self.ui.caseIdLineEdit.text.strip()
        if not folder or not caseId:
            slicer.util.warningDisplay(_("Choose the dataset folder and type a new case id first."),
                                       windowTitle=_("Save as training case"))
            return
        with slicer.util.tryWithErrorDisplay(_("The training case was not saved."), waitCursor=True):
            record = self.logic.save_training_case(folder, caseId)
            self.appendLog(_("Saved training case {case} ({rows} series, split {split}) into {csv}").format(
                case=caseId, rows=len(record["rows"]), split=record["split"], csv=record["dataset"]))
            self.ui.caseIdLineEdit.text = ""

    def onFineTuneButton(self) -> None:
        if self._fineTuneJob is not None:
            self._fineTuneJob.cancel(_("the fine-tuning was cancelled"))
            return
        folder = self.ui.datasetPathLineEdit.currentPath
        if not folder:
            slicer.util.warningDisplay(_("Choose the dataset folder of the saved cases first."),
                                       windowTitle=_("Fine-tune on saved cases"))
            return
        if not ensure_dependencies(self.moduleName, parent=slicer.util.mainWindow()):
            return
        self._fineTuned = None
        self.ui.comparisonLabel.text = "-"
        self.ui.progressBar.value = 0
        with slicer.util.tryWithErrorDisplay(_("The fine-tuning could not start."), waitCursor=True):
            self._fineTuneJob = self.logic.fine_tune_async(folder, device=self._parameterNode.device)
            self.appendLog(_("Fine-tuning started on the saved cases of {folder}.").format(folder=folder))
            self._fineTuneTimer.start()
        self.updateButtons()

    def onFineTunePoll(self) -> None:
        job = self._fineTuneJob
        if job is None:
            self._fineTuneTimer.stop()
            return
        job.poll()
        self.ui.progressBar.value = int(round(100 * job.fraction))
        for message in job.take_messages():
            self.appendLog(message)
        if job.running:
            return
        self._fineTuneTimer.stop()
        self._fineTuneJob = None
        try:
            with slicer.util.tryWithErrorDisplay(_("The fine-tuning did not finish."), waitCursor=False):
                try:
                    outcome = self.logic.finish_fine_tune(job)
                except AnalysisCancelledError:
                    self.appendLog(_("Fine-tuning cancelled."))
                    return
                self._fineTuned = outcome
                self.ui.comparisonLabel.text = comparison_text(outcome)
                self.appendLog(_("Fine-tuning finished; accept the new model to use it."))
        finally:
            self.updateButtons()

    def onAcceptBundleButton(self) -> None:
        if self._fineTuned is None:
            return
        with slicer.util.tryWithErrorDisplay(_("The fine-tuned model could not be installed."), waitCursor=True):
            for plane, trained in sorted((self._fineTuned.get("planes") or {}).items()):
                entry = self.logic.accept_bundle(trained["bundle"])
                self.appendLog(_("The {plane} segmentation now uses {id} {version}.").format(
                    plane=plane, id=entry["id"], version=entry["version"]))
            self._fineTuned = None
            self.refreshBundleList()
        self.updateButtons()


def level_summary(result) -> str:
    """What was found in one line for the panel (the result's labelling line; without it,
    the vertebrae and levels)."""
    if not result:
        return "-"
    if result.get("labelling"):
        return str(result["labelling"])
    vertebrae = ", ".join(v["name"] for v in result.get("vertebrae") or []) or _("none")
    levels = ", ".join(level["name"] for level in result.get("levels") or []) or _("none")
    return _("vertebrae {vertebrae}; levels {levels}").format(vertebrae=vertebrae, levels=levels)


def comparison_text(outcome) -> str:
    """Old and new validation Dice of each fine-tuned structure (the same cases)."""
    from CervicalMRLib.logic import comparison_rows

    lines = []
    for row in comparison_rows(outcome):
        old = "-" if row["old"] is None else f"{float(row['old']):.3f}"
        new = "-" if row["new"] is None else f"{float(row['new']):.3f}"
        lines.append(f"{row['plane']} {row['structure']}: {old} ({row['old_version']}) -> {new} "
                     f"({row['new_version']})")
    for plane, why in sorted((outcome.get("skipped") or {}).items()):
        lines.append(f"{plane}: not fine-tuned ({why})")
    return "\n".join(["Validation Dice, old -> new, on the same cases:"] + lines)


#
# CervicalMRTest
#


class CervicalMRTest(ScriptedLoadableModuleTest):
    """The same checks as CI's pytest suites (Testing/test_cervicalmr_logic.py and
    Testing/test_module_logic.py), on the application's scene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        import unittest

        self.setUp()
        self.test_SlicerHelpers()
        self.setUp()
        try:
            self.test_AnalysisOnPhantom()
        except unittest.SkipTest as skipped:  # Reload and Test calls runTest itself, not unittest's runner
            self.delayDisplay(str(skipped))

    def test_SlicerHelpers(self):
        """Volume geometry, result nodes and the subject hierarchy, on real MRML nodes."""
        from mskai_slicer.testing import run_all_checks

        self.delayDisplay("Checking the shared Slicer helpers")
        run_all_checks()
        self.delayDisplay("Test passed")

    def test_AnalysisOnPhantom(self):
        """A phantom cervical MR study analysed with the demo bundles, blocking and in the
        worker: the segmentations, vertebra points, levels and findings tables, the level
        jump, the jump to a finding with its measured line, and "Save as training case"
        read back."""
        from mskai_slicer.dependencies import testing_skip_reason

        skipReason = testing_skip_reason(testing=True)
        if skipReason:
            self.skipTest(skipReason)
        from mskai.errors import ModelError
        from mskai.cervical.segmentation import load_segmenter

        try:
            load_segmenter(None, "sagittal")
            load_segmenter(None, "axial")
        except ModelError as missing:
            self.skipTest(f"Skipped the analysis test: {missing}")
        from mskai_slicer.module_checks import run_module_checks
        from CervicalMRLib.checks import run_cervicalmr_checks

        self.delayDisplay("Analyzing a phantom cervical MR study")
        logic = CervicalMRLogic()
        run_module_checks(logic)
        result = run_cervicalmr_checks(logic=logic)
        self.assertTrue(result["vertebrae"])
        self.delayDisplay("Test passed")
