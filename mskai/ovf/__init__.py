"""Task ``ovf`` (SpineOVF): osteoporotic vertebral fracture detection on CT (CNN + LSTM).

From a CT (chest, abdomen or pelvis) to a verdict with evidence, after the
paper in ``seeds/001``: the central 5 % of sagittal slices around the spine
(:mod:`mskai.ovf.preprocess`), a ResNet34 slice feature extractor and an
LSTM/max/mean/vote aggregator (:mod:`mskai.ovf.model`), occlusion-sensitivity
evidence mapped back into the CT and named by vertebral level
(:mod:`mskai.ovf.evidence`), the shared analysis (:mod:`mskai.ovf.pipeline`),
synthetic spine phantoms (:mod:`mskai.ovf.phantoms`), training and evaluation
(:mod:`mskai.ovf.training`, :mod:`mskai.ovf.evaluate`) and screening
(:mod:`mskai.ovf.batch`).  :data:`TASK` (:mod:`mskai.ovf.task`) is what the CLI
and Slicer call.
"""
from mskai.ovf.task import TASK, OVFTask

__all__ = ["TASK", "OVFTask"]
