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
from mskai_slicer.module_widget import DEVICE_CHOICES, MSKAIModuleWidgetMixin  # noqa: E402
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
        self.parent.contributors = ["MSKAI developers"]
        self.parent.helpText = _("""
<p>Checks the quality of a wrist anteroposterior or lateral radiograph and gives a 100-point
score with a grade (A-D) and the reason for every lost point: DICOM basic information (34),
the L/R side marker (20), foreign-object artefacts (10) and the layout of the wrist from
detected keypoints (36), shown as Markups points.</p>
<p>Method: a deep-learning automatic quality-control system for wrist digital radiography (DR)
with a MobileNetV2 artefact classifier and GU2Net keypoint detection, developed on 1,315
wrist images at the Central Hospital Affiliated to Chongqing University (in Chinese).</p>
<p><b>Not available yet:</b> this version of MSKAI does not contain the analysis. Until it
lands, the Analyze button reports that the analysis is not available yet and creates nothing.</p>
<p>Demonstration models are trained on synthetic data and are not for clinical use.</p>
""")
        self.parent.acknowledgementText = _("""
The method is the one published by the paper's authors; this implementation is independent.
MSKAI is built on 3D Slicer, PyTorch, MONAI, SimpleITK and pydicom.
""")


#
# WristQCParameterNode
#


@parameterNodeWrapper
class WristQCParameterNode:
    """
    inputVolume - the wrist radiograph (a single-slice volume).
    modelPath - model bundle folder; empty for the task's installed or demonstration bundle.
    device - where the networks run.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"


#
# WristQCWidget
#


class WristQCWidget(MSKAIModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel; its behaviour is in :class:`mskai_slicer.module_widget.MSKAIModuleWidgetMixin`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupPanel(WristQCLogic(), WristQCParameterNode)

    def missingInputs(self) -> list[str]:
        return [] if self._parameterNode.inputVolume else [_("wrist radiograph")]

    def analysisArguments(self) -> dict:
        return {"input_volume_node": self._parameterNode.inputVolume}


#
# WristQCTest
#


class WristQCTest(ScriptedLoadableModuleTest):
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

        self.delayDisplay("Analyzing a phantom wrist radiograph")
        logic = WristQCLogic()
        with self.assertRaises(NotAvailableError) as raised:
            logic.analyze(**phantom_inputs("WristQC"))
        self.assertIn("not available yet", str(raised.exception))
        run_module_checks(logic)
        self.delayDisplay("Test passed")
