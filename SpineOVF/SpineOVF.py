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
from SpineOVFLib import SpineOVFLogic  # noqa: E402


#
# SpineOVF
#


class SpineOVF(ScriptedLoadableModule):
    """Osteoporotic vertebral fracture detection on CT (CNN + LSTM)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Spine OVF")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "MSKAI")]
        self.parent.dependencies = []
        self.parent.contributors = ["MSKAI developers"]
        self.parent.helpText = _("""
<p>Detects osteoporotic vertebral fractures on a chest, abdomen or pelvis CT. The CT is
reformatted to sagittal slices with its true spacing; the central 5% of them, centred on the
spine's left-right position (found from the bone, else the image centre with a warning), are
read by a ResNet34 slice encoder, and an LSTM (or max, mean or vote) over the slices gives the
scan's fracture probability; 0.5 or more means <b>fracture</b>.</p>
<p><b>Analyze</b> runs in the background (Cancel stops it) and shows the verdict and probability,
a table of every analysed sagittal slice with its probability, the occlusion-sensitivity heatmap
of the three most suspicious slices over the CT, and a Markups point at the strongest evidence,
labelled with its vertebral level when a vertebra segmentation (segments named T12, L1, ... or
vertebrae_L1 as TotalSegmentator names them) is selected. <b>Explain this slice</b> computes the
heatmap of any analysed sagittal slice (type its number or take the slice shown in the sagittal
view). <b>Save result</b> writes result.json, the heatmap and the overlay images to a folder.
Automatic vertebra labelling is not available yet in MSKAI: to name the level, select a
segmentation, e.g. from TotalSegmentator.</p>
<p>Method: Mao Xiaohui, <i>Automatic Detection Method for Osteoporosis Based on Deep Neural
Networks</i>, Computer Science and Application 2025;15(10):240-250 (in Chinese),
DOI 10.12677/csa.2025.1510264.</p>
<p>Demonstration models are trained on synthetic data and are not for clinical use.</p>
""")
        self.parent.acknowledgementText = _("""
The method is the one published by the paper's author; this implementation is independent.
MSKAI is built on 3D Slicer, PyTorch, MONAI, SimpleITK and pydicom.
""")


#
# SpineOVFParameterNode
#


@parameterNodeWrapper
class SpineOVFParameterNode:
    """
    inputVolume - the CT that contains the spine.
    vertebraSegmentation - optional, one segment per vertebra (T12, L1, ...) to name the level.
    modelPath - model bundle folder; empty for the task's installed or demonstration bundle.
    device - where the network runs.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    vertebraSegmentation: vtkMRMLSegmentationNode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"


#
# SpineOVFWidget
#


class SpineOVFWidget(MSKAIModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel; the shared behaviour is in :class:`mskai_slicer.module_widget.MSKAIModuleWidgetMixin`,
    this class adds the slices table and "Explain this slice"."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupPanel(SpineOVFLogic(), SpineOVFParameterNode)
        self.ui.explainButton.connect("clicked(bool)", self.onExplainButton)
        self.ui.sliceFromViewButton.connect("clicked(bool)", self.onSliceFromViewButton)

    def missingInputs(self) -> list[str]:
        return [] if self._parameterNode.inputVolume else [_("spine CT")]

    def analysisArguments(self) -> dict:
        return {"input_volume_node": self._parameterNode.inputVolume,
                "vertebra_segmentation_node": self._parameterNode.vertebraSegmentation}

    def updateButtons(self, caller=None, event=None) -> None:
        MSKAIModuleWidgetMixin.updateButtons(self, caller, event)
        canExplain = self._job is None and self.logic.can_explain
        self.ui.explainSliceSpinBox.enabled = canExplain
        self.ui.sliceFromViewButton.enabled = canExplain
        self.ui.explainButton.enabled = canExplain

    def showResult(self, result) -> None:
        """The shared verdict, probability and result table, then the slices
        table; the slice number is set to the explained (or most suspicious)
        slice and the views jump to the evidence point."""
        MSKAIModuleWidgetMixin.showResult(self, result)
        self.ui.slicesTableView.setMRMLTableNode(self.logic.slices_table_node() if result else None)
        if not result:
            return
        evidence = result.get("evidence") or []
        index = evidence[0]["slice_index"] if evidence else self.logic.most_suspicious_slice_index()
        if index is not None:
            self.ui.explainSliceSpinBox.value = index
        evidenceNode = self.logic.evidence_node()
        if evidenceNode is not None:
            slicer.modules.markups.logic().JumpSlicesToNthPointInMarkup(evidenceNode.GetID(), 0, True)

    def onSliceFromViewButton(self) -> None:
        """Take the analysed slice nearest to the plane shown in the sagittal (Yellow) view."""
        with slicer.util.tryWithErrorDisplay(_("No analysed slice was found."), waitCursor=False):
            sliceToRAS = slicer.app.layoutManager().sliceWidget("Yellow").mrmlSliceNode().GetSliceToRAS()
            r, a, s = (sliceToRAS.GetElement(row, 3) for row in range(3))
            self.ui.explainSliceSpinBox.value = self.logic.slice_index_at([-r, -a, s])

    def onExplainButton(self) -> None:
        """Explain the chosen slice in the background (Analyze becomes Cancel meanwhile)."""
        if self._job is not None:
            return
        index = self.ui.explainSliceSpinBox.value
        with slicer.util.tryWithErrorDisplay(_("The slice could not be explained."), waitCursor=True):
            self._job = self.logic.explain_slice_async(index)
            self.appendLog(_("Explaining sagittal slice {index}...").format(index=index))
            self._pollTimer.start()
        self.updateButtons()


#
# SpineOVFTest
#


class SpineOVFTest(ScriptedLoadableModuleTest):
    """The same checks as CI's pytest suites (Testing/test_spineovf_logic.py and
    Testing/test_module_logic.py), on the application's scene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SlicerHelpers()
        self.setUp()
        self.test_AnalysisOnPhantom()

    def test_SlicerHelpers(self):
        """Volume geometry, result nodes and the subject hierarchy, on real MRML nodes."""
        from mskai_slicer.testing import run_all_checks

        self.delayDisplay("Checking the shared Slicer helpers")
        run_all_checks()
        self.delayDisplay("Test passed")

    def test_AnalysisOnPhantom(self):
        """A phantom spine CT with a fracture (the demo's seed) and its vertebra
        segmentation, analysed with the demo bundle: the verdict, the tables, the
        heatmap, the evidence point named by level, re-run, "Explain this slice",
        saving and cancel."""
        from mskai_slicer.module_checks import run_module_checks
        from SpineOVFLib.checks import run_spineovf_checks

        self.delayDisplay("Analyzing a phantom spine CT with a fracture")
        logic = SpineOVFLogic()
        run_module_checks(logic)
        result = run_spineovf_checks(logic=logic)
        self.assertEqual(result["verdict"], "fracture")
        self.delayDisplay("Test passed")
