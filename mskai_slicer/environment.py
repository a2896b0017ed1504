"""A standalone Slicer for tests: trame-slicer's real MRML scene and logics.

In the desktop application ``slicer.mrmlScene``, ``slicer.app`` and
``slicer.modules`` exist already and nothing here binds anything.  Outside it
(pytest, CI) :func:`bind_standalone_slicer` builds trame-slicer's
``SlicerApp`` -- Kitware's wheels of Slicer's real scene, application logic and
module logics -- and binds the few globals that Slicer's own ``slicer.util``
and our Logic code expect:

* ``slicer.mrmlScene``: the scene;
* ``slicer.modules.<name>.logic()`` for volumes, segmentations, markups,
  subjecthierarchy, colors, terminologies, data, tables and transforms;
* ``slicer.app``: a small application object whose ``coreIOManager()`` loads
  and saves through Slicer's storage nodes and module logics, so
  ``slicer.util.loadVolume/loadSegmentation/loadMarkups/saveNode/saveScene``
  work;
* three slice views' logics (Red, Yellow, Green), as the desktop layout
  creates them, so slice composite nodes exist.  Nothing is rendered.

These are real Slicer objects, not mocks.  The module never imports ``qt``.
"""
from __future__ import annotations

import tempfile
import types
from pathlib import Path
from typing import Any

import slicer
import vtk

# The desktop application's three slice views and their orientations.
SLICE_VIEW_ORIENTATIONS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}

# (extension, Slicer file type) in matching order: longest extensions first.
_FILE_TYPES_BY_EXTENSION = (
    (".seg.nrrd", "SegmentationFile"),
    (".seg.nii.gz", "SegmentationFile"),
    (".mrk.json", "MarkupsFile"),
    (".nii.gz", "VolumeFile"),
    (".nrrd", "VolumeFile"),
    (".nhdr", "VolumeFile"),
    (".nii", "VolumeFile"),
    (".mha", "VolumeFile"),
    (".mhd", "VolumeFile"),
    (".tsv", "TableFile"),
    (".csv", "TableFile"),
    (".mrb", "SceneFile"),
    (".mrml", "SceneFile"),
)

_FILE_TYPES_BY_NODE_CLASS = (
    ("vtkMRMLSegmentationNode", "SegmentationFile"),
    ("vtkMRMLVolumeNode", "VolumeFile"),
    ("vtkMRMLMarkupsNode", "MarkupsFile"),
    ("vtkMRMLTableNode", "TableFile"),
    ("vtkMRMLTransformNode", "TransformFile"),
    ("vtkMRMLModelNode", "ModelFile"),
)

# Bits of vtkSlicerVolumesLogic::AddArchetypeVolume's loadingOptions.
_VOLUME_LOADING_OPTION_BITS = {"labelmap": 1, "center": 2, "singleFile": 4,
                               "autoWindowLevel": 8, "discardOrientation": 16}

_standalone: "_StandaloneSlicer | None" = None


def _name_from_file(file_name: str) -> str:
    """Node name Slicer would give: the file name without its known extension."""
    name = Path(file_name).name
    for extension, _ in _FILE_TYPES_BY_EXTENSION:
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return Path(name).stem


class StandaloneIOManager:
    """The subset of ``qSlicerCoreIOManager`` that ``slicer.util`` calls,
    implemented with Slicer's module logics and storage nodes."""

    def __init__(self, standalone: "_StandaloneSlicer"):
        self._standalone = standalone

    @property
    def _scene(self) -> "slicer.vtkMRMLScene":
        return self._standalone.scene

    def fileType(self, file_name: str) -> str:  # noqa: N802 (Slicer's API name)
        lower = str(file_name).lower()
        for extension, file_type in _FILE_TYPES_BY_EXTENSION:
            if lower.endswith(extension):
                return file_type
        return "NoFile"

    def fileWriterFileType(self, node: Any) -> str:  # noqa: N802
        for class_name, file_type in _FILE_TYPES_BY_NODE_CLASS:
            if node.IsA(class_name):
                return file_type
        return "NoFile"

    def loadNodes(self, file_type: str, properties: dict, loaded_nodes: "vtk.vtkCollection",  # noqa: N802
                  user_messages: Any = None) -> bool:
        file_name = str(properties["fileName"])
        name = properties.get("name") or _name_from_file(file_name)
        logics = self._standalone.logics
        node = None
        if file_type == "VolumeFile":
            options = sum(bit for key, bit in _VOLUME_LOADING_OPTION_BITS.items() if properties.get(key))
            node = logics["volumes"].AddArchetypeVolume(file_name, name, options)
        elif file_type == "SegmentationFile":
            node = logics["segmentations"].LoadSegmentationFromFile(
                file_name, bool(properties.get("autoOpacities", True)), name)
        elif file_type == "MarkupsFile":
            node_id = logics["markups"].LoadMarkups(file_name, name)
            node = self._scene.GetNodeByID(node_id) if node_id else None
        elif file_type == "TableFile":
            node = logics["tables"].AddTable(file_name, name)
        elif file_type == "SceneFile":
            return self._load_scene(file_name, user_messages)
        if node is None:
            self._report(user_messages, f"Cannot load {file_name} as {file_type} in the standalone Slicer.")
            return False
        loaded_nodes.AddItem(node)
        return True

    def saveNodes(self, file_type: str, properties: dict, user_messages: Any = None) -> bool:  # noqa: N802
        file_name = str(properties["fileName"])
        if file_type == "SceneFile":
            return self._save_scene(file_name, user_messages)
        node = self._scene.GetNodeByID(properties.get("nodeID", ""))
        if node is None or not node.IsA("vtkMRMLStorableNode"):
            self._report(user_messages, f"No storable node to save as {file_name}.")
            return False
        storage_node = node.GetStorageNode()
        if storage_node is None:
            node.AddDefaultStorageNode()
            storage_node = node.GetStorageNode()
        storage_node.SetFileName(file_name)
        if not storage_node.WriteData(node):
            self._report(user_messages, f"Writing {file_name} failed.")
            return False
        return True

    def _load_scene(self, file_name: str, user_messages: Any) -> bool:
        if file_name.lower().endswith(".mrb"):
            return bool(self._scene.ReadFromMRB(file_name, False, user_messages))
        self._scene.SetURL(file_name)
        return bool(self._scene.Import())

    def _save_scene(self, file_name: str, user_messages: Any) -> bool:
        if file_name.lower().endswith(".mrb"):
            return bool(self._scene.WriteToMRB(file_name, None, user_messages))
        if file_name.lower().endswith(".mrml"):
            self._scene.SetURL(file_name)
            self._scene.SetRootDirectory(str(Path(file_name).parent))
            return bool(self._scene.Commit())
        self._report(user_messages, f"Scene files must end with .mrb or .mrml: {file_name}")
        return False

    @staticmethod
    def _report(user_messages: Any, text: str) -> None:
        if user_messages is not None:
            user_messages.AddMessage(vtk.vtkCommand.ErrorEvent, text)


class StandaloneApplication:
    """Stands in for ``slicer.app`` outside the desktop application: no GUI,
    testing mode on (so ``slicer.util`` never opens message boxes)."""

    applicationName = "MSKAI standalone Slicer"

    def __init__(self, standalone: "_StandaloneSlicer"):
        self._standalone = standalone
        self._io_manager = StandaloneIOManager(standalone)
        self.temporaryPath = standalone.temporary_directory.name

    def coreIOManager(self) -> StandaloneIOManager:  # noqa: N802
        return self._io_manager

    def applicationLogic(self) -> "slicer.vtkSlicerApplicationLogic":  # noqa: N802
        return self._standalone.app.app_logic

    def mrmlScene(self) -> "slicer.vtkMRMLScene":  # noqa: N802
        return self._standalone.scene

    def testingEnabled(self) -> bool:  # noqa: N802
        return True

    def layoutManager(self) -> None:  # noqa: N802
        """No views are rendered outside the desktop application."""
        return None

    def processEvents(self) -> None:  # noqa: N802
        """No event loop to run."""

    def pauseRender(self) -> None:  # noqa: N802
        """Nothing renders."""

    def resumeRender(self) -> None:  # noqa: N802
        """Nothing renders."""


class _LogicModule:
    """What ``slicer.modules.<name>`` offers to scripts: its logic."""

    def __init__(self, name: str, logic: Any):
        self.name = name
        self._logic = logic

    def logic(self) -> Any:
        return self._logic


class _StandaloneSlicer:
    """Owns trame-slicer's SlicerApp and everything bound to ``slicer``."""

    def __init__(self) -> None:
        from trame_slicer.core.slicer_app import SlicerApp

        self.app = SlicerApp()
        self.scene = self.app.scene
        self.temporary_directory = tempfile.TemporaryDirectory(prefix="mskai-slicer-")
        self.logics = {
            "volumes": self.app.volumes_logic,
            "segmentations": self.app.segmentations_logic,
            "markups": self.app.markups_logic._logic,  # trame-slicer wraps the real vtkSlicerMarkupsLogic
            "subjecthierarchy": self.app.subject_hierarchy_logic,
            "colors": self.app.color_logic,
            "terminologies": self.app.terminologies_logic,
            "data": self.app.data_logic,
            "tables": self.app.register_module_logic(slicer.vtkSlicerTablesLogic()),
            "transforms": self.app.register_module_logic(slicer.vtkSlicerTransformLogic(),
                                                         logic_name="Transforms"),
        }
        self.slice_logics = [self._add_slice_view_logic(name, orientation)
                             for name, orientation in SLICE_VIEW_ORIENTATIONS.items()]

    def _add_slice_view_logic(self, name: str, orientation: str) -> "slicer.vtkMRMLSliceLogic":
        """The slice logic a desktop slice view owns; it creates the view's
        slice node and slice composite node in the scene."""
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(self.app.app_logic)
        logic.SetMRMLScene(self.scene)
        logic.AddSliceNode(name).SetOrientation(orientation)
        self.app.app_logic.GetSliceLogics().AddItem(logic)
        return logic

    def bind(self) -> None:
        slicer.mrmlScene = self.scene
        slicer.app = StandaloneApplication(self)
        slicer.modules = types.SimpleNamespace(
            **{name: _LogicModule(name, logic) for name, logic in self.logics.items()})


def is_standalone() -> bool:
    """True when the globals were bound by :func:`bind_standalone_slicer`."""
    return _standalone is not None


def bind_standalone_slicer() -> "slicer.vtkMRMLScene":
    """Bind a standalone Slicer to ``slicer.*`` and return its scene.

    Idempotent: the first call builds trame-slicer's ``SlicerApp`` (about a
    tenth of a second after ``import slicer``) and binds the globals; later
    calls return the same scene unchanged (use :func:`new_scene` to clear it).
    In the desktop application nothing is bound and ``slicer.mrmlScene`` is
    returned.
    """
    global _standalone
    if _standalone is None:
        if getattr(slicer, "mrmlScene", None) is not None:
            return slicer.mrmlScene
        _standalone = _StandaloneSlicer()
        _standalone.bind()
    return _standalone.scene


def new_scene() -> "slicer.vtkMRMLScene":
    """Clear ``slicer.mrmlScene`` as Slicer's own tests do (``Clear(0)``:
    data nodes go, singletons such as slice and composite nodes stay and are
    reset) and return it, with its subject hierarchy node present."""
    scene = bind_standalone_slicer()
    hierarchy = scene.GetSubjectHierarchyNode()
    if hierarchy is not None:
        # Removing the items first keeps Slicer's process-wide cache of
        # data node -> item consistent; Clear alone leaves stale entries.
        hierarchy.RemoveAllItems(False)
    scene.Clear(0)
    # Clear keeps the views' slice nodes as they were turned (a finding's jump turns a view
    # onto an oblique series): a new scene starts from the default orientations, as Slicer's
    # views do when a scene is closed.
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
        if node.GetLayoutName() in SLICE_VIEW_ORIENTATIONS:
            node.SetOrientation(SLICE_VIEW_ORIENTATIONS[node.GetLayoutName()])
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return scene
