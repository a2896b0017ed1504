"""Logic of the CervicalMR module (no Qt: it runs on a bare MRML scene too)."""
from CervicalMRLib.logic import CervicalMRLogic

__all__ = ["CervicalMRLogic"]
