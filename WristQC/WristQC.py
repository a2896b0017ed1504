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

from mskai_slicer.markups_edits import PointEditWatcher  # noqa: E402
from mskai_slicer.module_widget import DEVICE_CHOICES, MSKAIModuleWidgetMixin  # noqa: E402
from mskai_slicer.views import module_layout  # noqa: E402
from WristQCLib import WristQCLogic  # noqa: E402


#
# WristQC
#


class WristQC(ScriptedLoadableModule):
    """Wrist radiograph quality control."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Wrist QC")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MSKAI")]
        self.parent.dependencies = []
        self.parent.contributors = ["MSKAI developers (MSKAI open-source project)"]
        self.parent.helpText = _("""
<p>Checks the quality of a wrist anteroposterior (AP/PA) or lateral radiograph and gives a
100-point score with a grade (A 90-100, B 80-89, C 60-79, D below 60) and the reason for every
lost point: DICOM basic information (17 items x 2 = 34), the L/R lead side marker (20),
foreign-object artefacts such as rings or watches (10) and the layout of the wrist measured from
detected keypoints (36).</p>
<p><b>Load radiograph file</b> reads a DX/CR DICOM file (MONOCHROME1 is inverted once), or a
PNG/JPEG (no DICOM header: the tag part scores 0 and the pixel spacing is assumed). The view
comes from the DICOM tags when they name it, otherwise from a view classifier. <b>Analyze</b>
runs in a separate MSKAI worker process (Cancel stops it at once); a chest or other non-wrist image is refused unless
<i>Analyse even if it does not look like a wrist</i> is ticked. The results are a table of every
item with its points, measured value and reason, the keypoints as Markups points (drag one and
the layout is scored again when you release it; a keypoint that was not found can be placed, and
is scored when placed; a script moving a point is scored at once), an outline around the side
marker found and, when an artefact is found, its heatmap over the image (low values transparent,
so the radiograph keeps its grey values elsewhere). <b>Export report</b> writes result.json and
the HTML and PDF reports with the annotated image. Oblique and other wrist views are not
available yet: only AP/PA and lateral radiographs are scored.</p>
<p><b>Views</b>: loading a radiograph (here or from Sample Data) and showing a result switch the
layout to one large Red view, which shows the radiograph in its own plane; any layout can be
chosen again from the toolbar. The results are placed beside the radiograph in the Data module
(in its study, its folder or at the top level); the radiograph itself is not moved.</p>
<p><b>Model</b> lists this task's shipped and installed model bundles (version, demonstration or
trained, checksums verified); <b>Install from folder</b> or <b>archive</b> checks a bundle's
checksums and installs it into your models folder.</p>
<p><b>Sample data</b>: the Sample Data module's MSKAI section offers the demo's wrist phantoms
(an excellent AP, a poor lateral, an AP with a ring), generated on this computer on first use
(nothing is downloaded).</p>
<p>Method: a deep-learning automatic quality-control system for wrist digital radiography (DR)
with a MobileNetV2 artefact classifier and GU2Net keypoint detection, developed on 1,315
wrist images at the Central Hospital Affiliated to Chongqing University (in Chinese).</p>
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
        # The phantoms in the Sample Data module, once the application has started.
        slicer.app.connect("startupCompleted()", registerSampleData)


def showRadiograph(node) -> None:
    """The module's layout (one large Red view) showing ``node`` in its own plane."""
    slicer.app.layoutManager().setLayout(module_layout("WristQC"))
    slicer.util.setSliceViewerLayers(background=node, foreground=None, fit=True, rotateToVolumePlane=True)


def registerSampleData() -> None:
    """The WristQC phantoms in the Sample Data module (generated on first use), read
    as the panel reads a radiograph file."""
    from mskai_slicer.sample_data import register_sample_data

    register_sample_data("WristQC", os.path.join(os.path.dirname(__file__), "Resources", "Icons", "WristQC.png"),
                         load_image=lambda path, name: WristQCLogic().load_radiograph(path, name),
                         on_loaded=lambda nodes: showRadiograph(nodes[0]))


#
# WristQCParameterNode
#


@parameterNodeWrapper
class WristQCParameterNode:
    """
    inputVolume - the wrist radiograph (a single-slice volume).
    modelPath - folder holding the artifact, keypoints and view bundles; empty for the demonstration bundles.
    device - where the networks run.
    force - analyse an image that does not look like a wrist radiograph.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    force: bool = False


#
# WristQCWidget
#


class WristQCWidget(MSKAIModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel; the shared behaviour is in :class:`mskai_slicer.module_widget.MSKAIModuleWidgetMixin`,
    this class adds loading a file, the scores table, live re-scoring and the report export."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self._keypointWatcher = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupPanel(WristQCLogic(), WristQCParameterNode)
        self.ui.loadRadiographButton.connect("clicked(bool)", self.onLoadRadiographButton)
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReportButton)

    def cleanup(self) -> None:
        self.observeKeypoints(None)
        MSKAIModuleWidgetMixin.cleanup(self)

    def missingInputs(self) -> list[str]:
        return [] if self._parameterNode.inputVolume else [_("wrist radiograph")]

    def analysisArguments(self) -> dict:
        return {"input_volume_node": self._parameterNode.inputVolume, "force": self._parameterNode.force}

    def updateButtons(self, caller=None, event=None) -> None:
        MSKAIModuleWidgetMixin.updateButtons(self, caller, event)
        self.ui.exportReportButton.enabled = self._job is None and self.logic.last_analysis is not None

    def onLoadRadiographButton(self) -> None:
        """Read a DICOM, PNG or JPEG radiograph through mskai and make it the input."""
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Load a wrist radiograph"), "",
                                              _("Radiographs (*.dcm *.dicom *.png *.jpg *.jpeg);;All files (*)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("The radiograph could not be loaded."), waitCursor=True):
            node = self.logic.load_radiograph(path)
            self._parameterNode.inputVolume = node
            showRadiograph(node)
            self.appendLog(_("Loaded {name}").format(name=node.GetName()))

    def showResult(self, result) -> None:
        """The shared verdict, score and result table, then the scores table; the
        keypoints are observed so that moving one scores the layout again."""
        MSKAIModuleWidgetMixin.showResult(self, result)
        if result:
            self.showModuleLayout()
        hasParts = bool(result) and "parts" in result
        self.ui.scoresTableView.setMRMLTableNode(self.logic.scores_table_node() if hasParts else None)
        self.observeKeypoints(self.logic.keypoints_node() if hasParts else None)
        if hasParts:
            self.appendLog(self.logic.result_summary())

    def observeKeypoints(self, node) -> None:
        """Score the layout again after each finished edit of ``node``'s points: at
        the end of a drag, when a point is placed, at once for a script's change
        (:class:`mskai_slicer.markups_edits.PointEditWatcher`), not on every mouse move."""
        if self._keypointWatcher is not None:
            self._keypointWatcher.stop()
        self._keypointWatcher = PointEditWatcher(node, self.onKeypointsEdited) if node is not None else None

    def onKeypointsEdited(self, node) -> None:
        """A keypoint was moved, placed or unplaced: score the layout again."""
        if self._job is not None or self.logic.last_analysis is None:
            return
        with slicer.util.tryWithErrorDisplay(_("The layout could not be scored again."), waitCursor=False):
            result = self.logic.rescore_from_markups(node)
            MSKAIModuleWidgetMixin.showResult(self, result)
            self.ui.scoresTableView.setMRMLTableNode(self.logic.scores_table_node())

    def onExportReportButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export the report into folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("The report could not be exported."), waitCursor=True):
            written = self.logic.export_report(folder)
            self.appendLog(_("Wrote {count} files to {folder}").format(count=len(written), folder=folder))


#
# WristQCTest
#


class WristQCTest(ScriptedLoadableModuleTest):
    """The same checks as CI's pytest suites (Testing/test_wristqc_logic.py and
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
        """An excellent AP wrist phantom (the demo's seed) analysed with the demo
        bundles: the grade of its ground truth, the tables, keypoints, marker
        outline, a keypoint moved and the layout scored again, the report, re-run
        and the refusal of a CT volume."""
        from mskai_slicer.dependencies import testing_skip_reason

        # Checked before anything imports torch; a self-test never installs
        # packages (the Analyze button asks the user to).
        skipReason = testing_skip_reason(testing=True)
        if skipReason:
            self.skipTest(skipReason)
        from mskai_slicer.module_checks import run_module_checks
        from WristQCLib.checks import run_wristqc_checks

        self.delayDisplay("Analyzing a phantom wrist radiograph")
        logic = WristQCLogic()
        run_module_checks(logic)
        result = run_wristqc_checks(logic=logic)
        self.assertIn(result["grade"], ("A", "B", "C", "D"))
        self.delayDisplay("Test passed")
