"""Small file helpers every layer uses: JSON inputs with one-line errors, atomic writes,
and output folders.

Output folders (issue 15), the same for every command and task:

* :func:`check_output_folder` refuses, before any work starts, a folder that is a
  file, lies below a file, cannot be created or written, or has no room: one line
  (:class:`mskai.OutputError`, exit 2) naming the folder and the reason;
* :func:`replace_folder` writes a result into a work folder and puts it in place as
  a whole, so a failure leaves the previous result and a success never mixes two;
* :func:`result_folder_contents` decides what may be replaced: an absent or empty
  folder, or one that holds an MSKAI ``result.json`` and only the files it lists.
  A folder with anything else (a user's data, another tool's files) is refused,
  never emptied.

Kept apart from :mod:`mskai.io` (the DICOM/NIfTI readers, which load pydicom and
SimpleITK) so that the trainer, the recipes and the bundles can read a JSON file or
write a checkpoint without importing the image readers.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mskai.errors import InputError, MskaiError, OutputError


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


# --------------------------------------------------------------------------- output folders

MIN_FREE_BYTES = 32 * 2**20
"""Free space an output folder's disk must have before any work starts.  A result is a
few megabytes; a write that still runs out of space fails in one line and leaves the
previous result as it was (:func:`replace_folder`)."""
RESULT_NAME = "result.json"
_OS_CLUTTER = frozenset({".DS_Store", "._.DS_Store", "Thumbs.db", "desktop.ini"})
"""Files a file browser leaves in any folder it shows: never a reason to refuse one."""
_WRITE_ERRNOS = frozenset(code for code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                                            getattr(errno, "EDQUOT", None), errno.EFBIG, errno.EIO)
                          if code is not None)
"""Errors of writing a result that are the output folder's (full, read-only, not ours), not a bug."""
_WORK_NAME = re.compile(r"\.mskai-(new|old)-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _os_reason(error: OSError) -> str:
    """An OS error's reason in a few words (``permission denied``, ``read-only file system``)."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if error.errno == errno.ENOENT:  # a folder that exists but takes no new file: /proc, /sys
        return "the file system there does not take new files"
    return error.strerror or str(error) or type(error).__name__


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def _nearest_existing(folder: Path, label: str) -> Path:
    """``folder`` when it exists (it must be a folder), else its nearest existing
    ancestor (which must be a folder); a one-line :class:`OutputError` otherwise."""
    candidate = folder
    while True:
        try:
            info = os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            if candidate == folder and os.path.islink(candidate):
                raise OutputError(f"{label} is a broken link (it points at {os.readlink(candidate)})") from None
            if candidate.parent == candidate:
                raise OutputError(f"{label} cannot be created: no folder above it exists") from None
            candidate = candidate.parent
            continue
        except PermissionError:
            raise OutputError(f"{label} cannot be used: permission denied to look into "
                              f"{candidate.parent}") from None
        except OSError as error:
            raise OutputError(f"{label} cannot be used: {candidate}: {_os_reason(error)}") from None
        if stat.S_ISDIR(info.st_mode):
            return candidate
        if candidate == folder:
            raise OutputError(f"{label} is a file, not a folder")
        raise OutputError(f"{label} cannot be created: {candidate} is a file, not a folder")


def check_output_folder(folder: str | Path, *, what: str = "output folder",
                        min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Refuse, before any work starts, a folder that cannot take MSKAI's output: raise
    :class:`OutputError` with one line naming the folder and the reason when it is a
    file, lies below a file, cannot be created or written (a new file is really
    created and removed, so read-only file systems, ``/proc`` and missing rights are
    caught, also for root), or its disk has less than ``min_free_bytes`` free.
    Nothing is created.  ``what`` names the folder in the message (``"models
    folder"``).  Returns the folder as a :class:`Path`."""
    folder = Path(folder).expanduser()
    label = f"{what} {folder}"
    existing = _nearest_existing(folder, label)
    try:
        handle, probe = tempfile.mkstemp(prefix=".mskai-write-test-", dir=existing)
    except OSError as error:
        if existing == folder:
            raise OutputError(f"{label} is not writable: {_os_reason(error)}") from None
        raise OutputError(f"{label} cannot be created in {existing}: {_os_reason(error)}") from None
    os.close(handle)
    os.unlink(probe)
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        free = None
    if free is not None and free < min_free_bytes:
        raise OutputError(f"{label}: only {_size(free)} free on its disk, at least {_size(min_free_bytes)} "
                          "is needed")
    return folder


def _json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None (absent, unreadable, not a JSON object)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _mskai_result(path: Path) -> dict[str, Any] | None:
    """The ``result.json`` at ``path`` when it is one MSKAI wrote, else None."""
    content = _json_object(path)
    if content is not None and isinstance(content.get("task"), str) and "mskai_version" in content:
        return content
    return None


def listed_outputs(result: dict[str, Any]) -> set[str]:
    """The file names (relative to its folder) that a result's ``outputs`` lists."""
    names: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, str) and value:
            names.add(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    collect(result.get("outputs"))
    return names


def _listing(names: list[str], shown: int = 3) -> str:
    quoted = ", ".join(repr(name) for name in names[:shown])
    return quoted + (f" and {len(names) - shown} more" if len(names) > shown else "")


def result_folder_contents(folder: str | Path) -> dict[str, Any] | None:
    """What an existing output folder of ``mskai analyze`` holds: None when it is
    absent or empty, the previous ``result.json`` dict when it holds an MSKAI result
    and nothing else (``result.json`` and the files its ``outputs`` lists; file
    browsers' ``.DS_Store``/``Thumbs.db`` and MSKAI's own unfinished work folders are
    ignored).  Any other file makes it a folder MSKAI must not replace: a one-line
    :class:`OutputError` says so (MSKAI never deletes what it did not write)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        entries = sorted(name for name in os.listdir(folder)
                         if name not in _OS_CLUTTER and not _WORK_NAME.search(name))
    except OSError as error:
        raise OutputError(f"output folder {folder} cannot be read: {_os_reason(error)}") from None
    if not entries:
        return None
    previous = _mskai_result(folder / RESULT_NAME)
    advice = "give a new or empty folder (MSKAI replaces a folder only when it holds nothing but an MSKAI result)"
    if previous is None:
        raise OutputError(f"output folder {folder} already holds files that are not an MSKAI result "
                          f"({_listing(entries)}); {advice}")
    mine = {RESULT_NAME} | {Path(name).parts[0] for name in listed_outputs(previous) if Path(name).parts}
    foreign = [name for name in entries if name not in mine]
    if foreign:
        raise OutputError(f"output folder {folder} holds an MSKAI result and other files "
                          f"({_listing(foreign)}); {advice}")
    return previous


def check_result_folder(folder: str | Path) -> Path:
    """:func:`check_output_folder` plus :func:`result_folder_contents`: the checks of
    an analysis' output folder before any work starts."""
    folder = check_output_folder(folder)
    result_folder_contents(folder)
    return folder


def check_result_listing(folder: str | Path) -> None:
    """Raise ``RuntimeError`` (a bug of the task that wrote it) when the folder has no
    ``result.json`` or its ``outputs`` name a file that is not there."""
    folder = Path(folder)
    result = _json_object(folder / RESULT_NAME)
    if result is None:
        raise RuntimeError(f"the analysis wrote no valid {RESULT_NAME}")
    missing = sorted(name for name in listed_outputs(result) if not (folder / name).exists())
    if missing:
        raise RuntimeError(f"{RESULT_NAME} lists files that were not written: {_listing(missing)}")


def _work_name(kind: str) -> str:
    return f".mskai-{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _remove_abandoned_work(folder: Path, prefix: str) -> None:
    """Remove MSKAI work folders ``<prefix>.mskai-...`` in ``folder`` that a process of
    this machine left when it was killed while writing (its process is gone)."""
    try:
        names = [name for name in os.listdir(folder) if name.startswith(prefix + ".mskai-")]
    except OSError:
        return
    for name in names:
        match = _WORK_NAME.search(name)
        if match is None or match["host"] != socket.gethostname() or int(match["pid"]) == os.getpid():
            continue
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder / name, ignore_errors=True)
        except OSError:  # alive, as another user
            pass


def _swaps_beside(target: Path) -> bool:
    """Whether ``target`` can be replaced by renaming a folder beside it: its parent is
    writable and it is a plain folder on the parent's disk (not a link, not a mount
    point), or it does not exist yet."""
    parent = target.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return not os.path.lexists(target)  # nothing to swap; creating it fails in one line
    if not os.path.lexists(target):
        return True
    try:
        here = os.getcwd()
    except OSError:
        here = ""
    if here and (here == str(target) or here.startswith(str(target) + os.sep)):
        return False  # a shell working in the folder must not find itself in a removed one
    try:
        return (not target.is_symlink() and not os.path.ismount(target)
                and os.stat(target).st_dev == os.stat(parent).st_dev)
    except OSError:
        return False


@contextmanager
def replace_folder(target: str | Path, *, owned: bool = False,
                   announce: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Write a folder's new content into a work folder and put it in place as a whole.

    The block gets the work folder's path (not created yet: writers create it) and
    writes the new content there.  When the block ends without an error the work
    folder replaces ``target`` at once: a rename of a folder beside ``target`` (on
    the same disk), or, where that cannot be done (the parent is not writable,
    ``target`` is a link or a mount point), a work folder inside ``target`` whose
    files are moved in with ``result.json`` last, after the old files were moved
    aside.  When the block fails the work folder is removed and ``target`` is left
    as it was: readers see the previous content or the whole new one, never a part
    or a mix.  A write refused by the disk (full, read-only, no rights) becomes a
    one-line :class:`OutputError` naming ``target``.

    ``owned``: ``target`` belongs to the caller (a batch's item folder) and is
    replaced whatever it holds; otherwise it must be absent, empty or an MSKAI result
    (:func:`result_folder_contents`, checked again before the swap), and replacing a
    result calls ``announce`` with a line saying so.
    """
    shown = Path(target)
    target = Path(os.path.abspath(target))  # "." and "out/.." name their folder, not a rename source
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"output folder {shown} cannot be created: {_os_reason(error)}") from None
    beside = _swaps_beside(target)
    home = parent if beside else target
    prefix = f".{target.name}" if beside else ""
    _remove_abandoned_work(home, prefix)
    work = home / f"{prefix}{_work_name('new')}"
    try:
        yield work
        work.mkdir(exist_ok=True)
        previous = None if owned else result_folder_contents(target)
        if beside:
            _swap_beside(work, target)
        else:
            _swap_inside(work, target)
    except OSError as error:
        shutil.rmtree(work, ignore_errors=True)
        if error.errno in _WRITE_ERRNOS:
            raise OutputError(f"the result cannot be written into {shown}: {_os_reason(error)}; "
                              "the folder was left as it was") from error
        raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if previous is not None and announce is not None:
        announce(f"replaced the previous {previous.get('task')} result in {shown} "
                 f"(verdict {previous.get('verdict')!r}) as a whole")


def _swap_beside(work: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(work, target)
        return
    old = target.parent / f".{target.name}{_work_name('old')}"
    os.rename(target, old)
    try:
        os.rename(work, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _swap_inside(work: Path, target: Path) -> None:
    old = target / _work_name("old")
    old.mkdir()
    moved: list[str] = []
    placed: list[str] = []
    try:
        for name in os.listdir(target):
            if name not in (work.name, old.name):
                os.rename(target / name, old / name)
                moved.append(name)
        for name in sorted(os.listdir(work), key=lambda entry: entry == RESULT_NAME):  # result.json last
            os.rename(work / name, target / name)
            placed.append(name)
    except BaseException:
        for name in placed:  # take the new files out again and put the previous ones back
            os.rename(target / name, work / name)
        for name in moved:
            os.rename(old / name, target / name)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    work.rmdir()
