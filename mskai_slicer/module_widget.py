"""The panel behaviour shared by the four MSKAI modules (SPEC 0.6).

Desktop only: this file uses Qt and Slicer's GUI; the Logic it drives
(:mod:`mskai_slicer.module_logic`) does not, and the tests exercise that.

A module's Widget derives from ``ScriptedLoadableModuleWidget``,
``VTKObservationMixin`` and :class:`MSKAIModuleWidgetMixin`; its ``setup()``
calls :meth:`~MSKAIModuleWidgetMixin.setupPanel` and it implements two small
methods:

* ``analysisArguments()``: the chosen inputs as keyword arguments of its
  Logic's ``analyze_async``;
* ``missingInputs()``: the names of required inputs not chosen yet.

The panel: Analyze hands the work to the module's worker process
(:mod:`mskai.worker`) and becomes Cancel, which kills the worker at once; a
timer polls the job without blocking (Slicer's main thread keeps Python's GIL
while the event loop idles, so no Python thread does the work here) for
progress and log messages; closing the scene cancels it; at the end the verdict
(with whether the input looks like the model's training data, and a
demonstration model's disclaimer, right under it), probability or score and the
result table are shown, and the result can be
saved or its editable evidence opened in the Segment Editor or Markups module.
"""
from __future__ import annotations

from typing import Any

import qt
import slicer
import vtk
from slicer.i18n import tr as _

from mskai.errors import MskaiError
from mskai_slicer.dependency_dialog import ensure_dependencies
from mskai.tasks import task_for_module
from mskai_slicer.module_logic import (
    AnalysisCancelledError,
    AnalysisJob,
    MSKAIModuleLogic,
    score_text,
    verdict_text,
)
from mskai_slicer.model_panel import bundle_list_text, install_bundle_message
from mskai_slicer.outputs import ATTRIBUTE_INPUT_ID
from mskai_slicer.training_data import training_data_html
from mskai_slicer.views import module_layout

# How often the panel looks at a running analysis (milliseconds).
POLL_INTERVAL_MS = 50
# The Device choices of every panel (the .ui lists the same for Qt Designer).
DEVICE_CHOICES = ["auto", "cpu", "cuda", "mps"]


class MSKAIModuleWidgetMixin:
    """Shared panel behaviour; see the module docstring for what the Widget adds."""

    def setupPanel(self, logic: MSKAIModuleLogic, parameterNodeClass: type) -> None:
        """Load ``Resources/UI/<Module>.ui``, bind it to the parameter node and
        connect the buttons.  Call from the Widget's ``setup()``."""
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui forwards mrmlSceneChanged to every node selector and the table view.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = logic
        self._parameterNodeClass = parameterNodeClass
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job: AnalysisJob | None = None
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onAnalysisPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.saveResultButton.connect("clicked(bool)", self.onSaveResultButton)
        self.ui.sendToEditorButton.connect("clicked(bool)", self.onSendToEditorButton)
        # The bundle folder is a plain string parameter ("" = the task's default
        # bundle), so the path field is synchronised here rather than by connectGui.
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)

        self.initializeParameterNode()
        # The model section: the task's bundles, and installing one.
        self.ui.installBundleFolderButton.connect("clicked(bool)", self.onInstallBundleFolderButton)
        self.ui.installBundleArchiveButton.connect("clicked(bool)", self.onInstallBundleArchiveButton)
        self.refreshBundleList()

    # ---- Slicer's widget life cycle ---------------------------------------------

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self._job is not None:
            self._job.cancel()
        self._pollTimer.stop()
        self.logic.shutdown()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.logic.worker().start()  # it imports torch and the task while the user chooses inputs

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        if self._job is not None:  # the Logic cancels it too; say so in the log
            self._job.cancel(_("the scene was closed during the analysis"))
            self.appendLog(_("Analysis cancelled: the scene was closed."))
        self.setParameterNode(None)
        self.logic.forget_result()
        self.showResult(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---- parameter node ---------------------------------------------------------

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self._parameterNodeClass(self.logic.getParameterNode()))
        # Save a click when there is a single obvious input.
        if hasattr(self._parameterNode, "inputVolume") and not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, parameterNode: Any) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Widgets with the SlicerParameterName property (.ui) follow the node.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
        self.updateButtons()

    def onModelPathChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.modelPath = path

    def updateButtons(self, caller: Any = None, event: Any = None) -> None:
        running = self._job is not None
        missing = self.missingInputs() if self._parameterNode else [_("parameters")]
        self.ui.applyButton.text = _("Cancel") if running else _("Analyze")
        self.ui.applyButton.enabled = running or not missing
        if running:
            self.ui.applyButton.toolTip = _("Stop the running analysis.")
        elif missing:
            self.ui.applyButton.toolTip = _("Choose: {inputs}").format(inputs=", ".join(missing))
        else:
            self.ui.applyButton.toolTip = _("Run the analysis on the selected inputs.")
        hasResult = not running and self.logic.last_result is not None
        self.ui.saveResultButton.enabled = hasResult
        self.ui.sendToEditorButton.enabled = hasResult and self.logic.editable_output_node() is not None

    # ---- analysis ----------------------------------------------------------------

    def onApplyButton(self) -> None:
        """Analyze, or Cancel while an analysis runs."""
        if self._job is not None:
            self._job.cancel()  # the worker process is killed now; the next poll ends the job
            return
        if not ensure_dependencies(self.moduleName, parent=slicer.util.mainWindow()):
            return  # the dialog said what is missing, or the user declined the install
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.showResult(None)
        with slicer.util.tryWithErrorDisplay(_("The analysis could not start."), waitCursor=True):
            self._job = self.logic.analyze_async(**self.analysisArguments(),
                                                 model_path=self._parameterNode.modelPath,
                                                 device=self._parameterNode.device)
            self.appendLog(_("Analysis started."))
            self._pollTimer.start()
        self.updateButtons()

    def onAnalysisPoll(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        job.poll()
        self.ui.progressBar.value = int(round(100 * job.fraction))
        for message in job.take_messages():
            self.appendLog(message)
        if job.running:
            return
        self._pollTimer.stop()
        self._job = None
        try:
            with slicer.util.tryWithErrorDisplay(_("The analysis did not finish."), waitCursor=True):
                try:
                    result = self.logic.finish(job)
                except AnalysisCancelledError:
                    self.appendLog(_("Analysis cancelled."))
                    return
                except MskaiError as error:
                    self.appendLog(str(error))
                    raise
                self.ui.progressBar.value = 100
                self.showResult(result)
                self.appendLog(_("Analysis finished."))
        finally:
            self.updateButtons()

    def showResult(self, result: dict | None) -> None:
        """Verdict, whether the input looks like the model's training data (with a
        demonstration model's disclaimer) right under it, probability or score, and
        the result table (None clears them)."""
        self.ui.verdictLabel.text = verdict_text(result) if result else "-"
        self.ui.trainingDataLabel.text = training_data_html(result)
        self.ui.scoreLabel.text = score_text(result) if result else "-"
        self.ui.resultTableView.setMRMLTableNode(self.logic.result_table_node() if result else None)

    def appendLog(self, message: str) -> None:
        self.ui.logTextEdit.appendPlainText(message)

    # ---- result actions ----------------------------------------------------------

    def onSaveResultButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Save the result into folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("The result could not be saved.")):
            copied = self.logic.save_result(folder)
            self.appendLog(_("Saved {count} files to {folder}").format(count=len(copied), folder=folder))

    def onSendToEditorButton(self) -> None:
        """Open the evidence for correction: a segmentation in the Segment
        Editor (on its input volume), landmarks in the Markups module."""
        node = self.logic.editable_output_node()
        if node is None:
            return
        if node.IsA("vtkMRMLSegmentationNode"):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.util.getModuleWidget("SegmentEditor").editor
            editor.setSegmentationNode(node)
            inputNode = slicer.mrmlScene.GetNodeByID(node.GetAttribute(ATTRIBUTE_INPUT_ID) or "")
            if inputNode is not None:
                editor.setSourceVolumeNode(inputNode)
        else:
            slicer.modules.markups.logic().SetActiveList(node)
            slicer.util.selectModule("Markups")

    # ---- model bundles -------------------------------------------------------------

    def refreshBundleList(self) -> None:
        """The task's shipped and installed bundles, each with its checksum check."""
        try:
            text = bundle_list_text(task_for_module(self.moduleName).name)
        except MskaiError as error:
            text = str(error)
        self.ui.bundleListLabel.text = text

    def onInstallBundleFolderButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Install the model bundle folder"))
        if folder:
            self.installBundle(folder)

    def onInstallBundleArchiveButton(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Install a model bundle archive"), "",
                                              _("Model bundle archives (*.zip *.tar.gz *.tgz *.tar)"))
        if path:
            self.installBundle(path)

    def installBundle(self, path: str) -> None:
        """Install a bundle folder or archive (verified first) into the user's models folder."""
        with slicer.util.tryWithErrorDisplay(_("The model bundle could not be installed."), waitCursor=True):
            self.appendLog(install_bundle_message(path))
        self.refreshBundleList()

    # ---- views -----------------------------------------------------------------------

    def showModuleLayout(self) -> None:
        """Switch to the layout this module's results are read in
        (:data:`mskai_slicer.views.MODULE_LAYOUTS` or a custom one of
        :data:`mskai_slicer.views.CUSTOM_LAYOUTS`); others keep the user's."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layout = module_layout(self.moduleName, layoutManager.layoutLogic().GetLayoutNode())
        if layout is not None:
            layoutManager.setLayout(layout)
