import os
import sys
from typing import Annotated

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

from mskai.errors import NotAvailableError  # noqa: E402
from mskai.tasks import PlaceholderTask, task_for_module  # noqa: E402
from mskai_slicer.module_widget import DEVICE_CHOICES, MSKAIModuleWidgetMixin  # noqa: E402
from SacroiliitisCTLib import SacroiliitisCTLogic  # noqa: E402


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
        # Hidden from the module list while its analysis has not landed (a placeholder task).
        self.parent.hidden = isinstance(task_for_module("SacroiliitisCT"), PlaceholderTask)
        self.parent.helpText = _("""
<p>Grades sacroiliitis (grade 0-3, positive from grade 2) on an axial pelvic CT and shows
where the evidence is: per-slice grades over a range of slices through the middle and lower
sacroiliac joint space, a lesion heatmap and a result table.</p>
<p>Method: MS-2.5D-Net (a ResNet34 whose first convolution reads 5 consecutive slices,
ASPP blocks and a residual feature pyramid), from Zhang Lei, <i>A CT Image Recognition
Method for Sacroiliitis Based on Deep Learning</i> (in Chinese), DOI 10.61369/MRP.2025100011.</p>
<p><b>Not available yet:</b> this version of MSKAI does not contain the analysis. Until it
lands, the module is hidden from the module list (open it from the Python console with
<code>slicer.util.selectModule("SacroiliitisCT")</code>), and the Analyze button reports that the analysis
is not available yet and creates nothing.</p>
<p>Demonstration models are trained on synthetic data and are not for clinical use.</p>
""")
        self.parent.acknowledgementText = _("""
The method is the one published by the paper's author; this implementation is independent.
MSKAI is built on 3D Slicer, PyTorch, MONAI, SimpleITK and pydicom.
""")


#
# SacroiliitisCTParameterNode
#


@parameterNodeWrapper
class SacroiliitisCTParameterNode:
    """
    inputVolume - the axial pelvic CT.
    modelPath - model bundle folder; empty for the task's installed or demonstration bundle.
    device - where the network runs.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"


#
# SacroiliitisCTWidget
#


class SacroiliitisCTWidget(MSKAIModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel; its behaviour is in :class:`mskai_slicer.module_widget.MSKAIModuleWidgetMixin`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupPanel(SacroiliitisCTLogic(), SacroiliitisCTParameterNode)

    def missingInputs(self) -> list[str]:
        return [] if self._parameterNode.inputVolume else [_("pelvic CT")]

    def analysisArguments(self) -> dict:
        return {"input_volume_node": self._parameterNode.inputVolume}


#
# SacroiliitisCTTest
#


class SacroiliitisCTTest(ScriptedLoadableModuleTest):
    """The same checks as CI's pytest suite (Testing/test_module_logic.py), on the application's scene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SlicerHelpers()
        self.setUp()
        self.test_AnalyzeSaysNotAvailable()

    def test_SlicerHelpers(self):
        """Volume geometry, result nodes and the subject hierarchy, on real MRML nodes."""
        from mskai_slicer.testing import run_all_checks

        self.delayDisplay("Checking the shared Slicer helpers")
        run_all_checks()
        self.delayDisplay("Test passed")

    def test_AnalyzeSaysNotAvailable(self):
        """Until the analysis lands, Analyze answers "not available yet" and leaves nothing behind."""
        from mskai_slicer.module_checks import phantom_inputs, run_module_checks

        self.delayDisplay("Analyzing a phantom pelvic CT")
        logic = SacroiliitisCTLogic()
        with self.assertRaises(NotAvailableError) as raised:
            logic.analyze(**phantom_inputs("SacroiliitisCT"))
        self.assertIn("not available yet", str(raised.exception))
        run_module_checks(logic)
        self.delayDisplay("Test passed")
