"""What MSKAI needs in Slicer's Python, and how to install it without harm.

Qt-free: the dialog that asks the user is :mod:`mskai_slicer.dependency_dialog`;
everything it decides comes from here, so plain pytest checks it.

* :data:`REQUIREMENTS`: the packages the analyses import (pip name, import
  name, version specifier), and the optional ones (ONNX Runtime for faster CPU
  inference).  They follow ``pyproject.toml``'s dependencies, less the
  packages Slicer ships (:data:`SLICER_PACKAGES`).
* :func:`missing_packages`: which of them cannot be found, by import name
  (``pillow`` is imported as ``PIL``, ``pylibjpeg-openjpeg`` as ``openjpeg``).
* :func:`pinned_constraints` and :func:`pip_arguments`: a pip constraints file
  that pins the installed numpy, SimpleITK and pydicom (and torch once it is
  there) to their versions, so that no install replaces Slicer's own copies.
* :func:`install_plan` and :func:`run_install_plan`: torch through the PyTorch
  extension's ``PyTorchUtils`` when that module is there (it picks the CPU or
  CUDA build that fits the machine), otherwise through pip; the rest through pip.
* :func:`testing_skip_reason`: why a self-test skips the analysis (nothing is
  installed during testing).

Runs in Slicer 5.8's Python 3.9: no syntax or library calls newer than that.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

# Packages that Slicer itself ships and its own modules use (DICOM, Segment
# Editor, SimpleFilters): never installed or replaced, pinned as they are.
SLICER_PACKAGES = ("numpy", "SimpleITK", "pydicom")
# The PyTorch extension's helper module (SlicerPyTorch's PyTorchUtils).
PYTORCH_UTILS_MODULE = "PyTorchUtils"
# The torch versions MSKAI supports (pyproject.toml); the PyTorch extension or
# pip chooses the newest build that fits this Python and machine.
TORCH_VERSION_REQUIREMENT = ">=2.1"


@dataclass(frozen=True)
class Requirement:
    """One package of Slicer's Python that MSKAI needs.

    ``name`` is the pip project name, ``import_name`` the top-level module it
    provides, ``specifier`` the pip version specifier ("" for any version)."""

    name: str
    import_name: str
    specifier: str = ""
    purpose: str = ""
    optional: bool = False

    @property
    def pip_spec(self) -> str:
        """The requirement as pip writes it, e.g. ``monai>=1.3``."""
        return self.name + self.specifier


REQUIREMENTS = (
    Requirement("torch", "torch", TORCH_VERSION_REQUIREMENT, "neural networks"),
    Requirement("monai", "monai", ">=1.3", "networks, transforms and occlusion sensitivity"),
    Requirement("safetensors", "safetensors", ">=0.4", "model weights"),
    Requirement("matplotlib", "matplotlib", ">=3.7", "report figures"),
    Requirement("pylibjpeg", "pylibjpeg", ">=2.0", "compressed DICOM"),
    Requirement("pylibjpeg-openjpeg", "openjpeg", ">=2.0", "JPEG 2000 DICOM"),
    Requirement("pylibjpeg-libjpeg", "libjpeg", ">=2.0", "JPEG DICOM"),
    Requirement("tqdm", "tqdm", ">=4.60", "progress"),
    Requirement("psutil", "psutil", ">=5.9", "memory checks"),
    Requirement("pillow", "PIL", ">=10", "radiograph images"),
    Requirement("scipy", "scipy", ">=1.10", "image filters"),
    Requirement("onnxruntime", "onnxruntime", ">=1.17", "faster CPU inference", optional=True),
    Requirement("onnx", "onnx", ">=1.15", "faster CPU inference (model export)", optional=True),
)

FindSpec = Callable[[str], object]
VersionOf = Callable[[str], str]


def canonical_name(name: str) -> str:
    """A project name as pip compares them (PEP 503): ``SimpleITK`` -> ``simpleitk``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def importable(import_name: str, find_spec: FindSpec = importlib.util.find_spec) -> bool:
    """Whether a top-level module can be imported, without importing it.

    A module already imported without a ``__spec__`` (``find_spec`` raises
    ValueError for it) counts; one set to ``None`` in ``sys.modules`` is blocked."""
    try:
        return find_spec(import_name) is not None
    except ValueError:
        return sys.modules.get(import_name) is not None
    except ImportError:
        return False


def missing_packages(optional: bool = False,
                     find_spec: FindSpec = importlib.util.find_spec) -> list[Requirement]:
    """The required packages that cannot be imported, or with ``optional=True``
    the optional ones, in :data:`REQUIREMENTS` order."""
    importlib.invalidate_caches()  # see packages installed since the last look (e.g. by hand in the console)
    return [requirement for requirement in REQUIREMENTS
            if requirement.optional == optional and not importable(requirement.import_name, find_spec)]


def not_importable(requirements: Iterable[Requirement]) -> dict[str, str]:
    """Pip name -> error for each requirement whose module fails to import.
    Stronger than :func:`missing_packages`: an install that left a broken
    package behind is found here."""
    importlib.invalidate_caches()  # packages pip has just written become visible
    failures = {}
    for requirement in requirements:
        try:
            importlib.import_module(requirement.import_name)
        except Exception as error:  # a broken binary raises OSError, not only ImportError
            failures[requirement.name] = f"{type(error).__name__}: {error}"
    return failures


def installed_version(name: str, version: VersionOf = importlib.metadata.version) -> str | None:
    """The installed version of a project: its pip metadata, else the module's
    ``__version__`` (a package copied into Slicer without metadata), else None."""
    try:
        return version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
    module = sys.modules.get(name)
    if module is None and importable(name):
        try:
            module = importlib.import_module(name)
        except Exception:
            return None
    return getattr(module, "__version__", None) if module is not None else None


def pinned_constraints(names: Sequence[str] = (*SLICER_PACKAGES, "torch"),
                       version: VersionOf = importlib.metadata.version) -> str:
    """A pip constraints file (its text) pinning each installed project of
    ``names`` to its installed version; projects not installed are left free.

    Pinning keeps pip from replacing Slicer's numpy, SimpleITK and pydicom
    (and the torch build the PyTorch extension chose) when a new package asks
    for another version: pip then picks a version of that package that fits,
    or stops with a conflict instead of breaking Slicer."""
    lines = ["# MSKAI: keep the packages Slicer's Python already has as they are"]
    for name in names:
        installed = installed_version(name, version)
        if installed:
            lines.append(f"{name}=={installed}")
        else:
            lines.append(f"# {name}: not installed")
    return "\n".join(lines) + "\n"


def pip_arguments(packages: Iterable[Requirement], constraints_path: str) -> list[str]:
    """The arguments of ``slicer.util.pip_install`` (which adds ``install``)
    for ``packages`` under the constraints file: ``["-c", path, "monai>=1.3", ...]``.

    Raises ValueError for a package Slicer ships: those are never installed."""
    specs = []
    protected = {canonical_name(name) for name in SLICER_PACKAGES}
    for requirement in packages:
        if canonical_name(requirement.name) in protected:
            raise ValueError(f"{requirement.name} comes with Slicer and is never installed by MSKAI")
        specs.append(requirement.pip_spec)
    return ["-c", str(constraints_path), *specs]


@dataclass
class InstallPlan:
    """How the missing packages get installed: torch through the PyTorch
    extension or not at all (``torch_via_pytorch_utils``), then ``pip`` in one
    pip call under the constraints, then ``optional`` in another whose failure
    is not fatal."""

    torch_via_pytorch_utils: bool = False
    pip: list[Requirement] = field(default_factory=list)
    optional: list[Requirement] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.torch_via_pytorch_utils or self.pip or self.optional)


def pytorch_utils_available(find_spec: FindSpec = importlib.util.find_spec) -> bool:
    """Whether the PyTorch extension's ``PyTorchUtils`` module can be imported."""
    return importable(PYTORCH_UTILS_MODULE, find_spec)


def install_plan(missing: Iterable[Requirement], optional: Iterable[Requirement] = (),
                 pytorch_utils: bool | None = None) -> InstallPlan:
    """The plan for installing ``missing`` (and ``optional``).

    Torch goes through ``PyTorchUtils`` when it is importable (``pytorch_utils``
    None: look), since it chooses the CPU or CUDA build for the machine;
    otherwise pip installs ``torch>=2.1`` with the rest."""
    if pytorch_utils is None:
        pytorch_utils = pytorch_utils_available()
    plan = InstallPlan(optional=list(optional))
    for requirement in missing:
        if requirement.name == "torch" and pytorch_utils:
            plan.torch_via_pytorch_utils = True
        else:
            plan.pip.append(requirement)
    return plan


def install_torch_with_pytorch_utils() -> None:
    """Install torch with the PyTorch extension, without its own confirmation
    (the caller has asked the user already).  Raises when it did not install."""
    import PyTorchUtils

    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                          torchVersionRequirement=TORCH_VERSION_REQUIREMENT)
    if torch is None:
        raise RuntimeError("the PyTorch extension did not install PyTorch")


def run_install_plan(plan: InstallPlan, pip_install: Callable[[list[str]], None],
                     install_torch: Callable[[], None] = install_torch_with_pytorch_utils) -> list[str]:
    """Carry out ``plan``: torch first (monai's own requirement would otherwise
    pull a torch build from PyPI), then the required packages, then the
    optional ones, each pip call under :func:`pinned_constraints` written after
    torch is there (so it is pinned too).

    ``pip_install`` is ``slicer.util.pip_install`` in Slicer.  Errors of the
    torch or required step propagate; the optional step's error is logged and
    its message returned (the analysis runs without those packages)."""
    if plan.torch_via_pytorch_utils:
        install_torch()
    warnings = []
    with tempfile.TemporaryDirectory(prefix="mskai-pip-") as folder:
        constraints_path = os.path.join(folder, "constraints.txt")
        for packages, required in ((plan.pip, True), (plan.optional, False)):
            if not packages:
                continue
            with open(constraints_path, "w", encoding="utf-8") as constraints:
                constraints.write(pinned_constraints())
            try:
                pip_install(pip_arguments(packages, constraints_path))
            except Exception as error:
                if required:
                    raise
                names = ", ".join(requirement.name for requirement in packages)
                logging.warning("MSKAI: the optional packages %s were not installed: %s", names, error)
                warnings.append(f"{names}: {error}")
    return warnings


def testing_enabled() -> bool:
    """``slicer.app.testingEnabled()`` where a Slicer application is bound, else False."""
    slicer = sys.modules.get("slicer")
    app = getattr(slicer, "app", None) if slicer is not None else None
    return bool(app is not None and app.testingEnabled())


def testing_skip_reason(testing: bool | None = None,
                        find_spec: FindSpec = importlib.util.find_spec) -> str | None:
    """Why a test of the analysis must skip, or None when it can run.

    Under testing (``testing`` None: ``slicer.app.testingEnabled()``) nothing
    is installed, so a missing required package (torch, monai, ...) means the
    analysis cannot run.  A module self-test passes ``testing=True``: it never
    installs, also when started from Reload and Test.  Optional packages never
    make a test skip."""
    if testing is None:
        testing = testing_enabled()
    missing = missing_packages(find_spec=find_spec)
    if not testing or not missing:
        return None
    names = ", ".join(requirement.name for requirement in missing)
    return (f"Skipped the analysis test: {names} not installed in this Python, and nothing is installed "
            "during testing (open the module and press Analyze to install them, or see the README).")
