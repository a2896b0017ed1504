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

LEVELS = ("C2/3", "C3/4", "C4/5", "C5/6", "C6/7", "C7/T1")


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """CervicalMR's "Disc level": a click assigns the chosen level to the axial
    slice (axial view) or the disc (other views) under the cursor; "Accept
    automatic" stores the automatic assignment.  The levels live in a tag of the
    segmentation's "disc levels" segment (CervicalMRLib.annotation)."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Disc level"
        scriptedEffect.title = _("Disc level")
        scriptedEffect.perSegment = False  # the levels belong to the segmentation, not to a segment
        scriptedEffect.requireSegments = False
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
        return "<html>" + _("""Name the disc levels C2/3 ... C6/7 (and C7/T1).<br>
Pick a level and click: in an axial view the source volume's slice under the cursor gets the level (one level
per slice; clicking again replaces it), in a sagittal or coronal view the disc under the cursor does.
<b>Accept automatic</b> stores the levels found by the Cervical MR analysis, except on slices you have
assigned. The levels are saved with the segmentation (.seg.nrrd).""") + "</html>"

    def setupOptionsFrame(self):
        self.levelComboBox = qt.QComboBox()
        for level in LEVELS:
            self.levelComboBox.addItem(level, level)
        self.levelComboBox.setToolTip(_("The level the next click assigns"))
        self.scriptedEffect.addLabeledOptionsWidget(_("Level:"), self.levelComboBox)
        self.levelComboBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)

        self.acceptAutomaticButton = qt.QPushButton(_("Accept automatic"))
        self.acceptAutomaticButton.objectName = self.__class__.__name__ + "AcceptAutomatic"
        self.acceptAutomaticButton.setToolTip(_("Store the automatic disc levels (slices you assigned are kept)"))
        self.scriptedEffect.addOptionsWidget(self.acceptAutomaticButton)
        self.acceptAutomaticButton.connect("clicked()", self.onAcceptAutomatic)

        self.levelsLabel = qt.QLabel("")
        self.levelsLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.levelsLabel)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Level", "C3/4")

    def updateGUIFromMRML(self):
        index = self.levelComboBox.findData(self.scriptedEffect.parameter("Level"))
        wasBlocked = self.levelComboBox.blockSignals(True)
        self.levelComboBox.setCurrentIndex(max(index, 0))
        self.levelComboBox.blockSignals(wasBlocked)
        self.showLevels()

    def updateMRMLFromGUI(self):
        self.scriptedEffect.setParameter("Level", self.levelComboBox.currentData)

    def showLevels(self):
        from CervicalMRLib.annotation import disc_levels, proposed_disc_levels

        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if segmentationNode is None:
            self.levelsLabel.text = ""
            self.acceptAutomaticButton.enabled = False
            return
        lines = []
        for entry in disc_levels(segmentationNode):
            where = _("slice {index} of {stack}") if entry["kind"] == "slice" else _("disc on {stack}")
            lines.append("{level}: {where} ({source})".format(
                level=entry["level"], where=where.format(index=entry["slice_index"], stack=entry["stack"]),
                source=entry["source"]))
        self.levelsLabel.text = "\n".join(lines) or _("No disc level assigned yet.")
        self.acceptAutomaticButton.enabled = bool(proposed_disc_levels(segmentationNode))

    def onAcceptAutomatic(self):
        from CervicalMRLib.annotation import accept_automatic_disc_levels

        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if segmentationNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("The automatic disc levels could not be stored."), waitCursor=True):
            self.scriptedEffect.saveStateForUndo()
            accept_automatic_disc_levels(segmentationNode)
        self.showLevels()

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
        abortEvent = True

        from CervicalMRLib.annotation import assign_disc_level, view_normal_ras
        from mskai.errors import MskaiError

        pointRas = self.xyToRas(callerInteractor.GetEventPosition(), viewWidget)
        normalRas = view_normal_ras(viewWidget.mrmlSliceNode())
        try:
            self.scriptedEffect.saveStateForUndo()
            assign_disc_level(segmentationNode, self.scriptedEffect.parameter("Level") or "C3/4",
                              sourceVolumeNode, pointRas, normalRas)
        except (MskaiError, ValueError) as error:
            slicer.util.errorDisplay(_("The level could not be assigned: {reason}").format(reason=error))
            return abortEvent
        self.showLevels()
        return abortEvent
