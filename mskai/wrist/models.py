"""WristQC models: bundles -> the three networks, and the pipeline's inference calls.

:func:`load_wrist_models` (or :func:`load_wrist_folder`) loads the artifact,
keypoints and view bundles (:data:`DEFAULT_BUNDLE_IDS`: the shipped demo bundles)
into a :class:`WristModels`, whose ``predict_*`` methods take an original plane
and answer in its pixels: each network's input is made by
:func:`mskai.wrist.preprocessing.prepare_input`, keypoints are decoded by
:func:`mskai.wrist.heatmaps.decode_heatmaps` (a keypoint whose peak is below the
bundle's ``keypoint_confidence`` is None) and the artifact's evidence is
:func:`mskai.wrist.heatmaps.grad_cam` mapped back onto the plane.  On the CPU the
networks can run on ONNX Runtime (:meth:`WristModels.accelerate`); their graphs then
also give the pooled features of the training-distribution check
(:meth:`WristModels.distribution_features`), so the check costs no second pass.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, Union

import numpy as np
import torch
from torch import nn

from mskai.bundles import Bundle, BundleSource, load_bundle, load_weights
from mskai.errors import InputError, ModelError
from mskai.wrist.heatmaps import ArtifactCam, decode_heatmaps, grad_cam
from mskai.wrist.networks import COMPONENTS, KEYPOINT_CHANNELS, WithFeatures, build_network, pooled_features
from mskai.wrist.preprocessing import InputGeometry, Preprocessing, prepare_input
from mskai.wrist.scoring import VIEW_KEYPOINTS

DEFAULT_BUNDLE_IDS = {"artifact": "wrist-artifact-demo", "keypoints": "wrist-keypoints-demo",
                      "view": "wrist-view-demo"}
_PROBE_SEED = 20240611  # the fixed input on which an ONNX Runtime twin is checked against PyTorch

ComponentSource = Union[BundleSource, Literal[False], None]  # not `|`: evaluated at import, Python 3.9
"""What :func:`load_wrist_models` takes for each network: a bundle (folder, id or
:class:`~mskai.bundles.Bundle`), None for the shipped demo bundle, False to leave it out."""


@dataclass
class LoadedModel:
    """One network of a bundle, ready for inference."""

    bundle: Bundle
    network: nn.Module
    preprocessing: Preprocessing
    device: torch.device
    fast: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None
    """The ONNX Runtime twin (:meth:`WristModels.accelerate`) of :class:`WithFeatures` around
    ``network`` (keypoints, view: ``(y, features)``) or around :class:`ArtifactCam`
    (artifact: ``(logit, cam, features)``); None: PyTorch."""
    last_features: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    """``(plane, features (1, C))`` of the last ONNX Runtime pass: a copy of the plane it was
    made from and the pooled features its graph gave (:meth:`features`)."""
    _plane: np.ndarray | None = field(default=None, repr=False)
    _x: torch.Tensor | None = field(default=None, repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.bundle.metadata

    def tensor(self, plane: np.ndarray) -> tuple[torch.Tensor, InputGeometry]:
        values, geometry = prepare_input(plane, self.preprocessing)
        x = torch.from_numpy(values)[None, None].to(self.device)
        self._plane, self._x = plane, x  # which plane an accelerated pass on x is of
        return x, geometry

    def run_fast(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The ONNX Runtime twin's outputs for ``x`` without the features, which are kept in
        :attr:`last_features` (with a copy of the plane, when ``x`` is :meth:`tensor`'s last)."""
        *outputs, features = self.fast(x)
        plane = self._plane if x is self._x else None
        self.last_features = None if plane is None else (np.array(plane, copy=True), features.numpy())
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (keypoints, view), on ONNX Runtime when accelerated."""
        return self.network(x) if self.fast is None else self.run_fast(x)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits (B, 1); for an accelerated artifact model, from
        :class:`ArtifactCam`'s twin (its map costs nothing next to the network)."""
        if self.fast is None:
            return self.network(x)
        output = self.run_fast(x)
        return output[0] if isinstance(output, tuple) else output

    @torch.no_grad()
    def features(self, plane: np.ndarray) -> np.ndarray:
        """(1, C) pooled features of ``plane`` (:func:`mskai.wrist.networks.pooled_features`).
        Accelerated: those of the last pass when it was on an equal plane (no new pass), else
        one twin pass (the view classifier when the tags gave the view); PyTorch: one more
        eager forward pass."""
        if self.fast is not None and self.last_features is not None:
            seen, features = self.last_features
            if seen.shape == plane.shape and np.array_equal(seen, plane):
                return features
        x, _ = self.tensor(plane)
        if self.fast is None:
            return pooled_features(self.network, x).numpy()
        self.run_fast(x)
        return self.last_features[1]


def load_component(source: BundleSource, component: str, device: torch.device) -> LoadedModel:
    """Load a bundle (folder, id, or :class:`mskai.bundles.Bundle`) of one WristQC
    component, check that it is one, verify its checksums and build its network."""
    bundle = source if isinstance(source, Bundle) else load_bundle(source)
    found = bundle.metadata.get("component")
    if bundle.task != "wrist" or found != component:
        what = f"a {found} model" if found else f"a {bundle.task} model"
        raise ModelError(f"model bundle {bundle.label} is {what}, not the WristQC {component} model")
    network = load_weights(build_network(bundle.metadata["architecture"]), bundle, device)
    preprocessing = Preprocessing.from_dict(bundle.metadata.get("preprocessing", {}))
    return LoadedModel(bundle, network, preprocessing, device)


@dataclass
class WristModels:
    """The three WristQC networks with the pipeline's inference calls.

    Any of them may be None (not loaded); its ``predict_*`` then raises
    :class:`ModelError`.
    """

    artifact: LoadedModel | None
    keypoints: LoadedModel | None
    view: LoadedModel | None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    inference: str = "PyTorch"
    """What runs the networks, in one line (``result.json``'s ``inference``)."""

    def _need(self, component: str) -> LoadedModel:
        model = getattr(self, component)
        if model is None:
            raise ModelError(f"no WristQC {component} model is loaded")
        return model

    def info(self) -> dict[str, dict[str, Any]]:
        """``{component: bundle.info()}`` for ``result.json``'s ``model`` block."""
        return {name: getattr(self, name).bundle.info() for name in COMPONENTS
                if getattr(self, name) is not None}

    @torch.no_grad()
    def artifact_probability(self, plane: np.ndarray) -> float:
        """P(foreign-object artifact) of one plane, without the heatmap (faster)."""
        model = self._need("artifact")
        x, _ = model.tensor(plane)
        return float(torch.sigmoid(model.logit(x))[0, 0])

    def predict_artifact(self, plane: np.ndarray, spacing_mm: Sequence[float] | None = None, *,
                         heatmap: bool = True) -> tuple[float, np.ndarray | None]:
        """Artifact probability and where the artifact is.

        Args:
            plane: (rows, cols) MONOCHROME2 sense.
            spacing_mm: accepted for the pipeline's call; the classifier sees the
                letterboxed image whatever the pixel size, so it does not use it.
            heatmap: False skips the Grad-CAM map (returns None for it).

        Returns:
            ``(probability, heatmap)``: heatmap (rows, cols) float32 0..1 on the
            original plane (Grad-CAM, see the module docstring) or None.  The map
            is normalised to its own maximum whatever the probability, so it says
            where the evidence is, not whether there is an artifact: show it when
            the probability reaches the bundle's ``artifact_probability`` threshold.
        """
        model = self._need("artifact")
        if not heatmap:
            return self.artifact_probability(plane), None
        x, geometry = model.tensor(plane)
        probability, cam = grad_cam(model.network, x, None if model.fast is None else model.run_fast)
        return probability, np.clip(geometry.map_to_original(cam), 0.0, 1.0)

    @torch.no_grad()
    def predict_keypoints(self, plane: np.ndarray, view: str
                          ) -> tuple[dict[str, tuple[float, float] | None], dict[str, float]]:
        """Keypoints of one view (``"AP"`` or ``"LAT"``) in original-image pixels.

        Returns ``(keypoints, confidences)``: ``{name: (x, y) or None}`` (None when
        the heatmap peak is below the bundle's ``keypoint_confidence`` threshold or
        falls on the letterbox padding) and ``{name: peak value 0..1}``.
        """
        if view not in VIEW_KEYPOINTS:
            raise InputError(f"view must be 'AP' or 'LAT', got {view!r}")
        model = self._need("keypoints")
        x, geometry = model.tensor(plane)
        maps = model.forward(x)[0, list(KEYPOINT_CHANNELS[view])]
        points, peaks = decode_heatmaps(maps)
        threshold = float(model.metadata.get("thresholds", {}).get("keypoint_confidence", 0.5))
        original = geometry.to_original(points)
        cols, rows = geometry.original_size
        keypoints: dict[str, tuple[float, float] | None] = {}
        confidences: dict[str, float] = {}
        for index, name in enumerate(VIEW_KEYPOINTS[view]):
            px, py = original[index]
            inside = -0.5 <= px <= cols - 0.5 and -0.5 <= py <= rows - 0.5
            confidences[name] = round(float(peaks[index]), 4)
            keypoints[name] = (float(px), float(py)) if peaks[index] >= threshold and inside else None
        return keypoints, confidences

    @torch.no_grad()
    def predict_view(self, plane: np.ndarray) -> tuple[str, float]:
        """``("AP" | "LAT", confidence)``: the more probable class and its probability."""
        model = self._need("view")
        x, _ = model.tensor(plane)
        p_lat = float(torch.sigmoid(model.logit(x))[0, 0])
        return ("LAT", p_lat) if p_lat >= 0.5 else ("AP", 1.0 - p_lat)

    def distribution_features(self, plane: np.ndarray) -> dict[str, np.ndarray]:
        """``{component: (1, C) features}`` of one plane for each loaded network: what
        :mod:`mskai.distribution` compares with the bundle's training data
        (:func:`mskai.wrist.networks.feature_layer`).  On ONNX Runtime they are an output of
        the same graph as the prediction, kept from the ``predict_*`` call on this plane
        (:meth:`LoadedModel.features`; no second pass); on PyTorch, one more forward pass
        per network."""
        return {name: getattr(self, name).features(plane) for name in COMPONENTS
                if getattr(self, name) is not None}

    def accelerate(self, cache_dir: str | Path | None = None) -> str:
        """Run the loaded networks on ONNX Runtime when they are on the CPU and the
        optional packages are installed (:mod:`mskai.fast_inference`: the export is
        cached per weights and checked against PyTorch on a probe input; the
        artifact model is exported as :class:`ArtifactCam`, probability and map in
        one pass; every graph also outputs the pooled features of the
        training-distribution check, :class:`WithFeatures`).  The networks stay in eval
        mode.  A network whose export or check fails stays on PyTorch.  Sets and
        returns :attr:`inference`, one line saying what runs where."""
        from mskai.fast_inference import onnxruntime_available, ort_twin

        loaded = [(name, getattr(self, name)) for name in COMPONENTS if getattr(self, name) is not None]
        for _, model in loaded:
            model.fast, model.last_features = None, None
        if self.device.type != "cpu":
            self.inference = f"PyTorch on {self.device.type} (ONNX Runtime is used only on the CPU)"
        elif not onnxruntime_available():
            self.inference = "PyTorch eager (install onnxruntime and onnx for faster CPU inference)"
        else:
            fast, slow, worst = [], [], 0.0
            for name, model in loaded:
                width, height = model.preprocessing.input_size
                generator = torch.Generator().manual_seed(_PROBE_SEED)
                probe = torch.rand(1, 1, height, width, generator=generator)  # inputs are 0..1
                artifact = name == "artifact"
                # The outputs and the pooled features of the distribution check, in one graph;
                # the wrapper takes the network's mode (eval), which the export leaves as it found.
                module = (WithFeatures(ArtifactCam(model.network).train(model.network.training), model.network)
                          if artifact else WithFeatures(model.network))
                try:
                    model.fast, difference = ort_twin(
                        module, (probe,), f"wrist-{name}",
                        output_names=("logit", "cam", "features") if artifact else ("y", "features"),
                        cache_dir=cache_dir)
                except Exception as error:  # any exporter or runtime problem: PyTorch still works
                    slow.append(f"{name} ({' '.join(str(error).split())[:120]})")
                    continue
                finally:
                    model.network.eval()
                fast.append(name)
                worst = max(worst, difference)
            parts = []
            if fast:
                parts.append(f"ONNX Runtime CPU for {', '.join(fast)} "
                             f"(max difference from PyTorch {worst:.1e} on a probe input)")
            if slow:
                parts.append(f"PyTorch eager for {', '.join(slow)}")
            self.inference = "; ".join(parts) or "PyTorch eager"
        return self.inference


def load_wrist_models(artifact: ComponentSource = None, keypoints: ComponentSource = None,
                      view: ComponentSource = None,
                      device: str | torch.device = "auto", accelerate: bool = True) -> WristModels:
    """Load the WristQC networks.

    Each of ``artifact``, ``keypoints``, ``view`` is a bundle folder, a bundle id
    (``id`` or ``id@version``, found through the registry), a
    :class:`mskai.bundles.Bundle`, None for the shipped demo bundle
    (:data:`DEFAULT_BUNDLE_IDS`) or False to leave that network out.  Checksums are
    verified; a bundle of another component or task is refused with
    :class:`ModelError`.  With ``accelerate`` the networks run on ONNX Runtime on
    the CPU when possible (:meth:`WristModels.accelerate`).
    """
    from mskai.device import resolve_device

    torch_device = resolve_device(device)
    chosen = {"artifact": artifact, "keypoints": keypoints, "view": view}
    loaded = {name: None if source is False else
              load_component(DEFAULT_BUNDLE_IDS[name] if source is None else source, name, torch_device)
              for name, source in chosen.items()}
    models = WristModels(device=torch_device, **loaded)
    if accelerate:
        models.accelerate()
    else:
        models.inference = f"PyTorch on {torch_device.type}"
    return models


def load_wrist_folder(folder: str | Path, device: str | torch.device = "auto",
                      accelerate: bool = True) -> WristModels:
    """The three networks from a folder holding their bundle folders (as written by
    ``mskai train wrist``), found by each bundle's ``component``; ``"demo"`` loads the
    shipped demo bundles."""
    if str(folder) == "demo":
        return load_wrist_models(device=device, accelerate=accelerate)
    root = Path(folder)
    if not root.is_dir():
        raise ModelError(f"model folder {root} does not exist")
    found: dict[str, Path] = {}
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for candidate in candidates:
        metadata_path = candidate / "metadata.json"
        if metadata_path.is_file():
            try:
                component = json.loads(metadata_path.read_text(encoding="utf-8")).get("component")
            except (ValueError, UnicodeDecodeError):
                continue
            if component in COMPONENTS and component not in found:
                found[component] = candidate
    missing = [name for name in COMPONENTS if name not in found]
    if missing:
        raise ModelError(f"model folder {root} has no WristQC {', '.join(missing)} bundle; pass a "
                         "folder with the artifact, keypoints and view bundles, or 'demo'")
    return load_wrist_models(found["artifact"], found["keypoints"], found["view"], device=device,
                             accelerate=accelerate)


load_wrist_bundles = load_wrist_models
"""The name WRIST.md's interface list uses for :func:`load_wrist_models`."""
