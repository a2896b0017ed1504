"""MSKAI core: musculoskeletal AI methods without any Slicer dependency."""
from mskai.errors import DeviceError, InputError, ModelError, MskaiError, NotAvailableError, OutputError
from mskai.image import Image

__version__ = "0.1.0"
DEMO_DISCLAIMER = "demonstration model trained on synthetic data; not for clinical use"

__all__ = ["Image", "MskaiError", "InputError", "ModelError", "DeviceError",
           "NotAvailableError", "OutputError", "DEMO_DISCLAIMER", "__version__"]
