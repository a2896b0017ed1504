import os

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest


class SegmentEditorMSKAIDiscLevel(ScriptedLoadableModule):
    """Hidden module that registers CervicalMR's "Disc level" Segment Editor effect
    (Slicer's ScriptedSegmentEditorEffect template)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Segment Editor: MSKAI disc level")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["MSKAI developers (MSKAI open-source project)"]
        self.parent.hidden = True
        self.parent.helpText = _("""This hidden module registers the "Disc level" Segment Editor effect of
MSKAI's Cervical MR module. Pick a level (C2/3 ... C6/7, C7/T1) and click an axial slice or a disc to assign it, or accept the automatic assignment; the levels are stored on the segmentation and saved with it.""")
        self.parent.acknowledgementText = _("""Annotation protocol of Zhu Yifeng, Li Yushi, Sun Zhaonan et al.,
Radiologic Practice 2024;39(6):779-787, DOI 10.13609/j.cnki.1000-0313.2024.06.011; this implementation is independent.""")
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
        effectFilename = os.path.join(os.path.dirname(__file__), self.__class__.__name__ + "Lib/SegmentEditorEffect.py")
        instance.setPythonSource(effectFilename.replace("\\", "/"))
        instance.self().register()


class SegmentEditorMSKAIDiscLevelTest(ScriptedLoadableModuleTest):
    """The effect is registered and can be made active in a Segment Editor; what its clicks
    do is tested by CervicalMRLib.annotation's checks (Testing/test_cervicalmr_annotation.py)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_EffectIsRegistered()

    def test_EffectIsRegistered(self):
        self.delayDisplay("Looking for the Disc level effect")
        registered = [effect.name for effect in slicer.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()]
        self.assertIn("Disc level", registered)
        segmentEditorWidget = slicer.qMRMLSegmentEditorWidget()
        segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        segmentEditorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        segmentEditorWidget.setMRMLSegmentEditorNode(segmentEditorNode)
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentEditorWidget.setSegmentationNode(segmentationNode)
        segmentEditorWidget.setActiveEffectByName("Disc level")
        self.assertIsNotNone(segmentEditorWidget.activeEffect())
        self.assertEqual(segmentEditorWidget.activeEffect().name, "Disc level")
        segmentEditorWidget.setActiveEffect(None)
        self.delayDisplay("Test passed")
