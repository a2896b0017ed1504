"""Logic of the SpineOVF module (no Qt: it runs on a bare MRML scene too)."""
from SpineOVFLib.logic import SpineOVFLogic, vertebra_labelmap

__all__ = ["SpineOVFLogic", "vertebra_labelmap"]
