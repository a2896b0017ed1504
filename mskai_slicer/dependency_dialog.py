"""The one question MSKAI asks before installing into Slicer's Python.

Desktop only (Slicer's message boxes); what is missing, how it is installed and
what stays pinned come from the Qt-free :mod:`mskai_slicer.dependencies`.  The
panel's Analyze button calls :func:`ensure_dependencies` before it starts an
analysis.  Only ``slicer.util`` is used (``confirmOkCancelDisplay``,
``tryWithErrorDisplay``, ``errorDisplay``, ``pip_install``), so the file
imports without Qt.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import slicer

from mskai_slicer import dependencies
from mskai_slicer.dependencies import InstallPlan, Requirement

try:
    from slicer.i18n import tr as _
except ImportError:  # slicer.i18n is part of the desktop application only (tests import this file)
    def _(text: str) -> str:
        return text

# Set once every required package has imported: later calls cost nothing.
_ready = False


def _listed(requirements: Sequence[Requirement]) -> str:
    return "\n".join(f"  \u2022 {requirement.name} ({requirement.purpose})" for requirement in requirements)


def install_question(module_name: str, plan: InstallPlan, missing: Sequence[Requirement]) -> str:
    """The dialog's text: what is missing, how it is installed, what is kept."""
    lines = [_("{module} needs Python packages that Slicer does not have yet:").format(module=module_name),
             _listed(missing)]
    if plan.torch_via_pytorch_utils:
        lines.append(_("PyTorch is installed by the PyTorch extension, which picks the build (CPU or CUDA) "
                       "for this computer; the others by pip."))
    elif any(requirement.name == "torch" for requirement in plan.pip):
        lines.append(_("The PyTorch extension is not installed, so pip installs PyTorch from the Python "
                       "Package Index (installing that extension first lets it pick the build for this computer)."))
    if plan.optional:
        lines += [_("Optional, installed too (the analysis also runs without them):"), _listed(plan.optional)]
    lines += [_("Slicer's own numpy, SimpleITK and pydicom are kept as they are."),
              _("The download can take several minutes (PyTorch is large). Install now?")]
    return "\n\n".join(lines)


def ensure_dependencies(module_name: str, parent: Any = None) -> bool:
    """True when every package the analysis needs imports, installing what is
    missing after the user agrees in one dialog.

    Returns True at once when nothing is missing (checked once per session).
    Returns False when the user declines, when an install fails (an error
    message says why and where pip's output is), and always under testing
    (``slicer.app.testingEnabled()``), where nothing is installed."""
    global _ready
    if _ready:
        return True
    missing = dependencies.missing_packages()
    if not missing:
        _ready = True
        return True
    names = ", ".join(requirement.name for requirement in missing)
    if dependencies.testing_enabled():
        logging.warning("%s: %s not installed; nothing is installed during testing", module_name, names)
        return False

    plan = dependencies.install_plan(missing, dependencies.missing_packages(optional=True))
    details = "\n".join([_("pip installs: {packages}").format(
                             packages=" ".join(requirement.pip_spec for requirement in plan.pip + plan.optional)),
                         _("pip keeps (constraints):"), dependencies.pinned_constraints()])
    if not slicer.util.confirmOkCancelDisplay(install_question(module_name, plan, missing),
                                              windowTitle=_("{module}: install Python packages").format(
                                                  module=module_name),
                                              parent=parent, detailedText=details):
        logging.info("%s: installing %s declined", module_name, names)
        return False

    failed = _("Installing the Python packages for {module} failed. pip's output is in the Python console; "
               "the README's section 'Using the extension in 3D Slicer' shows how to install them "
               "by hand.").format(module=module_name)
    try:
        with slicer.util.tryWithErrorDisplay(failed, waitCursor=True):
            dependencies.run_install_plan(plan, slicer.util.pip_install)
    except Exception:  # tryWithErrorDisplay has shown the error
        return False
    broken = dependencies.not_importable(missing)
    if broken:
        slicer.util.errorDisplay(failed + "\n\n" + "\n".join(f"{name}: {error}" for name, error in broken.items()),
                                 parent=parent)
        return False
    _ready = True
    return True
