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
from mskai_slicer.outputs import nodes_of_class  # noqa: E402
from mskai_slicer.views import SAGITTAL_TOLERANCE_DEGREES, sagittal_slice_node, slice_plane_point_lps  # noqa: E402
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
        self.parent.contributors = ["MSKAI developers (MSKAI open-source project)"]
        self.parent.helpText = _("""
<p>Detects osteoporotic vertebral fractures on a chest, abdomen or pelvis CT. The CT is
reformatted to sagittal slices with its true spacing; the central 5% of them, centred on the
spine's left-right position (found from the bone, else the image centre with a warning), are
read by a ResNet34 slice encoder, and an LSTM (or max, mean or vote) over the slices gives the
scan's fracture probability; 0.5 or more means <b>fracture</b>.</p>
<p><b>Analyze</b> runs in a separate MSKAI worker process (Cancel stops it at once) and shows the verdict and probability,
a table of every analysed sagittal slice with its probability, the occlusion-sensitivity heatmap
of the three most suspicious slices over the CT, and a Markups point at the strongest evidence,
labelled with its vertebral level when a vertebra segmentation (segments named T12, L1, ... or
vertebrae_L1 as TotalSegmentator names them) is selected. <b>Explain this slice</b> computes the
heatmap of any analysed sagittal slice (type its number or take the slice shown in the sagittal
view). <b>Save result</b> writes result.json, the heatmap and the overlay images to a folder.
Automatic vertebra labelling is not available yet in MSKAI: to name the level, select a
segmentation, e.g. from TotalSegmentator.</p>
<p><b>Views</b>: when a result is shown the layout switches to one large sagittal view (Yellow),
where a fracture is read; any layout can be chosen again from the toolbar. The heatmap's low
values are transparent, so the CT keeps its grey values where there is no evidence.
<b>Slice from view</b> uses the slice view of the layout that shows a sagittal plane (within
{tolerance:g} degrees) and says so when none does. The results are placed beside the CT in the
Data module (in its study, its folder or at the top level); the CT itself is not moved.</p>
<p><b>Model</b> lists this task's shipped and installed model bundles (version, demonstration or
trained, checksums verified); <b>Install from folder</b> or <b>archive</b> checks a bundle's
checksums and installs it into your models folder.</p>
<p><b>Sample data</b>: the Sample Data module's MSKAI section offers a fracture and a normal
phantom spine CT with its vertebra segmentation, generated on this computer on first use
(nothing is downloaded).</p>
<p>Method: Mao Xiaohui, <i>Automatic Detection Method for Osteoporosis Based on Deep Neural
Networks</i>, Computer Science and Application 2025;15(10):240-250 (in Chinese),
DOI 10.12677/csa.2025.1510264.</p>
<p><b>Training data</b>: right under the verdict the panel says whether the input looks like the
data the model was trained on (red: it does not, and the verdict is not reliable on it; grey: the
bundle records no summary to compare with), with a demonstration model's disclaimer; the result
table gives the distance and threshold, per network where there are several.</p>
<p>Demonstration models are trained on synthetic data and are not for clinical use.</p>
""").format(tolerance=SAGITTAL_TOLERANCE_DEGREES)
        self.parent.acknowledgementText = _("""
The method is the one published by the paper's author; this implementation is independent.
MSKAI is built on 3D Slicer, PyTorch, MONAI, SimpleITK and pydicom.
""")
        # The phantoms in the Sample Data module, once the application has started.
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The SpineOVF phantoms in the Sample Data module (generated on first use)."""
    from mskai_slicer.sample_data import register_sample_data

    def show(nodes) -> None:
        slicer.util.setSliceViewerLayers(background=nodes[0], foreground=None, fit=True)

    register_sample_data("SpineOVF", os.path.join(os.path.dirname(__file__), "Resources", "Icons", "SpineOVF.png"),
                         on_loaded=show)


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
        self.showModuleLayout()
        evidenceNode = self.logic.evidence_node()
        if evidenceNode is not None:
            slicer.modules.markups.logic().JumpSlicesToNthPointInMarkup(evidenceNode.GetID(), 0, True)

    def onSliceFromViewButton(self) -> None:
        """Take the analysed slice nearest to the plane of the layout's sagittal
        slice view (:func:`mskai_slicer.views.sagittal_slice_node`)."""
        sliceNode = sagittal_slice_node(nodes_of_class(slicer.mrmlScene, "vtkMRMLSliceNode"))
        if sliceNode is None:
            slicer.util.warningDisplay(_(
                "No slice view of the current layout shows a sagittal plane. Choose a layout with a "
                "sagittal view (e.g. Conventional, or Yellow slice only) or set a view to Sagittal, then "
                "try again."), windowTitle=_("Slice from view"))
            return
        with slicer.util.tryWithErrorDisplay(_("No analysed slice was found."), waitCursor=False):
            self.ui.explainSliceSpinBox.value = self.logic.slice_index_at(slice_plane_point_lps(sliceNode))

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
        """A phantom spine CT with a fracture (the demo's seed) and its vertebra
        segmentation, analysed with the demo bundle: the verdict, the tables, the
        heatmap, the evidence point named by level, re-run, "Explain this slice",
        saving and cancel."""
        from mskai_slicer.dependencies import testing_skip_reason

        # Checked before anything imports torch; a self-test never installs
        # packages (the Analyze button asks the user to).
        skipReason = testing_skip_reason(testing=True)
        if skipReason:
            self.skipTest(skipReason)
        from mskai_slicer.module_checks import run_module_checks
        from SpineOVFLib.checks import run_spineovf_checks

        self.delayDisplay("Analyzing a phantom spine CT with a fracture")
        logic = SpineOVFLogic()
        run_module_checks(logic)
        result = run_spineovf_checks(logic=logic)
        self.assertEqual(result["verdict"], "fracture")
        self.delayDisplay("Test passed")
