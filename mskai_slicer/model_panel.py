"""The text of a module panel's model section: the task's shipped and
installed model bundles, and installing one.  Qt-free; the panel
(:mod:`mskai_slicer.module_widget`) only shows the text and asks for the path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mskai.bundles import install_bundle, list_bundles

# list_bundles' source -> what the panel calls it.
_SOURCE_WORDS = {"registry": "shipped", "shipped": "shipped", "installed": "installed"}


def bundle_line(row: dict[str, Any]) -> str:
    """One bundle of :func:`mskai.bundles.list_bundles` in one line:
    ``"ovf-demo 1.0.0 - demonstration - shipped - checksum verified"``."""
    kind = "demonstration" if row.get("demo") else "trained"
    check = "checksum verified" if row.get("ok") else f"NOT usable: {row.get('message')}"
    source = _SOURCE_WORDS.get(str(row.get("source")), str(row.get("source")))
    return f"{row.get('id')} {row.get('version')} - {kind} - {source} - {check}"


def bundle_list_text(task_name: str, rows: Sequence[dict[str, Any]] | None = None) -> str:
    """The bundles of task ``task_name`` (one :func:`bundle_line` each, in
    listing order), or a sentence saying there are none.  ``rows`` defaults
    to :func:`mskai.bundles.list_bundles` (which verifies every checksum)."""
    rows = list_bundles() if rows is None else rows
    lines = [bundle_line(row) for row in rows if row.get("task") == task_name]
    if not lines:
        return (f"No model bundle for the {task_name} task is shipped or installed; "
                "install one from a folder or an archive.")
    return "\n".join(lines)


def install_bundle_message(path: str | Path) -> str:
    """Install the bundle folder or archive at ``path`` (checksums verified
    first, see :func:`mskai.bundles.install_bundle`) and say what was installed
    where.  Raises :class:`mskai.errors.ModelError` with a one-line reason."""
    bundle = install_bundle(Path(path))
    return f"Installed {bundle.id} {bundle.version} ({bundle.task}) into {bundle.path}"
