"""Task `sij`: sacroiliitis grading on pelvic CT (MS-2.5D-Net, SacroiliitisCT).

* :mod:`mskai.sij.joints`: the analysed axial range proposed from the CT (or a bone segmentation);
* :mod:`mskai.sij.preprocess`: each joint's 2.5D crops sampled in patient coordinates;
* :mod:`mskai.sij.model`: MS-2.5D-Net and the paper's baselines; :mod:`mskai.sij.vote`: the output layer;
* :mod:`mskai.sij.pipeline`: one CT to a graded verdict per joint with evidence;
* :mod:`mskai.sij.dataset`, :mod:`mskai.sij.recipes`, :mod:`mskai.sij.training`,
  :mod:`mskai.sij.evaluate`, :mod:`mskai.sij.batch`, :mod:`mskai.sij.phantoms`.
"""
from mskai.sij.task import TASK

__all__ = ["TASK"]
