import os
import sys

import qt
import vtk

import slicer
from slicer.i18n import tr as _

from SegmentEditorEffects import *

# From a source checkout, CervicalMRLib is in the folder above this effect module and
# mskai one further up; an installed extension has them all beside this module.
_cervicalFolder = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _folder in (_cervicalFolder, os.path.dirname(_cervicalFolder)):
    if (os.path.isdir(os.path.join(_folder, "CervicalMRLib")) or os.path.isdir(os.path.join(_folder, "mskai"))) \
            and _folder not in sys.path:
        sys.path.append(_folder)

# (parameter value, text shown): the findings of the paper, herniation with its type.
FINDING_CHOICES = (
    ("hyperplasia", _("Hyperplasia (osteophyte) - vertebra, 10 px")),
    ("slip", _("Slip (spondylolisthesis) - vertebra, 10 px")),
    ("herniation", _("Disc herniation - disc, 10 px")),
    ("herniation (central)", _("Disc herniation, central - disc, 10 px")),
    ("herniation (paracentral)", _("Disc herniation, paracentral - disc, 10 px")),
    ("herniation (foraminal)", _("Disc herniation, foraminal - disc, 10 px")),
    ("PLL thickening", _("PLL thickening - 3 px")),
    ("LF thickening", _("LF thickening - 3 px")),
)


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """CervicalMR's "Finding point": a click paints a dot of the paper's diameter
    into the chosen finding's segment, on the source volume's slice under the
    cursor (CervicalMRLib.annotation.paint_finding_dot does the painting)."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Finding point"
        scriptedEffect.title = _("Finding point")
        scriptedEffect.perSegment = False  # the finding, not the selected segment, names the segment
        scriptedEffect.requireSegments = False  # the finding's segment is created on the first click
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)

    def clone(self):
        # It should not be necessary to modify this method
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        # It should not be necessary to modify this method
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        if os.path.exists(iconPath):
            return qt.QIcon(iconPath)
        return qt.QIcon()

    def helpText(self):
        return "<html>" + _("""Mark a finding with a dot, as in the paper's annotation protocol.<br>
Pick the finding, then click in a slice view: a dot of the paper's diameter (10 pixels for hyperplasia, slip
and herniation, at the centre of the vertebra or of the herniated disc; 3 pixels on a thickened PLL or LF) is
painted into the segment "finding: ..." on the source volume's slice under the cursor. Undo removes a dot.
Markups points whose label names the finding are accepted too (Cervical MR module).""") + "</html>"

    def setupOptionsFrame(self):
        self.findingComboBox = qt.QComboBox()
        for value, text in FINDING_CHOICES:
            self.findingComboBox.addItem(text, value)
        self.findingComboBox.setToolTip(_("The finding the next click marks"))
        self.scriptedEffect.addLabeledOptionsWidget(_("Finding:"), self.findingComboBox)
        self.findingComboBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)

        self.lastDotLabel = qt.QLabel("")
        self.lastDotLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.lastDotLabel)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Finding", "hyperplasia")

    def updateGUIFromMRML(self):
        index = self.findingComboBox.findData(self.scriptedEffect.parameter("Finding"))
        wasBlocked = self.findingComboBox.blockSignals(True)
        self.findingComboBox.setCurrentIndex(max(index, 0))
        self.findingComboBox.blockSignals(wasBlocked)

    def updateMRMLFromGUI(self):
        self.scriptedEffect.setParameter("Finding", self.findingComboBox.currentData)

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        abortEvent = False
        if viewWidget.className() != "qMRMLSliceWidget":
            return abortEvent
        if (eventId != vtk.vtkCommand.LeftButtonPressEvent or callerInteractor.GetShiftKey()
                or callerInteractor.GetControlKey() or callerInteractor.GetAltKey()):
            return abortEvent
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        sourceVolumeNode = parameterSetNode.GetSourceVolumeNode()
        if segmentationNode is None or sourceVolumeNode is None:
            return abortEvent
        abortEvent = True  # the click is ours: no window/level drag after it

        from CervicalMRLib.annotation import paint_finding_dot, view_normal_ras
        from mskai.errors import MskaiError

        xy = callerInteractor.GetEventPosition()
        pointRas = self.xyToRas(xy, viewWidget)
        normalRas = view_normal_ras(viewWidget.mrmlSliceNode())
        finding = self.scriptedEffect.parameter("Finding") or "hyperplasia"

        def modify(segmentation, segmentId, dotLabelmap):
            self.scriptedEffect.saveStateForUndo()
            self.scriptedEffect.modifySegmentByLabelmap(segmentation, segmentId, dotLabelmap,
                                                        slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd)

        try:
            facts = paint_finding_dot(segmentationNode, sourceVolumeNode, pointRas, normalRas, finding,
                                      modify=modify, reference=self.scriptedEffect.sourceVolumeImageData())
        except (MskaiError, ValueError) as error:  # a point outside the volume, an unknown finding
            slicer.util.errorDisplay(_("The dot could not be painted: {reason}").format(reason=error))
            return abortEvent
        self.lastDotLabel.text = _("{name}: {voxels} voxels on slice {index} ({axis} axis)").format(
            name=facts["segment_name"], voxels=facts["voxels"], index=facts["slice_index"], axis=facts["axis"])
        return abortEvent
