"""Logic of the WristQC module (no Qt: it runs on a bare MRML scene too)."""
from WristQCLib.logic import WristQCLogic

__all__ = ["WristQCLogic"]
