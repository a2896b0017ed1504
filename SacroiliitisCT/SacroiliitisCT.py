import os
import sys
from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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

from mskai_slicer.module_widget import DEVICE_CHOICES, MSKAIModuleWidgetMixin  # noqa: E402
from SacroiliitisCTLib import SacroiliitisCTLogic  # noqa: E402
from SacroiliitisCTLib.logic import panel_texts  # noqa: E402

# The split choices of the training-case section (the .ui lists the same); "none" = no split column.
NO_SPLIT = "none"


#
# SacroiliitisCT
#


class SacroiliitisCT(ScriptedLoadableModule):
    """Sacroiliitis grading on pelvic CT (MS-2.5D-Net)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Sacroiliitis CT")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MSKAI")]
        self.parent.dependencies = []
        self.parent.contributors = ["MSKAI developers (MSKAI open-source project)"]
        self.parent.helpText = _("""
<p>Grades sacroiliitis on an axial pelvic CT, each sacroiliac joint on its own (modified New York
grades 0-3; grade 4, ankylosis, counts as 3), and gives the verdict by the modified New York rule
(both joints grade 2 or more, or one joint grade 3): <b>sacroiliitis</b> or <b>normal</b>, with the
probability of sacroiliitis and the paper's single grade beside it.</p>
<p><b>Analysed range</b>: the paper reads 5 slices through the middle and lower part of the joint
space, chosen by hand. This module proposes that range itself (the lower two thirds of the levels
where the sacrum faces each ilium, found from the bone of the CT, or from an optional bone
segmentation with the segments sacrum, hip_left and hip_right as TotalSegmentator names them) and
shows it as a yellow box over both joints. Move or resize the box in the coronal view (drag its
inferior or superior face) and press <b>Re-analyse on this range</b>: the result then says the range
was set by you. Every analysed slice is graded with its 2.5D context (the slice and its neighbours,
5 slices 3 mm apart) and a coherence vote over the range gives each joint's grade.</p>
<p><b>Analyze</b> runs in a separate MSKAI worker process (Cancel stops it at once). The results are
the verdict, grades and range in the panel and in a result table; a table of every analysed slice
(its z, the voted grade, the probability of each grade and each joint's grade: select a row to show
that slice); the lesion heatmap over the CT (low values transparent, so the CT keeps its grey values
where there is no evidence); per side the joint centre and, where the lesion probability reaches
0.5, the strongest lesion point as Markups points named by side; and the lesion region (heatmap 0.5
or more) as a segmentation with the segments <i>left lesion</i> and <i>right lesion</i>.
<b>Correct lesions in Segment Editor</b> opens it there; a corrected segmentation is yours: analysing
again keeps it and makes a new one. <b>Save result</b> writes result.json, the heatmap and the
overlay images to a folder.</p>
<p><b>Save as training case</b> writes the case into a SacroiliitisCT dataset folder (the format
<code>mskai train sij</code> reads): the CT as NIfTI (with its DICOM UIDs in case.json when it came
from DICOM), the range the box covers, the joint grades (set from the analysis; correct them first),
the chosen lesion segmentation as a mask (1 left, 2 right), the bone segmentation used, and a row of
dataset.csv (created when absent). A case id that is already in the dataset is refused and nothing
is written; leave the id empty for a free one made of the patient ID or the CT's name.</p>
<p><b>Views</b>: when a result is shown the layout switches to a large axial view (Red) beside a
coronal view (Green), where the range box is seen and moved; any layout can be chosen again from the
toolbar. The results are placed beside the CT in the Data module (in its study, its folder or at the
top level); the CT itself is not moved.</p>
<p><b>Model</b> lists this task's shipped and installed model bundles (version, demonstration or
trained, checksums verified); <b>Install from folder</b> or <b>archive</b> checks a bundle's
checksums and installs it into your models folder.</p>
<p><b>Sample data</b>: the Sample Data module's MSKAI section offers a sacroiliitis and a normal
phantom pelvic CT with its bone segmentation, generated on this computer on first use (nothing is
downloaded).</p>
<p>Method: MS-2.5D-Net (a ResNet34 whose first convolution reads 5 consecutive slices, ASPP blocks
after each stage and a residual feature pyramid, with a grade head and a lesion head), from Zhang
Lei, <i>A CT Image Recognition Method for Sacroiliitis Based on Deep Learning</i> (in Chinese),
DOI 10.61369/MRP.2025100011.</p>
<p><b>Training data</b>: right under the verdict the panel says whether the input looks like the
data the model was trained on (red: it does not, and the verdict is not reliable on it; grey: the
bundle records no summary to compare with), with a demonstration model's disclaimer; the result
table gives the distance and threshold, per network where there are several.</p>
<p>Demonstration models are trained on synthetic data and are not for clinical use.</p>
""")
        self.parent.acknowledgementText = _("""
The method is the one published by the paper's author; this implementation is independent.
MSKAI is built on 3D Slicer, PyTorch, MONAI, SimpleITK and pydicom.
""")
        # The phantoms in the Sample Data module, once the application has started.
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The SacroiliitisCT phantoms (with their bone segmentation) in the Sample Data
    module (generated on first use)."""
    from mskai_slicer.sample_data import register_sample_data

    def show(nodes) -> None:
        slicer.util.setSliceViewerLayers(background=nodes[0], foreground=None, fit=True)

    register_sample_data("SacroiliitisCT",
                         os.path.join(os.path.dirname(__file__), "Resources", "Icons", "SacroiliitisCT.png"),
                         on_loaded=show)


#
# SacroiliitisCTParameterNode
#


@parameterNodeWrapper
class SacroiliitisCTParameterNode:
    """
    inputVolume - the axial pelvic CT.
    boneSegmentation - optional sacrum and hip bones to take the joints from.
    lesionSegmentation - the lesion segmentation "Save as training case" saves.
    modelPath - model bundle folder; empty for the task's installed or demonstration bundle.
    device - where the network runs.
    datasetFolder - where "Save as training case" writes.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    boneSegmentation: vtkMRMLSegmentationNode
    lesionSegmentation: vtkMRMLSegmentationNode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    datasetFolder: str = ""


#
# SacroiliitisCTWidget
#


class SacroiliitisCTWidget(MSKAIModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel; the shared behaviour is in :class:`mskai_slicer.module_widget.MSKAIModuleWidgetMixin`,
    this class adds the grades, the slices table, the range box and "Save as training case"."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self._requestedRange = None  # set only while "Re-analyse on this range" starts the analysis

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupPanel(SacroiliitisCTLogic(), SacroiliitisCTParameterNode)
        self.ui.reanalyzeButton.connect("clicked(bool)", self.onReanalyzeButton)
        self.ui.slicesTableView.connect("selectionChanged()", self.onSlicesTableSelectionChanged)
        self.ui.saveTrainingCaseButton.connect("clicked(bool)", self.onSaveTrainingCaseButton)
        # A plain string parameter, synchronised here as the model path is.
        self.ui.datasetPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetPathChanged)

    def setParameterNode(self, parameterNode) -> None:
        MSKAIModuleWidgetMixin.setParameterNode(self, parameterNode)
        if self._parameterNode:
            self.ui.datasetPathLineEdit.currentPath = self._parameterNode.datasetFolder

    def onDatasetPathChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.datasetFolder = path

    def missingInputs(self) -> list[str]:
        return [] if self._parameterNode.inputVolume else [_("pelvic CT")]

    def analysisArguments(self) -> dict:
        return {"input_volume_node": self._parameterNode.inputVolume,
                "bone_segmentation_node": self._parameterNode.boneSegmentation,
                "range_mm": self._requestedRange}

    def updateButtons(self, caller=None, event=None) -> None:
        MSKAIModuleWidgetMixin.updateButtons(self, caller, event)
        hasResult = self._job is None and self.logic.last_result is not None
        self.ui.reanalyzeButton.enabled = hasResult and self.logic.range_node() is not None
        self.ui.saveTrainingCaseButton.enabled = hasResult

    def showResult(self, result) -> None:
        """Verdict, grade, joints, probability and range, the result and slices
        tables, the warnings in the log; after an analysis the grades to save are set from it, the lesion
        segmentation to save too (unless a corrected one is chosen), the layout
        switches and the views show the range's middle slice."""
        MSKAIModuleWidgetMixin.showResult(self, result)
        texts = panel_texts(result)
        self.ui.verdictLabel.text = texts["verdict"]
        self.ui.gradeLabel.text = texts["grade"]
        self.ui.sideGradesLabel.text = texts["sides"]
        self.ui.scoreLabel.text = texts["probability"]
        self.ui.rangeLabel.text = texts["range"]
        self.ui.slicesTableView.setMRMLTableNode(self.logic.slices_table_node() if result else None)
        if not result:
            return
        for warning in result.get("warnings") or []:
            self.appendLog(_("Warning: {warning}").format(warning=warning))
        sideGrades = result.get("side_grades") or {}
        self.ui.gradeLeftSpinBox.value = int(sideGrades.get("left", 0))
        self.ui.gradeRightSpinBox.value = int(sideGrades.get("right", 0))
        if self._parameterNode:
            self._parameterNode.lesionSegmentation = self.logic.preferred_lesion_segmentation(
                self._parameterNode.lesionSegmentation)
        self.showModuleLayout()
        slices = result.get("slices") or []
        if slices:
            self.logic.jump_to_slice(len(slices) // 2)

    # ---- the range and the slices -----------------------------------------------------

    def onReanalyzeButton(self) -> None:
        """Analyse again on the range the box covers now (``range_source: "user"``)."""
        if self._job is not None:
            return
        if self._parameterNode.inputVolume is not self.logic.last_input_node:
            slicer.util.warningDisplay(_(
                "The range box belongs to the CT analysed last. Select that CT again, or press Analyze "
                "for the selected one."), windowTitle=_("Re-analyse on this range"))
            return
        with slicer.util.tryWithErrorDisplay(_("The range could not be read."), waitCursor=False):
            rangeMm = self.logic.range_of_roi()
        self._requestedRange = rangeMm
        try:
            self.onApplyButton()
        finally:
            self._requestedRange = None
        self.appendLog(_("Range set by you: z {low:.1f} to {high:.1f} mm (LPS).").format(low=rangeMm[0],
                                                                                          high=rangeMm[1]))

    def onSlicesTableSelectionChanged(self) -> None:
        """Show the analysed slice of the selected row in the slice views."""
        view = self.ui.slicesTableView
        indexes = view.selectionModel().selectedIndexes()
        if not indexes or self.logic.last_result is None:
            return
        row = self.logic.slices_table_row(view.sortFilterProxyModel().mapToSource(indexes[0]).row())
        if row < 0:
            return
        with slicer.util.tryWithErrorDisplay(_("The slice could not be shown."), waitCursor=False):
            self.logic.jump_to_slice(row)

    # ---- "Save as training case" -------------------------------------------------------

    def onSaveTrainingCaseButton(self) -> None:
        folder = self.ui.datasetPathLineEdit.currentPath
        if not folder:
            slicer.util.warningDisplay(_("Choose the dataset folder first (it is created when absent)."),
                                       windowTitle=_("Save as training case"))
            return
        split = self.ui.splitComboBox.currentText
        lesion = self._parameterNode.lesionSegmentation
        with slicer.util.tryWithErrorDisplay(_("The training case was not saved."), waitCursor=True):
            saved = self.logic.save_training_case(
                folder, case_id=self.ui.caseIdLineEdit.text.strip() or None,
                grade_left=int(self.ui.gradeLeftSpinBox.value), grade_right=int(self.ui.gradeRightSpinBox.value),
                split=None if split == NO_SPLIT else split, lesion_segmentation_node=lesion,
                include_lesion=lesion is not None)
            self.appendLog(_("Saved training case {case} (left {left}, right {right}, range {range} mm) "
                             "into {csv}").format(case=saved.case_id, left=saved.row["grade_left"],
                                                  right=saved.row["grade_right"], range=saved.row["range_mm"],
                                                  csv=saved.csv_path))
            self.ui.caseIdLineEdit.text = ""


#
# SacroiliitisCTTest
#


class SacroiliitisCTTest(ScriptedLoadableModuleTest):
    """The same checks as CI's pytest suites (Testing/test_sacroiliitisct_logic.py and
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
        """The sacroiliitis phantom of the demo (left grade 3, right grade 2) and its bone
        segmentation, analysed with the demo bundle: the verdict, the tables, the range
        box, the heatmap, the evidence points and the lesion segmentation, jumping to a
        slice, re-analysis on a moved range, a corrected lesion kept, "Save as training
        case" read back, and cancel."""
        from mskai_slicer.dependencies import testing_skip_reason

        # Checked before anything imports torch; a self-test never installs
        # packages (the Analyze button asks the user to).
        skipReason = testing_skip_reason(testing=True)
        if skipReason:
            self.skipTest(skipReason)
        from mskai.errors import ModelError
        from mskai.sij import TASK

        try:
            TASK.demo_model()
        except ModelError as missing:
            self.skipTest(f"Skipped the analysis test: {missing}")
        from mskai_slicer.module_checks import run_module_checks
        from SacroiliitisCTLib.checks import run_sacroiliitisct_checks

        self.delayDisplay("Analyzing a phantom pelvic CT with sacroiliitis")
        logic = SacroiliitisCTLogic()
        run_module_checks(logic)
        result = run_sacroiliitisct_checks(logic=logic)
        self.assertEqual(result["verdict"], "sacroiliitis")
        self.delayDisplay("Test passed")
