"""Progress display for long work (SPEC §0.2: a bar on a terminal, plain lines otherwise).

* On a terminal (``stream.isatty()``) :func:`progress` draws a tqdm bar.
* Anywhere else (log files, CI, the Slicer log area reading a pipe) it prints
  plain lines ``"desc: 30/100 (30%)"``, at most one per 10% of the total and
  per 5 seconds, so that logs are not flooded: work done within 5 seconds
  prints nothing, longer work prints a line at least every 10% (or every 5
  seconds when the total is unknown) and a last line when it ends.
* On distributed ranks other than 0 it shows nothing, so that a ``torchrun``
  job prints one bar, not one per process.

:func:`log` prints a plain line to stderr, on rank 0 only.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

# Indirection so tests can drive the time-based throttle without sleeping.
_clock = time.monotonic


def current_rank() -> int:
    """Rank of this process in a distributed job (0 when not distributed).

    Uses the initialised process group when there is one, else ``RANK`` as set
    by ``torchrun`` (so it is right even before the group is initialised)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return int(distributed.get_rank())
    return int(os.environ.get("RANK", "0"))


def log(message: str) -> None:
    """Print ``message`` as one plain line on stderr (rank 0 only)."""
    if current_rank() == 0:
        print(message, file=sys.stderr, flush=True)


class Progress:
    """Progress over an iterable or a count of work units; see :func:`progress`."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None,
                 desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 min_fraction: float = 0.1, min_interval_s: float = 5.0):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.count = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = current_rank() == 0
        self._bar: tqdm | None = None
        if self._enabled and _is_terminal(self._stream):
            self._bar = tqdm(total=total, desc=desc or None, unit=unit, file=self._stream,
                             dynamic_ncols=True)
        # Plain-line throttle: print when this many units and seconds have passed.
        self._min_units = max(1, math.ceil(total * min_fraction)) if total else None
        self._min_interval_s = min_interval_s
        self._printed_count = 0
        self._printed_time = _clock()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress has no iterable; use update(n) instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units done."""
        self.count += n
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = _clock()
        enough_units = (self._min_units is None
                        or self.count - self._printed_count >= self._min_units)
        if enough_units and now - self._printed_time >= self._min_interval_s:
            self._print_line(now)

    def close(self) -> None:
        """Finish the display; plain lines end with the final count when any
        line was printed before (quick work stays silent)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._enabled and 0 < self._printed_count != self.count:
            self._print_line(_clock())

    def _print_line(self, now: float) -> None:
        prefix = f"{self.desc}: " if self.desc else ""
        if self.total:
            percent = int(100 * self.count / self.total)
            text = f"{prefix}{self.count}/{self.total} ({percent}%)"
        else:
            text = f"{prefix}{self.count} {self.unit}"
        print(text, file=self._stream, flush=True)
        self._printed_count = self.count
        self._printed_time = now


def progress(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
             unit: str = "it", stream: TextIO | None = None) -> Progress:
    """Show progress over ``iterable`` (``for x in progress(items, desc="reading")``)
    or, used as a context manager, over ``total`` units advanced with ``.update(n)``.

    ``stream`` defaults to ``sys.stderr`` as it is at call time (so redirections
    made after import are honoured)."""
    return Progress(iterable, total=total, desc=desc, unit=unit, stream=stream)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
