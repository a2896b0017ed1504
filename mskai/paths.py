"""Where MSKAI keeps things on disk.

* ``mskai_home()``: user cache and installed models, ``$MSKAI_HOME`` or
  ``~/.cache/mskai`` (the platform user-cache directory on Linux).
* ``resources_dir()``: the repository's / extension's ``Resources`` folder,
  which holds the shipped demo bundles and the model registry.
"""
from __future__ import annotations

import os
from pathlib import Path


def mskai_home() -> Path:
    env = os.environ.get("MSKAI_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mskai"


def resources_dir() -> Path:
    """The ``Resources`` folder beside the ``mskai`` package (repository root or
    the extension's scripted-modules folder, where CMake installs both)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "Resources", here / "Resources"):
        if candidate.is_dir():
            return candidate
    return here.parent / "Resources"


def models_dirs() -> list[Path]:
    """Folders searched for model bundles: shipped ones first, then installed ones."""
    return [resources_dir() / "Models", mskai_home() / "models"]


def cache_dir(*parts: str) -> Path:
    """A folder under the user cache, created on demand."""
    path = mskai_home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
