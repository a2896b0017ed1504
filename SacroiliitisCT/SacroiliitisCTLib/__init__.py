"""Logic of the SacroiliitisCT module (no Qt: it runs on a bare MRML scene too)."""
from SacroiliitisCTLib.logic import SacroiliitisCTLogic

__all__ = ["SacroiliitisCTLogic"]
