"""What MSKAI installs into Slicer's Python, and how (mskai_slicer.dependencies),
and the thin dialog around it (mskai_slicer.dependency_dialog).

The Qt-free logic runs with fake ``find_spec``/metadata where a test needs a
package to be missing, and against this environment's real packages and real
pip (offline: ``--no-index --dry-run``) where it needs the truth.  The dialog
is checked with Slicer's message boxes and pip replaced by recorders.
"""
from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import logging
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest

from mskai_slicer import dependencies
from mskai_slicer.dependencies import REQUIREMENTS, SLICER_PACKAGES, Requirement

REPOSITORY = Path(__file__).resolve().parent.parent
REQUIRED = [requirement for requirement in REQUIREMENTS if not requirement.optional]
OPTIONAL = [requirement for requirement in REQUIREMENTS if requirement.optional]


def fake_find_spec(absent: set[str], asked: list[str] | None = None):
    """A ``find_spec`` that finds every module but ``absent`` (recording the names asked)."""
    def find_spec(name: str):
        if asked is not None:
            asked.append(name)
        return None if name in absent else importlib.machinery.ModuleSpec(name, None)
    return find_spec


def fake_version(versions: dict[str, str]):
    """An ``importlib.metadata.version`` that knows only ``versions``."""
    def version(name: str) -> str:
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]
    return version


def by_name(name: str) -> Requirement:
    return next(requirement for requirement in REQUIREMENTS if requirement.name == name)


# ---- the list ------------------------------------------------------------------------

def test_requirements_follow_pyproject():
    """Every dependency of pyproject.toml is installed here with the same
    specifier, or comes with Slicer; the optional ones are the 'fast' extra."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]

    def split(spec: str) -> tuple[str, str]:
        name = spec.split(">")[0].split("=")[0].split("<")[0].strip()
        return dependencies.canonical_name(name), spec[len(name):].strip()

    declared = dict(split(spec) for spec in project["dependencies"])
    ours = {dependencies.canonical_name(r.name): r.specifier for r in REQUIRED}
    slicer_own = {dependencies.canonical_name(name) for name in SLICER_PACKAGES}
    assert set(declared) == set(ours) | slicer_own
    assert not set(ours) & slicer_own
    assert {name: declared[name] for name in ours} == ours
    fast = dict(split(spec) for spec in project["optional-dependencies"]["fast"])
    assert fast == {dependencies.canonical_name(r.name): r.specifier for r in OPTIONAL}


def test_import_names_are_the_modules_the_distributions_install():
    """In this environment (which has them all) each pip project is installed
    and ships the module its import name says: pillow -> PIL,
    pylibjpeg-openjpeg -> openjpeg, pylibjpeg-libjpeg -> libjpeg."""
    for requirement in REQUIREMENTS:
        files = importlib.metadata.files(requirement.name) or []
        top_levels = {Path(str(file)).parts[0].split(".")[0] for file in files}
        assert requirement.import_name in top_levels, f"{requirement.name} ships {sorted(top_levels)}"
        assert importlib.util.find_spec(requirement.import_name) is not None
    assert {by_name(name).import_name for name in ("pillow", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg")} \
        == {"PIL", "openjpeg", "libjpeg"}


def test_missing_packages_asks_by_import_name_and_answers_pip_names():
    asked: list[str] = []
    find_spec = fake_find_spec({"torch", "PIL", "openjpeg", "onnx"}, asked)
    assert [r.name for r in dependencies.missing_packages(find_spec=find_spec)] == \
        ["torch", "pylibjpeg-openjpeg", "pillow"]
    assert [r.name for r in dependencies.missing_packages(optional=True, find_spec=find_spec)] == ["onnx"]
    assert {"PIL", "openjpeg", "libjpeg"} <= set(asked)
    assert not {"pillow", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg"} & set(asked)
    assert dependencies.missing_packages(find_spec=fake_find_spec(set())) == []


def test_a_module_imported_without_spec_counts_and_a_blocked_one_does_not(monkeypatch):
    monkeypatch.setitem(sys.modules, "mskai_fake_loaded", types.ModuleType("mskai_fake_loaded"))
    monkeypatch.setitem(sys.modules, "mskai_fake_blocked", None)
    assert dependencies.importable("mskai_fake_loaded")
    assert not dependencies.importable("mskai_fake_blocked")
    assert not dependencies.importable("mskai_no_such_module")


# ---- constraints and pip arguments -----------------------------------------------------------------

def constraint_pins(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert len(pins) == len(lines), "one pin per line"
    return pins


def test_constraints_pin_the_installed_versions():
    pins = constraint_pins(dependencies.pinned_constraints())
    expected = {name: importlib.metadata.version(name) for name in (*SLICER_PACKAGES, "torch")}
    assert pins == expected


def test_constraints_read_the_module_version_without_metadata_and_leave_absent_packages_free(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", types.SimpleNamespace(__version__="2.4.4"))
    text = dependencies.pinned_constraints(version=fake_version({"numpy": "1.26.4", "SimpleITK": "2.4.0"}),
                                           names=("numpy", "SimpleITK", "pydicom", "mskai_no_such_package"))
    assert constraint_pins(text) == {"numpy": "1.26.4", "SimpleITK": "2.4.0", "pydicom": "2.4.4"}
    assert "# mskai_no_such_package: not installed" in text


def run_pip_offline(constraints: Path, *requirements: str) -> subprocess.CompletedProcess:
    """pip's resolver on this environment alone: no index, no configured links, nothing installed."""
    return subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--dry-run",
                           "--disable-pip-version-check", "-c", str(constraints), *requirements],
                          capture_output=True, text=True, timeout=120)


def test_pip_keeps_the_pinned_versions(tmp_path):
    """Real pip reads the file as constraints: the installed versions satisfy
    them, and a package asking for another numpy is refused because of the pin."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(dependencies.pinned_constraints())
    satisfied = run_pip_offline(constraints, *SLICER_PACKAGES, "torch")
    assert satisfied.returncode == 0, satisfied.stdout + satisfied.stderr
    numpy_version = importlib.metadata.version("numpy")
    refused = run_pip_offline(constraints, f"numpy!={numpy_version}")
    assert refused.returncode != 0
    assert f"(constraint) numpy=={numpy_version}" in refused.stdout + refused.stderr


def test_pip_arguments_use_the_constraints_and_never_name_slicer_packages():
    arguments = dependencies.pip_arguments(REQUIREMENTS, "/tmp/pins.txt")
    assert arguments[:2] == ["-c", "/tmp/pins.txt"]
    assert arguments[2:] == [r.pip_spec for r in REQUIREMENTS]
    assert "monai>=1.3" in arguments and "pillow>=10" in arguments and "install" not in arguments
    named = {dependencies.canonical_name(argument.split(">")[0].split("=")[0]) for argument in arguments[2:]}
    assert not named & {dependencies.canonical_name(name) for name in SLICER_PACKAGES}
    for name in ("numpy", "simpleitk", "PyDicom"):
        with pytest.raises(ValueError, match="comes with Slicer"):
            dependencies.pip_arguments([Requirement(name, name.lower())], "/tmp/pins.txt")


# ---- the plan ----------------------------------------------------------------------------------

def test_torch_goes_through_pytorch_utils_when_it_is_importable(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.ModuleType("PyTorchUtils"))
    assert dependencies.pytorch_utils_available()
    plan = dependencies.install_plan([by_name("torch"), by_name("monai")], OPTIONAL)
    assert plan.torch_via_pytorch_utils
    assert [r.name for r in plan.pip] == ["monai"] and plan.optional == OPTIONAL


def test_torch_goes_through_pip_without_the_pytorch_extension(monkeypatch):
    monkeypatch.delitem(sys.modules, "PyTorchUtils", raising=False)
    assert not dependencies.pytorch_utils_available()
    plan = dependencies.install_plan([by_name("torch"), by_name("monai")])
    assert not plan.torch_via_pytorch_utils
    assert dependencies.pip_arguments(plan.pip, "c.txt") == ["-c", "c.txt", "torch>=2.1", "monai>=1.3"]
    assert not dependencies.install_plan([by_name("monai")], pytorch_utils=True).torch_via_pytorch_utils


def test_the_plan_runs_torch_first_then_pip_under_the_constraints():
    events: list[tuple] = []

    def pip_install(arguments: list[str]) -> None:
        assert arguments[0] == "-c"
        events.append(("pip", arguments[2:], constraint_pins(Path(arguments[1]).read_text())))

    plan = dependencies.InstallPlan(torch_via_pytorch_utils=True, pip=[by_name("monai")], optional=OPTIONAL)
    warnings = dependencies.run_install_plan(plan, pip_install, install_torch=lambda: events.append(("torch",)))
    assert warnings == []
    assert [event[:2] for event in events] == [("torch",), ("pip", ["monai>=1.3"]),
                                               ("pip", ["onnxruntime>=1.17", "onnx>=1.15"])]
    assert events[1][2]["numpy"] == importlib.metadata.version("numpy")
    assert events[1][2]["torch"] == importlib.metadata.version("torch")


def test_a_failed_optional_install_is_a_warning_and_a_failed_required_one_raises():
    def pip_install(arguments: list[str]) -> None:
        if "onnx>=1.15" in arguments or "monai>=1.3" in arguments:
            raise subprocess.CalledProcessError(1, ["pip", *arguments])

    warnings = dependencies.run_install_plan(dependencies.InstallPlan(pip=[by_name("tqdm")], optional=OPTIONAL),
                                             pip_install)
    assert len(warnings) == 1 and warnings[0].startswith("onnxruntime, onnx:")
    with pytest.raises(subprocess.CalledProcessError):
        dependencies.run_install_plan(dependencies.InstallPlan(pip=[by_name("monai")], optional=OPTIONAL),
                                      pip_install)


class FakePyTorchUtilsLogic:
    """SlicerPyTorch's PyTorchUtilsLogic.installTorch signature:
    (askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
    torchvisionVersionRequirement=None) -> torch module, or None when declined."""

    calls: list[dict] = []
    returns: object = None

    def installTorch(self, askConfirmation=False, forceComputationBackend=None,  # noqa: N802 (its API)
                     torchVersionRequirement=None, torchvisionVersionRequirement=None):
        FakePyTorchUtilsLogic.calls.append({"askConfirmation": askConfirmation,
                                            "torchVersionRequirement": torchVersionRequirement})
        return FakePyTorchUtilsLogic.returns


def test_torch_is_installed_by_pytorch_utils_without_a_second_question(monkeypatch):
    module = types.ModuleType("PyTorchUtils")
    module.PyTorchUtilsLogic = FakePyTorchUtilsLogic
    monkeypatch.setitem(sys.modules, "PyTorchUtils", module)
    monkeypatch.setattr(FakePyTorchUtilsLogic, "calls", [])
    monkeypatch.setattr(FakePyTorchUtilsLogic, "returns", types.SimpleNamespace(__version__="2.5.1"))
    dependencies.install_torch_with_pytorch_utils()
    assert FakePyTorchUtilsLogic.calls == [{"askConfirmation": False, "torchVersionRequirement": ">=2.1"}]
    monkeypatch.setattr(FakePyTorchUtilsLogic, "returns", None)
    with pytest.raises(RuntimeError, match="did not install"):
        dependencies.install_torch_with_pytorch_utils()


def test_not_importable_reports_a_broken_package(tmp_path, monkeypatch):
    """A package that is found but fails to import (a binary missing its
    library raises OSError) is reported, with its error."""
    (tmp_path / "mskai_fake_broken").mkdir()
    (tmp_path / "mskai_fake_broken" / "__init__.py").write_text(
        "raise OSError('libmskai_fake.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken_package = Requirement("mskai-fake-broken", "mskai_fake_broken")
    assert dependencies.importable("mskai_fake_broken")  # found, so missing_packages would not list it
    broken = dependencies.not_importable([by_name("tqdm"), broken_package])
    assert broken == {"mskai-fake-broken": "OSError: libmskai_fake.so: cannot open shared object file"}


# ---- testing ---------------------------------------------------------------------------------------

def test_testing_skip_reason_only_when_testing_and_a_required_package_is_missing():
    torch_missing = fake_find_spec({"torch"})
    reason = dependencies.testing_skip_reason(testing=True, find_spec=torch_missing)
    assert reason and "torch" in reason and "monai" not in reason
    both = dependencies.testing_skip_reason(testing=True, find_spec=fake_find_spec({"torch", "monai"}))
    assert "torch, monai" in both
    assert dependencies.testing_skip_reason(testing=False, find_spec=torch_missing) is None
    assert dependencies.testing_skip_reason(testing=True, find_spec=fake_find_spec(set())) is None
    assert dependencies.testing_skip_reason(testing=True, find_spec=fake_find_spec({"onnxruntime", "onnx"})) is None


def test_testing_follows_slicer_app(standalone_slicer, monkeypatch):
    import slicer

    assert dependencies.testing_enabled()  # the standalone application runs in testing mode
    assert dependencies.testing_skip_reason(find_spec=fake_find_spec({"monai"}))
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: False)
    assert not dependencies.testing_enabled()
    assert dependencies.testing_skip_reason(find_spec=fake_find_spec({"monai"})) is None


# ---- the dialog -----------------------------------------------------------------------------------------

class SlicerDialogs:
    """Records what ensure_dependencies asks of slicer.util."""

    def __init__(self, confirm: bool):
        self.confirm = confirm
        self.questions: list[dict] = []
        self.installs: list[list[str]] = []
        self.errors: list[str] = []

    def confirmOkCancelDisplay(self, text, windowTitle=None, parent=None, **kwargs):  # noqa: N802
        self.questions.append({"text": text, "windowTitle": windowTitle, **kwargs})
        return self.confirm

    def pip_install(self, arguments):
        self.installs.append(list(arguments))

    def errorDisplay(self, text, windowTitle=None, parent=None, standardButtons=None, **kwargs):  # noqa: N802
        self.errors.append(text)

    @contextmanager
    def tryWithErrorDisplay(self, message=None, show=True, waitCursor=False):  # noqa: N802
        try:
            yield
        except Exception as error:
            self.errors.append(f"{message}\n\n{error}")
            raise


@pytest.fixture
def dialog(standalone_slicer, monkeypatch):
    """dependency_dialog with a fresh cache and slicer.util's dialogs and pip recorded."""
    import slicer.util

    from mskai_slicer import dependency_dialog

    monkeypatch.setattr(dependency_dialog, "_ready", False)

    def use(confirm: bool, missing: list[Requirement], optional_missing: list[Requirement] = (),
            testing: bool = False) -> SlicerDialogs:
        recorder = SlicerDialogs(confirm)
        for name in ("confirmOkCancelDisplay", "pip_install", "errorDisplay", "tryWithErrorDisplay"):
            monkeypatch.setattr(slicer.util, name, getattr(recorder, name))
        def missing_packages(optional: bool = False, **_: object) -> list[Requirement]:
            return list(optional_missing if optional else missing)

        monkeypatch.setattr(dependencies, "missing_packages", missing_packages)
        monkeypatch.setattr(dependencies, "testing_enabled", lambda: testing)
        monkeypatch.setattr(dependencies, "pytorch_utils_available", lambda find_spec=None: False)
        return recorder

    return dependency_dialog, use


def test_nothing_missing_asks_nothing_and_is_remembered(dialog, monkeypatch):
    module, use = dialog
    recorder = use(confirm=False, missing=[])
    assert module.ensure_dependencies("SpineOVF") is True
    monkeypatch.setattr(dependencies, "missing_packages", None)  # a second call must not look again
    assert module.ensure_dependencies("SpineOVF") is True
    assert recorder.questions == [] and recorder.installs == []


def test_under_testing_nothing_is_asked_or_installed(dialog, caplog):
    module, use = dialog
    recorder = use(confirm=True, missing=[by_name("torch")], testing=True)
    with caplog.at_level(logging.WARNING):
        assert module.ensure_dependencies("WristQC") is False
    assert recorder.questions == [] and recorder.installs == []
    assert "torch not installed" in caplog.text and "testing" in caplog.text


def test_declining_installs_nothing(dialog):
    module, use = dialog
    recorder = use(confirm=False, missing=[by_name("torch"), by_name("matplotlib")], optional_missing=OPTIONAL)
    assert module.ensure_dependencies("SpineOVF") is False
    assert recorder.installs == [] and len(recorder.questions) == 1
    question = recorder.questions[0]
    text = question["text"]
    assert "SpineOVF" in text and "torch" in text and "matplotlib" in text
    assert "Optional" in text and "onnxruntime" in text
    assert "numpy, SimpleITK and pydicom are kept" in text
    assert "matplotlib>=3.7" in question["detailedText"] and "numpy==" in question["detailedText"]


def test_confirming_installs_once_and_then_imports(dialog):
    module, use = dialog
    recorder = use(confirm=True, missing=[by_name("tqdm"), by_name("torch")], optional_missing=OPTIONAL)
    assert module.ensure_dependencies("SpineOVF") is True
    assert len(recorder.questions) == 1 and recorder.errors == []
    assert [arguments[2:] for arguments in recorder.installs] == [["tqdm>=4.60", "torch>=2.1"],
                                                                   ["onnxruntime>=1.17", "onnx>=1.15"]]
    assert all(arguments[0] == "-c" for arguments in recorder.installs)
    assert module.ensure_dependencies("SpineOVF") is True and len(recorder.questions) == 1


def test_a_failed_install_says_so_and_returns_false(dialog, monkeypatch):
    module, use = dialog
    recorder = use(confirm=True, missing=[by_name("monai")])

    def failing_pip(arguments):
        raise subprocess.CalledProcessError(1, ["pip", "install", *arguments])

    import slicer.util

    monkeypatch.setattr(slicer.util, "pip_install", failing_pip)
    assert module.ensure_dependencies("SpineOVF") is False
    assert len(recorder.errors) == 1 and "failed" in recorder.errors[0] and "README" in recorder.errors[0]


def test_a_package_that_still_does_not_import_is_a_failure(dialog):
    module, use = dialog
    recorder = use(confirm=True, missing=[Requirement("mskai-no-such-package", "mskai_no_such_package")])
    assert module.ensure_dependencies("WristQC") is False
    assert len(recorder.installs) == 1
    assert len(recorder.errors) == 1 and "mskai-no-such-package" in recorder.errors[0]
    assert module._ready is False


def test_the_dialog_uses_only_slicer_util_functions_that_exist_with_those_keywords():
    """Every ``slicer.util.<name>(...)`` call of dependency_dialog.py names a
    function of Slicer's slicer.util, and its keywords are parameters of it or
    go to its ``**kwargs`` (which Slicer sets on the message box)."""
    import slicer.util

    tree = ast.parse((REPOSITORY / "mskai_slicer" / "dependency_dialog.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and ast.unparse(node.func.value) == "slicer.util"]
    assert {call.func.attr for call in calls} == {"confirmOkCancelDisplay", "tryWithErrorDisplay", "errorDisplay"}
    for call in calls:
        function = getattr(slicer.util, call.func.attr)
        parameters = inspect.signature(function).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        for keyword in call.keywords:
            assert keyword.arg in parameters or takes_any, f"slicer.util.{call.func.attr} has no {keyword.arg}"
    assert "pip_install" in ast.unparse(tree) and callable(slicer.util.pip_install)


def test_the_readme_manual_install_matches_the_list():
    """The README's by-hand command installs what the dialog would (torch
    apart: the PyTorch extension installs it) under the same constraints."""
    readme = (REPOSITORY / "README.md").read_text()
    section = readme.split("## Using the extension in 3D Slicer", 1)[1].split("\n## ", 1)[0]
    block = next(part for part in section.split("```python")[1:] if "pip_install" in part).split("```")[0]
    call = next(node for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Call)
                and ast.unparse(node.func) == "slicer.util.pip_install")
    option, _path, *packages = call.args[0].elts
    assert ast.literal_eval(option) == "-c" and "dependencies.pinned_constraints()" in block
    assert [ast.literal_eval(package) for package in packages] == [r.name for r in REQUIREMENTS if r.name != "torch"]
