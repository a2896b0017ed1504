"""Stand-ins for the WristQC networks in tests (not a test module).

:class:`TruthModels` answers like :class:`mskai.wrist.models.WristModels` but from
a phantom's ground truth (keypoints, view, artifact mask), so that the pipeline,
the batch and the Slicer Logic can be checked exactly and fast, independently
of how well the demo bundles are trained.  :func:`write_tiny_bundles` writes
three random-weight bundles with W-C's networks, to exercise the real loading
and inference path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from mskai.bundles import create_bundle
from mskai.wrist.phantoms import WristCase


class TruthModels:
    """``predict_view``/``predict_keypoints``/``predict_artifact``/``info`` from the
    ground truth of the :class:`mskai.wrist.phantoms.WristCase` whose plane is the
    one analysed (several cases for a batch); ``hide`` drops keypoints (as a model
    missing them would); ``not_wrists`` are planes of other films (a chest, a leg),
    on which no keypoint is found while the view classifier is as sure as the demo
    one is on such films (AP, 0.99); ``calls`` counts the calls by method."""

    def __init__(self, *cases: WristCase, view_confidence: float = 0.95, hide: Iterable[str] = (),
                 artifact_probability: float | None = None, not_wrists: Sequence[np.ndarray] = ()):
        self.cases = cases
        self.view_confidence = view_confidence
        self.hide = set(hide)
        self.artifact_probability = artifact_probability
        self.not_wrists = [np.asarray(plane, np.float32) for plane in not_wrists]
        self.calls: dict[str, int] = {"view": 0, "keypoints": 0, "artifact": 0}

    def _not_a_wrist(self, plane: np.ndarray) -> bool:
        return any(other.shape == plane.shape and np.array_equal(other, plane) for other in self.not_wrists)

    def case_of(self, plane: np.ndarray) -> WristCase:
        for case in self.cases:
            if case.plane.shape == plane.shape and np.array_equal(case.plane, plane):
                return case
        raise AssertionError("TruthModels got a plane of none of its cases")

    def info(self) -> dict[str, dict[str, Any]]:
        return {name: {"id": f"truth-{name}", "version": "0", "sha256": "0" * 64, "demo": False,
                       "disclaimer": None} for name in ("artifact", "keypoints", "view")}

    def predict_view(self, plane: np.ndarray) -> tuple[str, float]:
        self.calls["view"] += 1
        if self._not_a_wrist(plane):
            return "AP", 0.99
        return self.case_of(plane).view, self.view_confidence

    def predict_keypoints(self, plane: np.ndarray, view: str
                          ) -> tuple[dict[str, tuple[float, float] | None], dict[str, float]]:
        self.calls["keypoints"] += 1
        if self._not_a_wrist(plane):
            names = ("P1", "P2", "P3") if view == "AP" else ("P1", "P2", "P3", "P4", "P5")
            return {name: None for name in names}, {name: 0.01 for name in names}
        case = self.case_of(plane)
        points = {name: (None if name in self.hide else point) for name, point in case.keypoints.items()}
        return points, {name: (0.05 if point is None else 0.9) for name, point in points.items()}

    def predict_artifact(self, plane: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                         heatmap: bool = True) -> tuple[float, np.ndarray | None]:
        self.calls["artifact"] += 1
        if self._not_a_wrist(plane):
            return 0.04, (np.zeros(plane.shape, np.float32) if heatmap else None)
        case = self.case_of(plane)
        probability = self.artifact_probability
        if probability is None:
            probability = 0.93 if case.artifact else 0.04
        return probability, (case.artifact_mask.astype(np.float32) if heatmap else None)


def write_tiny_bundles(folder: Path, seed: int = 3) -> Path:
    """Three random-weight WristQC bundles (artifact, keypoints, view) in ``folder``."""
    from mskai.wrist.networks import N_KEYPOINT_CHANNELS, build_network

    torch.manual_seed(seed)
    mobilenet = {"name": "MobileNetV2", "args": {"num_classes": 1, "width_mult": 0.25, "in_channels": 1}}
    gu2net = {"name": "GU2Net", "args": {"n_keypoints": N_KEYPOINT_CHANNELS, "in_channels": 1,
                                         "local_channels": [4, 8, 16, 32, 64], "local_strides": [2, 2, 2, 2],
                                         "num_res_units": 1, "global_channels": 8, "global_blocks": 1}}
    specs = {"artifact": (mobilenet, {"artifact_probability": 0.5}),
             "keypoints": (gu2net, {"keypoint_confidence": 0.0}),
             "view": (mobilenet, {"lat_probability": 0.5})}
    for component, (architecture, thresholds) in specs.items():
        metadata = {"id": f"wrist-{component}-tiny", "version": "0.0.1", "task": "wrist", "component": component,
                    "architecture": architecture, "input": {"channels": 1, "size": [64, 128]},
                    "preprocessing": {"input_size": [64, 128]}, "thresholds": thresholds}
        create_bundle(folder / f"wrist-{component}-tiny", metadata, build_network(architecture).state_dict())
    return folder
