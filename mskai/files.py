"""Small file helpers every layer uses: JSON inputs with one-line errors, atomic writes.

Kept apart from :mod:`mskai.io` (the DICOM/NIfTI readers, which load pydicom and
SimpleITK) so that the trainer, the recipes and the bundles can read a JSON file or
write a checkpoint without importing the image readers.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mskai.errors import InputError, MskaiError


def read_json(path: str | Path, where: str, error: type[MskaiError] = InputError) -> Any:
    """The JSON document in ``path``; raises ``error`` (default :class:`InputError`) with
    one line starting with ``where`` (e.g. ``"recipe file /x/r.json"``) when the file
    does not exist or is not JSON text."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{where} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{where} is not valid JSON ({str(problem).splitlines()[0]})") from None


@contextmanager
def atomic_open(path: Path, mode: str = "wb", **options: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; when the block ends without
    an error it is renamed over ``path``, otherwise removed.

    Readers (and concurrent writers: ranks, parallel jobs) therefore see either the
    old file or the whole new one, never a truncated one.  The temporary name holds
    the process id, so writers in different processes never share one.  ``mode``
    (``"wb"`` or ``"w"``) and ``options`` (``newline``, ``encoding``) go to
    :func:`open`.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode, **options) as handle:
            yield handle
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
