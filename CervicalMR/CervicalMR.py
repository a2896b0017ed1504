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
<p>Reports, per cervical level (C2-C7 and discs C2/3-C6/7), vertebral hyperplasia,
spondylolisthesis, disc herniation, and thickening of the posterior longitudinal ligament and
of the ligamentum flavum, from the sagittal T1, sagittal T2 and axial T2 series of one study;
the segmentations open in the Segment Editor for correction.</p>
<p>Method: Zhu Yifeng, Li Yushi, Sun Zhaonan et al., <i>A preliminary study on establishing
MRI diagnosis model of cervical spondylosis based on deep learning</i>, Radiologic Practice
2024;39(6):779-787 (in Chinese), DOI 10.13609/j.cnki.1000-0313.2024.06.011.</p>
<p><b>Not available yet:</b> this version of MSKAI does not contain the analysis. Until it
lands, the module is hidden from the module list (open it from the Python console with
<code>slicer.util.selectModule("CervicalMR")</code>), and the Analyze button reports that the analysis
is not available yet and creates nothing.</p>
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
    sagittalT1Volume, sagittalT2Volume, axialT2Volume - the three series of one study.
    modelPath - model bundle folder; empty for the task's installed or demonstration bundle.
    device - where the networks run.
    """

    sagittalT1Volume: vtkMRMLScalarVolumeNode
    sagittalT2Volume: vtkMRMLScalarVolumeNode
    axialT2Volume: vtkMRMLScalarVolumeNode
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"


#
# CervicalMRWidget
#


class CervicalMRWidget(MSKAIModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel; its behaviour is in :class:`mskai_slicer.module_widget.MSKAIModuleWidgetMixin`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupPanel(CervicalMRLogic(), CervicalMRParameterNode)

    def missingInputs(self) -> list[str]:
        chosen = {_("sagittal T1"): self._parameterNode.sagittalT1Volume,
                  _("sagittal T2"): self._parameterNode.sagittalT2Volume,
                  _("axial T2"): self._parameterNode.axialT2Volume}
        return [name for name, node in chosen.items() if not node]

    def analysisArguments(self) -> dict:
        return {"sagittal_t1_node": self._parameterNode.sagittalT1Volume,
                "sagittal_t2_node": self._parameterNode.sagittalT2Volume,
                "axial_t2_node": self._parameterNode.axialT2Volume}


#
# CervicalMRTest
#


class CervicalMRTest(ScriptedLoadableModuleTest):
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

        self.delayDisplay("Analyzing a phantom cervical MR study")
        logic = CervicalMRLogic()
        with self.assertRaises(NotAvailableError) as raised:
            logic.analyze(**phantom_inputs("CervicalMR"))
        self.assertIn("not available yet", str(raised.exception))
        run_module_checks(logic)
        self.delayDisplay("Test passed")
