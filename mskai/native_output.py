"""What C libraries (ITK and its NIfTI library, image decoders) print straight to the
process' standard error, kept off the terminal.

ITK's readers and writers print lines such as ``** ERROR: nifti_convert_nhdr2nim: bad
dim[1]`` on file descriptor 2 before they raise, so a user would see them ahead of
MSKAI's own one-line error.  :func:`native_messages` points descriptor 2 at a
temporary file around such a call and keeps what was printed (the last
:data:`KEPT` messages, :func:`kept_messages`); ``mskai --debug`` prints them after
its own output.  The redirect is process-wide, so it is held by one thread at a time
and only around library calls, never around MSKAI's own output.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

KEPT = 50
"""How many captured messages are kept for ``--debug``."""
_kept: deque[tuple[int, str]] = deque(maxlen=KEPT)
_count = 0
_lock = threading.RLock()
_PREFIX = re.compile(r"^[\s*]*(?:error|warning)\s*(?:\([^)]*\))?\s*:?\s*", re.IGNORECASE)


class Captured:
    """What a library printed during one :func:`native_messages` block (filled when
    the block ends)."""

    def __init__(self) -> None:
        self.text = ""

    @property
    def reason(self) -> str:
        """The first line the library printed, without its ``** ERROR:`` prefix and at
        most 120 characters ("" when it printed nothing)."""
        for line in self.text.splitlines():
            line = _PREFIX.sub("", line).strip()
            if line:
                return line if len(line) <= 120 else line[:117] + "..."
        return ""


def _flush_python_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


@contextmanager
def native_messages(what: str) -> Iterator[Captured]:
    """Capture what C code prints on descriptor 2 during the block (``what`` names the
    call in the kept message, e.g. ``"ITK reading /x/ct.nii.gz"``).  Where the
    descriptor cannot be redirected (no descriptor 2), the block runs as it is."""
    captured = Captured()
    with _lock:
        _flush_python_stderr()
        try:
            saved = os.dup(2)
        except OSError:
            saved = None
        if saved is None:
            yield captured
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                _flush_python_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                captured.text = sink.read().decode("utf-8", errors="replace").strip()
                if captured.text:
                    global _count
                    _count += 1
                    _kept.append((_count, f"{what}: {captured.text}"))


def mark() -> int:
    """A mark of what was captured so far, for :func:`kept_messages`."""
    return _count


def kept_messages(since: int = 0) -> list[str]:
    """The kept messages captured after ``since`` (a :func:`mark`), oldest first."""
    return [text for number, text in _kept if number > since]
