"""Static checks of the Slicer layer (no Slicer needed).

What the desktop application would only reveal when a user opens a module:
a script missing from CMakeLists (absent from an installed extension), a
``self.ui.<name>`` that the .ui does not define or defines as another kind of
widget, a .ui that Qt Designer would not read, a module without its help text
or self-test, a Qt import in code that must run without Qt.
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mskai.tasks import all_tasks

REPOSITORY = Path(__file__).resolve().parent.parent
MODULES = tuple(task.slicer_module for task in all_tasks())  # the registry's; checked against the folders below


def analysis_not_built(module: str) -> bool:
    """True while the module's task is still a placeholder ("not available yet")."""
    from mskai.tasks import PlaceholderTask, task_for_module

    return isinstance(task_for_module(module), PlaceholderTask)
WIDGET_MIXIN = REPOSITORY / "mskai_slicer" / "module_widget.py"
QT_ONLY_PACKAGES = {"qt", "ctk", "PythonQt"}
# Modules of Slicer's Python that exist only in the desktop application (they need Qt).
SLICER_QT_LAYER_MODULES = {"slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.i18n"}
SLICER_PACKAGES = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "slicer_core", "trame_slicer", "PythonQt"}

# Words of each paper's citation that the module's help text must contain.
PAPER_CITATIONS = {
    "SacroiliitisCT": ("MS-2.5D-Net", "Zhang Lei", "10.61369/MRP.2025100011"),
    "SpineOVF": ("Mao Xiaohui", "Automatic Detection Method for Osteoporosis", "10.12677/csa.2025.1510264"),
    "CervicalMR": ("Zhu Yifeng", "cervical spondylosis", "10.13609/j.cnki.1000-0313.2024.06.011"),
    "WristQC": ("MobileNetV2", "GU2Net", "Chongqing University"),
}

# The panel of SPEC 0.6, common to every module: name -> widget class.
PANEL_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "modelCollapsibleButton": "ctkCollapsibleButton",
    "resultsCollapsibleButton": "ctkCollapsibleButton",
    "modelPathLineEdit": "ctkPathLineEdit",
    "deviceComboBox": "QComboBox",
    "applyButton": "QPushButton",
    "progressBar": "QProgressBar",
    "logTextEdit": "QPlainTextEdit",
    "verdictLabel": "QLabel",
    "trainingDataLabel": "QLabel",  # right under the verdict: like the training data? demo disclaimer
    "scoreLabel": "QLabel",
    "resultTableView": "qMRMLTableView",
    "saveResultButton": "QPushButton",
    "sendToEditorButton": "QPushButton",
}
# The inputs of each module: selector name -> (node class, parameter node field).
INPUT_SELECTORS = {
    "SacroiliitisCT": {"inputVolumeSelector": ("vtkMRMLScalarVolumeNode", "inputVolume"),
                       "boneSegmentationSelector": ("vtkMRMLSegmentationNode", "boneSegmentation"),
                       # the segmentation "Save as training case" saves
                       "lesionSegmentationSelector": ("vtkMRMLSegmentationNode", "lesionSegmentation")},
    "SpineOVF": {"inputVolumeSelector": ("vtkMRMLScalarVolumeNode", "inputVolume"),
                 "vertebraSegmentationSelector": ("vtkMRMLSegmentationNode", "vertebraSegmentation")},
    "CervicalMR": {"sagittalT1Selector": ("vtkMRMLScalarVolumeNode", "sagittalT1Volume"),
                   "sagittalT2Selector": ("vtkMRMLScalarVolumeNode", "sagittalT2Volume"),
                   "axialT2Selector": ("vtkMRMLScalarVolumeNode", "axialT2Volume"),
                   # more axial T2 stacks of the study (optional)
                   "axialT2Selector2": ("vtkMRMLScalarVolumeNode", "axialT2Volume2"),
                   "axialT2Selector3": ("vtkMRMLScalarVolumeNode", "axialT2Volume3")},
    "WristQC": {"inputVolumeSelector": ("vtkMRMLScalarVolumeNode", "inputVolume")},
}

# How a Widget may use a ``self.ui.<name>``: attribute or signal -> widget classes
# that have it.  A use not listed here fails the test until it is added.
_BUTTONS = {"QPushButton", "QToolButton", "QCheckBox", "ctkPushButton", "ctkCheckablePushButton"}
_ANY_WIDGET = None  # QWidget properties every widget class has
ATTRIBUTE_CLASSES: dict[str, set[str] | None] = {
    "enabled": _ANY_WIDGET, "toolTip": _ANY_WIDGET, "visible": _ANY_WIDGET, "setVisible": _ANY_WIDGET,
    "text": {"QLabel", "QLineEdit", "ctkCollapsibleButton"} | _BUTTONS,
    "value": {"QProgressBar", "QSpinBox", "QDoubleSpinBox", "QSlider", "ctkSliderWidget"},
    "clear": {"QPlainTextEdit", "QTextEdit", "QLineEdit", "QComboBox"},
    "appendPlainText": {"QPlainTextEdit"},
    "currentPath": {"ctkPathLineEdit"},
    "setMRMLTableNode": {"qMRMLTableView"},
    "selectionModel": {"qMRMLTableView"},
    "sortFilterProxyModel": {"qMRMLTableView"},
    "currentText": {"QComboBox"},
    "setMRMLScene": {"qMRMLNodeComboBox", "qMRMLTableView", "qMRMLWidget"},
    "currentNode": {"qMRMLNodeComboBox"},
    "setCurrentNode": {"qMRMLNodeComboBox"},
    "setMRMLSegmentEditorNode": {"qMRMLSegmentEditorWidget"},
    "setSegmentationNode": {"qMRMLSegmentEditorWidget"},
    "setSourceVolumeNode": {"qMRMLSegmentEditorWidget"},
}
SIGNAL_CLASSES = {
    "clicked(bool)": _BUTTONS,
    "clicked()": _BUTTONS,
    "toggled(bool)": _BUTTONS,
    "currentPathChanged(QString)": {"ctkPathLineEdit"},
    "currentNodeChanged(vtkMRMLNode*)": {"qMRMLNodeComboBox"},
    "currentIndexChanged(int)": {"QComboBox"},
    "selectionChanged()": {"qMRMLTableView"},
}


# ---- parsing helpers ------------------------------------------------------------

def cmake_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(command name in lower case, arguments) of a CMakeLists file, in order.
    Enough of CMake's syntax for these files: comments, quoted arguments,
    nested parentheses."""
    text = path.read_text()
    commands = []
    position = 0
    call = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
    while True:
        match = call.search(text, position)
        if match is None:
            return commands
        line_start = text.rfind("\n", 0, match.start()) + 1
        if "#" in text[line_start:match.start()]:
            position = text.find("\n", match.start()) + 1 or len(text)
            continue
        depth, index, arguments, current, quoted = 1, match.end(), [], "", False
        while depth:
            char = text[index]
            if quoted:
                if char == '"':
                    quoted = False
                else:
                    current += char
            elif char == '"':
                quoted = True
            elif char == "#":
                index = text.index("\n", index)
                continue
            elif char == "(":
                depth += 1
                current += char
            elif char == ")":
                depth -= 1
                if depth:
                    current += char
            elif char.isspace():
                if current:
                    arguments.append(current)
                current = ""
            else:
                current += char
            index += 1
        if current:
            arguments.append(current)
        commands.append((match.group(1).lower(), arguments))
        position = index


def module_cmake(module: str) -> dict[str, list[str]]:
    """The module CMakeLists' variables (``${MODULE_NAME}`` expanded) and the
    arguments of its build and test commands."""
    variables: dict[str, list[str]] = {}
    found: dict[str, list[str]] = {}

    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [m.group(0)])), value)

    for name, arguments in cmake_commands(REPOSITORY / module / "CMakeLists.txt"):
        if name == "set":
            variables[arguments[0]] = [expand(value) for value in arguments[1:]]
        elif name in ("slicermacrobuildscriptedmodule", "slicer_add_python_unittest"):
            found[name] = [part for value in arguments for part in expand(value).split()]
    return {**{f"var:{key}": value for key, value in variables.items()}, **found}


def keyword_values(arguments: list[str], keyword: str, keywords: set[str]) -> list[str]:
    """Values following ``keyword`` up to the next keyword of the macro."""
    values, collecting = [], False
    for argument in arguments:
        if argument in keywords:
            collecting = argument == keyword
        elif collecting:
            values.append(argument)
    return values


def ui_tree(module: str) -> ET.Element:
    return ET.parse(REPOSITORY / module / "Resources" / "UI" / f"{module}.ui").getroot()


def ui_widgets(root: ET.Element) -> dict[str, str]:
    """Widget name -> class for every widget of a .ui file."""
    return {widget.get("name"): widget.get("class") for widget in root.iter("widget")}


def parse_python(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def ui_uses(tree: ast.AST) -> dict[str, set[str]]:
    """``self.ui.<name>`` -> the attributes used on it, with ``connect`` uses
    recorded as their signal (e.g. ``"clicked(bool)"``)."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    uses: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"):
            used = uses.setdefault(node.attr, set())
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute):
                call = parents.get(parent)
                if (parent.attr == "connect" and isinstance(call, ast.Call) and call.args
                        and isinstance(call.args[0], ast.Constant)):
                    used.add(f"signal:{call.args[0].value}")
                else:
                    used.add(parent.attr)
            else:
                used.add("<bare>")
    return uses


def imported_top_level_names(tree: ast.AST) -> dict[str, int]:
    """Top-level package name -> first line where it is imported."""
    names: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.setdefault(alias.name.split(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.setdefault(node.module.split(".")[0], node.lineno)
    return names


def guarded_by_import_error(tree: ast.AST, target: ast.AST) -> bool:
    """Whether ``target`` sits in the body of a ``try`` that handles ImportError."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError")
                for handler in node.handlers):
            if any(target is inner for statement in node.body for inner in ast.walk(statement)):
                return True
    return False


def python_files(*folders: Path) -> list[Path]:
    return sorted(path for folder in folders for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def classes_of(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def base_names(cls: ast.ClassDef) -> list[str]:
    return [base.id if isinstance(base, ast.Name) else ast.unparse(base) for base in cls.bases]


def device_choices() -> list[str]:
    for node in parse_python(WIDGET_MIXIN).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEVICE_CHOICES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("mskai_slicer/module_widget.py defines no DEVICE_CHOICES")


# ---- the extension ------------------------------------------------------------------

def test_extension_cmakelists():
    commands = cmake_commands(REPOSITORY / "CMakeLists.txt")
    variables = {arguments[0]: arguments[1:] for name, arguments in commands if name == "set"}
    assert ("project", ["MSKAI"]) in commands
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                 "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert variables.get(name) and variables[name][0].strip(), f"{name} is not set"
    assert "PyTorch" in variables["EXTENSION_DEPENDS"][0].split()
    assert variables["EXTENSION_ICONURL"][0].endswith("Resources/Icons/MSKAI.png")
    assert (REPOSITORY / "Resources" / "Icons" / "MSKAI.png").is_file()
    names = [name for name, _ in commands]
    assert ("find_package", ["Slicer", "REQUIRED"]) in commands
    for include in ("${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"):
        assert ("include", [include]) in commands, f"include({include}) is missing"
    assert names.index("find_package") < names.index("add_subdirectory")
    assert commands[-1] == ("include", ["${Slicer_EXTENSION_CPACK}"])


def test_every_module_folder_is_added():
    commands = cmake_commands(REPOSITORY / "CMakeLists.txt")
    added = [arguments[0] for name, arguments in commands if name == "add_subdirectory"]
    module_folders = sorted(path.parent.name for path in REPOSITORY.glob("*/CMakeLists.txt")
                            if (path.parent / f"{path.parent.name}.py").is_file())
    assert sorted(MODULES) == module_folders
    assert sorted(added) == module_folders


def test_core_packages_are_installed_beside_the_modules():
    commands = cmake_commands(REPOSITORY / "CMakeLists.txt")
    calls = [arguments for name, arguments in commands if name == "mskaiinstallpythonpackages"]
    assert len(calls) == 1
    keywords = {"TARGET_NAME", "PACKAGES", "RESOURCE_DIRECTORIES"}
    packages = keyword_values(calls[0], "PACKAGES", keywords)
    assert sorted(packages) == ["mskai", "mskai_slicer"]
    assert all((REPOSITORY / package / "__init__.py").is_file() for package in packages)
    assert keyword_values(calls[0], "RESOURCE_DIRECTORIES", keywords) == ["Resources/Models"]
    helper = (REPOSITORY / "CMake" / "MSKAIPythonPackages.cmake")
    helper_commands = cmake_commands(helper)
    assert ("function", ["mskaiInstallPythonPackages"]) in helper_commands
    compile_call = [arguments for name, arguments in helper_commands if name == "ctkmacrocompilepythonscript"]
    assert compile_call and "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in compile_call[0]
    assert "NO_INSTALL_SUBDIR" in compile_call[0]


# ---- each module's CMakeLists -------------------------------------------------------------

BUILD_KEYWORDS = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"}


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_lists_every_script(module):
    cmake = module_cmake(module)
    build = cmake["slicermacrobuildscriptedmodule"]
    assert keyword_values(build, "NAME", BUILD_KEYWORDS) == [module]
    assert "WITH_GENERIC_TESTS" in build
    listed = set(keyword_values(build, "SCRIPTS", BUILD_KEYWORDS))
    effect_folders = [REPOSITORY / module / folder for folder in effect_module_folders(module)]
    on_disk = {path.relative_to(REPOSITORY / module).as_posix() for path in python_files(REPOSITORY / module)
               if not any(folder in path.parents for folder in effect_folders)}
    assert listed == on_disk, f"not listed: {sorted(on_disk - listed)}; listed but absent: {sorted(listed - on_disk)}"
    assert {f"{module}.py", f"{module}Lib/__init__.py", f"{module}Lib/logic.py"} <= listed


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_lists_every_resource(module):
    build = module_cmake(module)["slicermacrobuildscriptedmodule"]
    listed = set(keyword_values(build, "RESOURCES", BUILD_KEYWORDS))
    on_disk = {path.relative_to(REPOSITORY / module).as_posix()
               for path in (REPOSITORY / module / "Resources").rglob("*") if path.is_file()}
    assert listed == on_disk
    assert {f"Resources/Icons/{module}.png", f"Resources/UI/{module}.ui"} <= listed


@pytest.mark.parametrize("module", MODULES)
def test_module_self_test_is_registered(module):
    assert module_cmake(module)["slicer_add_python_unittest"] == ["SCRIPT", f"{module}.py"]
    commands = [name for name, _ in cmake_commands(REPOSITORY / module / "CMakeLists.txt")]
    registered = commands.index("slicer_add_python_unittest")
    assert commands[registered - 1] == "if" and commands[registered + 1] == "endif"


@pytest.mark.parametrize("module", MODULES)
def test_module_icon_is_a_128_pixel_png(module):
    from PIL import Image

    with Image.open(REPOSITORY / module / "Resources" / "Icons" / f"{module}.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


# ---- the Segment Editor effects (Slicer's ScriptedSegmentEditorEffect template) ----------------------------

# Module -> the effects it registers: hidden module folder -> effect name.
SEGMENT_EDITOR_EFFECTS = {
    "CervicalMR": {"SegmentEditorMSKAIFindingPoint": "Finding point", "SegmentEditorMSKAIDiscLevel": "Disc level"},
}
# Library files of the modules that must run without Qt beyond <Module>Lib/{__init__,logic}.py.
QT_FREE_LIBRARY_FILES = ("CervicalMR/CervicalMRLib/annotation.py",)


def effect_module_folders(module: str) -> list[str]:
    """Sub-folders of a module folder that hold a module of their own (a CMakeLists.txt)."""
    return sorted(path.parent.name for path in (REPOSITORY / module).glob("*/CMakeLists.txt"))


EFFECT_MODULES = [(module, folder) for module, effects in SEGMENT_EDITOR_EFFECTS.items() for folder in effects]


@pytest.mark.parametrize("module", MODULES)
def test_effect_modules_are_added_by_their_module(module):
    folders = effect_module_folders(module)
    assert folders == sorted(SEGMENT_EDITOR_EFFECTS.get(module, {})), "an effect folder is not in SEGMENT_EDITOR_EFFECTS"
    added = [arguments[0] for name, arguments in cmake_commands(REPOSITORY / module / "CMakeLists.txt")
             if name == "add_subdirectory"]
    assert sorted(added) == folders


@pytest.mark.parametrize("module,folder", EFFECT_MODULES)
def test_effect_module_cmakelists_lists_its_files(module, folder):
    root = REPOSITORY / module / folder
    variables: dict[str, list[str]] = {}
    build: list[str] = []
    for name, arguments in cmake_commands(root / "CMakeLists.txt"):
        if name == "set":
            variables[arguments[0]] = arguments[1:]
        elif name == "slicermacrobuildscriptedmodule":
            build = arguments

    def expand(value: str) -> str:  # ${MODULE_PYTHON_SCRIPTS} holds ${MODULE_NAME}: twice
        for _ in range(2):
            value = re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [m.group(0)])), value)
        return value

    build = [part for value in build for part in expand(value).split()]
    assert keyword_values(build, "NAME", BUILD_KEYWORDS) == [folder]
    scripts = set(keyword_values(build, "SCRIPTS", BUILD_KEYWORDS))
    resources = set(keyword_values(build, "RESOURCES", BUILD_KEYWORDS))
    assert scripts == {path.relative_to(root).as_posix() for path in python_files(root)}
    assert scripts == {f"{folder}.py", f"{folder}Lib/__init__.py", f"{folder}Lib/SegmentEditorEffect.py"}
    assert resources == {path.relative_to(root).as_posix() for path in root.rglob("*")
                         if path.is_file() and path.suffix != ".py" and path.name != "CMakeLists.txt"
                         and "__pycache__" not in path.parts}
    assert resources == {f"{folder}Lib/SegmentEditorEffect.png"}


@pytest.mark.parametrize("module,folder", EFFECT_MODULES)
def test_effect_module_registers_its_effect_at_startup(module, folder):
    root = REPOSITORY / module / folder
    classes = classes_of(parse_python(root / f"{folder}.py"))
    module_class = classes[folder]
    assert base_names(module_class) == ["ScriptedLoadableModule"]
    source = ast.unparse(module_class)
    assert "self.parent.hidden = True" in source
    assert "slicer.app.connect('startupCompleted()', self.registerEditorEffect)" in source
    register = next(node for node in module_class.body
                    if isinstance(node, ast.FunctionDef) and node.name == "registerEditorEffect")
    body = ast.unparse(register)
    for call in ("qSlicerSegmentEditorScriptedEffect(None)", "Lib/SegmentEditorEffect.py'", "setPythonSource(",
                 ".self().register()"):
        assert call in body, f"{folder}.registerEditorEffect lacks {call}"
    assert base_names(classes[f"{folder}Test"]) == ["ScriptedLoadableModuleTest"]

    effect_tree = parse_python(root / f"{folder}Lib" / "SegmentEditorEffect.py")
    effect = classes_of(effect_tree)["SegmentEditorEffect"]  # the class setPythonSource looks for
    assert base_names(effect) == ["AbstractScriptedSegmentEditorEffect"]
    methods = {node.name: ast.unparse(node) for node in effect.body if isinstance(node, ast.FunctionDef)}
    assert f"scriptedEffect.name = {SEGMENT_EDITOR_EFFECTS[module][folder]!r}" in methods["__init__"]
    assert "clonedEffect.setPythonSource(__file__" in methods["clone"]
    assert {"icon", "helpText", "setupOptionsFrame", "setMRMLDefaults", "updateGUIFromMRML", "updateMRMLFromGUI",
            "processInteractionEvents"} <= set(methods)
    # the clicks are handled by the Qt-free library, which the tests run on real segmentations
    assert "from CervicalMRLib.annotation import" in methods["processInteractionEvents"]
    init = (root / f"{folder}Lib" / "__init__.py").read_text()
    assert "from .SegmentEditorEffect import *" in init


# ---- the .ui files ------------------------------------------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_ui_file_is_designer_xml(module):
    root = ui_tree(module)
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == module
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == module
    names = [widget.get("name") for widget in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    declared = {custom.findtext("class"): custom for custom in root.iter("customwidget")}
    for custom in declared.values():
        assert custom.findtext("extends") and custom.findtext("header") == f"{custom.findtext('class')}.h"
    used = {widget.get("class") for widget in root.iter("widget")}
    not_qt = {cls for cls in used if not cls.startswith("Q")}
    assert not_qt <= set(declared), f"undeclared custom widgets: {sorted(not_qt - set(declared))}"
    assert set(declared) <= used, f"declared but unused: {sorted(set(declared) - used)}"


@pytest.mark.parametrize("module", MODULES)
def test_ui_has_the_panel(module):
    widgets = ui_widgets(ui_tree(module))
    for name, cls in PANEL_WIDGETS.items():
        assert widgets.get(name) == cls, f"{name} should be a {cls}, is {widgets.get(name)}"
    titles = {widget.get("name"): widget.findtext("property[@name='text']/string")
              for widget in ui_tree(module).iter("widget") if widget.get("class") == "ctkCollapsibleButton"}
    assert titles == {"inputsCollapsibleButton": "Inputs", "modelCollapsibleButton": "Model",
                      "resultsCollapsibleButton": "Results"}


@pytest.mark.parametrize("module", MODULES)
def test_ui_shows_the_training_data_line_right_under_the_verdict(module):
    """Issue 14: whether the input looks like the model's training data is read where
    the verdict is, in rich text (red and bold when out) that wraps."""
    form = next(layout for layout in ui_tree(module).iter("layout") if layout.get("name") == "resultsFormLayout")
    place = {item.find("widget").get("name"): (int(item.get("row")), int(item.get("column")))
             for item in form.findall("item") if item.find("widget") is not None}
    row, column = place["verdictLabel"]
    assert place["trainingDataLabel"] == (row + 1, column)
    assert place["trainingDataTitleLabel"] == (row + 1, column - 1)
    assert len(set(place.values())) == len(place), f"two widgets share a cell of the results form: {place}"
    label = next(widget for widget in form.iter("widget") if widget.get("name") == "trainingDataLabel")
    assert label.findtext("property[@name='textFormat']/enum") == "Qt::RichText"
    assert label.findtext("property[@name='wordWrap']/bool") == "true"


@pytest.mark.parametrize("module", MODULES)
def test_ui_inputs_and_device_choices(module):
    root = ui_tree(module)
    selectors = {widget.get("name"): widget for widget in root.iter("widget")
                 if widget.get("class") == "qMRMLNodeComboBox"}
    assert set(selectors) == set(INPUT_SELECTORS[module])
    for name, (node_class, parameter) in INPUT_SELECTORS[module].items():
        widget = selectors[name]
        assert [s.text for s in widget.findall("property[@name='nodeTypes']/stringlist/string")] == [node_class]
        assert widget.findtext("property[@name='SlicerParameterName']/string") == parameter
    combo = next(widget for widget in root.iter("widget") if widget.get("name") == "deviceComboBox")
    assert [item.findtext("property/string") for item in combo.findall("item")] == device_choices()


@pytest.mark.parametrize("module", MODULES)
def test_ui_gives_the_scene_to_every_mrml_widget(module):
    root = ui_tree(module)
    widgets = ui_widgets(root)
    mrml_widgets = {name for name, cls in widgets.items() if cls.startswith("qMRML") and name != module}
    connected = set()
    for connection in root.iter("connection"):
        assert connection.findtext("receiver") in widgets and connection.findtext("sender") in widgets
        if (connection.findtext("sender") == module
                and connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                and connection.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"):
            connected.add(connection.findtext("receiver"))
    assert connected == mrml_widgets


@pytest.mark.parametrize("module", MODULES)
def test_parameter_names_match_the_parameter_node(module):
    tree = parse_python(REPOSITORY / module / f"{module}.py")
    node_class = classes_of(tree)[f"{module}ParameterNode"]
    assert [ast.unparse(d) for d in node_class.decorator_list] == ["parameterNodeWrapper"]
    fields = {statement.target.id for statement in node_class.body if isinstance(statement, ast.AnnAssign)}
    bound = {widget.findtext("property[@name='SlicerParameterName']/string")
             for widget in ui_tree(module).iter("widget")
             if widget.find("property[@name='SlicerParameterName']") is not None}
    assert bound <= fields, f"bound to no parameter: {sorted(bound - fields)}"
    assert {"modelPath", "device"} <= fields


# ---- the Widgets' use of self.ui -----------------------------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_used_by_the_widget_exists_with_a_fitting_class(module):
    widgets = ui_widgets(ui_tree(module))
    uses = ui_uses(parse_python(WIDGET_MIXIN))
    for name, used in ui_uses(parse_python(REPOSITORY / module / f"{module}.py")).items():
        uses.setdefault(name, set()).update(used)
    assert uses, "the Widget code uses no self.ui names: the parser is broken"
    for name, used in sorted(uses.items()):
        assert name in widgets, f"self.ui.{name} is not in {module}.ui"
        for use in used - {"<bare>"}:
            if use.startswith("signal:"):
                allowed = SIGNAL_CLASSES.get(use.removeprefix("signal:"))
                assert allowed is not None, f"unknown signal {use} on self.ui.{name}: add it to SIGNAL_CLASSES"
            else:
                assert use in ATTRIBUTE_CLASSES, f"unknown use .{use} of self.ui.{name}: add it to ATTRIBUTE_CLASSES"
                allowed = ATTRIBUTE_CLASSES[use]
            assert allowed is None or widgets[name] in allowed, \
                f"self.ui.{name} is a {widgets[name]}, which has no {use}"


def test_the_ui_use_parser_sees_signals_and_attributes():
    tree = ast.parse("self.ui.okButton.connect('clicked(bool)', self.go)\nself.ui.label.text = 'x'\n"
                     "n = self.ui.selector.currentNode()\nf(self.ui.table)")
    assert ui_uses(tree) == {"okButton": {"signal:clicked(bool)"}, "label": {"text"},
                             "selector": {"currentNode"}, "table": {"<bare>"}}


# ---- the module scripts ------------------------------------------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_module_script_defines_module_widget_and_test(module):
    tree = parse_python(REPOSITORY / module / f"{module}.py")
    classes = classes_of(tree)
    assert base_names(classes[module]) == ["ScriptedLoadableModule"]
    widget_bases = base_names(classes[f"{module}Widget"])
    assert {"ScriptedLoadableModuleWidget", "VTKObservationMixin"} <= set(widget_bases)
    # The shared mixin comes first so its cleanup/enter/exit override the base class's.
    assert widget_bases.index("MSKAIModuleWidgetMixin") < widget_bases.index("ScriptedLoadableModuleWidget")
    assert base_names(classes[f"{module}Test"]) == ["ScriptedLoadableModuleTest"]

    assigned = {}
    for node in ast.walk(classes[module]):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            assigned[node.targets[0].attr] = node.value
    for attribute in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert attribute in assigned, f"{module} sets no parent.{attribute}"
    assert "MSKAI" in {const.value for const in ast.walk(assigned["categories"]) if isinstance(const, ast.Constant)}
    help_text = " ".join(const.value for const in ast.walk(assigned["helpText"])
                         if isinstance(const, ast.Constant) and isinstance(const.value, str))
    help_text = " ".join(help_text.split())
    for words in PAPER_CITATIONS[module]:
        assert words in help_text, f"the help text of {module} does not cite '{words}'"
    if analysis_not_built(module):  # the help must not promise an analysis that is not there
        assert "not available yet" in help_text


@pytest.mark.parametrize("module", MODULES)
def test_module_self_test_runs_the_shared_checks(module):
    test_class = classes_of(parse_python(REPOSITORY / module / f"{module}.py"))[f"{module}Test"]
    methods = {node.name: node for node in test_class.body if isinstance(node, ast.FunctionDef)}
    assert "slicer.mrmlScene.Clear()" in ast.unparse(methods["setUp"])
    called = {node.func.attr for node in ast.walk(methods["runTest"])
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    test_methods = {name for name in methods if name.startswith("test_")}
    assert test_methods and test_methods <= called, "runTest must run every test_ method"
    body = ast.unparse(test_class)
    expected = ["run_all_checks()", "run_module_checks(logic)"]
    if analysis_not_built(module):
        expected += ["NotAvailableError", "not available yet"]
    for call in expected:
        assert call in body, f"{module}Test does not use {call}"


@pytest.mark.parametrize("module", MODULES)
def test_widget_arguments_match_the_logic(module):
    """The keyword arguments the Widget hands to analyze_async are parameters of
    the Logic's analyze and analyze_async."""
    widget = classes_of(parse_python(REPOSITORY / module / f"{module}.py"))[f"{module}Widget"]
    method = next(node for node in widget.body if isinstance(node, ast.FunctionDef)
                  and node.name == "analysisArguments")
    returned = next(node.value for node in ast.walk(method) if isinstance(node, ast.Return))
    keys = {key.value for key in returned.keys}
    logic = classes_of(parse_python(REPOSITORY / module / f"{module}Lib" / "logic.py"))[f"{module}Logic"]
    for name in ("analyze", "analyze_async"):
        function = next(node for node in logic.body if isinstance(node, ast.FunctionDef) and node.name == name)
        parameters = {argument.arg for argument in function.args.args}
        assert keys <= parameters, f"{module}Logic.{name} lacks {sorted(keys - parameters)}"
        assert {"model_path", "device"} <= parameters


# ---- imports ----------------------------------------------------------------------------------------

def test_no_module_or_package_imports_imp():
    folders = [REPOSITORY / name for name in (*MODULES, "mskai", "mskai_slicer")]
    offenders = [str(path.relative_to(REPOSITORY)) for path in python_files(*folders)
                 if "imp" in imported_top_level_names(parse_python(path))]
    assert offenders == []


def test_core_package_never_imports_slicer_qt_or_vtk():
    offenders = []
    for path in python_files(REPOSITORY / "mskai"):
        names = imported_top_level_names(parse_python(path))
        offenders += [f"{path.relative_to(REPOSITORY)}:{line} imports {name}"
                      for name, line in names.items() if name in SLICER_PACKAGES]
    assert offenders == []


def test_logic_code_never_needs_qt():
    """The Logic and the shared helpers run without Qt: Qt packages are never
    imported, and Slicer's Qt-layer modules only inside ``try ... except ImportError``."""
    paths = [REPOSITORY / module / f"{module}Lib" / name for module in MODULES for name in ("__init__.py", "logic.py")]
    paths += [REPOSITORY / name for name in QT_FREE_LIBRARY_FILES]
    paths += [path for path in python_files(REPOSITORY / "mskai_slicer") if path != WIDGET_MIXIN]
    offenders = []
    for path in paths:
        tree = parse_python(path)
        offenders += [f"{path.relative_to(REPOSITORY)}:{line} imports {name}"
                      for name, line in imported_top_level_names(tree).items() if name in QT_ONLY_PACKAGES]
        offenders += [f"{path.relative_to(REPOSITORY)}:{node.lineno} imports {node.module} outside "
                      "try/except ImportError"
                      for node in ast.walk(tree)
                      if isinstance(node, ast.ImportFrom) and node.module in SLICER_QT_LAYER_MODULES
                      and not guarded_by_import_error(tree, node)]
    assert offenders == []


def test_the_guard_detection():
    tree = ast.parse("try:\n    from slicer.ScriptedLoadableModule import X\nexcept ImportError:\n    X = object\n"
                     "from slicer.i18n import tr\n")
    first, second = sorted((node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)),
                           key=lambda node: node.lineno)
    assert guarded_by_import_error(tree, first) and not guarded_by_import_error(tree, second)
