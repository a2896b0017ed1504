"""Logic of the SpineOVF module (no Qt: it runs on a bare MRML scene too)."""
from SpineOVFLib.logic import SpineOVFImageTask, SpineOVFLogic, vertebra_labelmap

__all__ = ["SpineOVFImageTask", "SpineOVFLogic", "vertebra_labelmap"]
