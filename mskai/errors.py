"""User-facing errors of MSKAI.

Every problem a user can cause (bad input, wrong model, missing device) is
raised as an :class:`MskaiError` whose message is one clear line.  The command
line prints that line and exits non-zero without a traceback (unless
``--debug``); the Slicer modules show it in an error box.
"""
from __future__ import annotations


class MskaiError(Exception):
    """Base class: the message is one line that names the problem."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class InputError(MskaiError):
    """The input image/file/folder cannot be used (empty, corrupt, wrong kind...)."""


class ModelError(MskaiError):
    """A model bundle is missing, malformed, tampered with or incompatible."""


class OutputError(MskaiError):
    """The output folder cannot take the result (a file, not writable, no room, or a
    folder that holds other files than an MSKAI result)."""


class DeviceError(MskaiError):
    """The requested compute device is not available."""


class NotAvailableError(MskaiError):
    """The requested analysis or feature is not built yet."""

    exit_code = 3
