"""CervicalMR's findings per vertebra and per disc level: the five classifiers
(:mod:`mskai.cervical.classifiers`) and the measurements (:mod:`mskai.cervical.measurements`)
put together in the result contract (SPEC §3.5-3.6, issue 12).

* ``vertebrae[*].findings``: ``hyperplasia`` {probability, positive} and ``listhesis``
  {probability, positive, slip_mm, slip_percent, grade, direction, relative_to, line_mm};
* ``levels[*].findings``: ``herniation`` {probability, positive, type, side, protrusion_mm},
  ``pll_thickening`` / ``lf_thickening`` {probability, positive, thickness_mm}; beside them
  ``canal`` {canal_ap_mm, cord_ap_mm, cord_lr_mm, compression_ratio}, ``slice`` (the axial
  slice the level is shown and measured on) and ``lines`` (what was measured, LPS mm);
* ``alignment``: the C2-C7 lordosis (Cobb).

A finding whose classifier bundle is not loaded has ``probability`` and ``positive`` None
("not assessed"; a warning says which).  ``positive`` is the classifier's verdict at its
bundle's threshold; the measurements are reported beside it and never override it.  A
herniation's ``type`` and ``side`` are given when it is positive (where the measured
protrusion passes the canal).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mskai.cervical.classifiers import (AXIAL_FINDINGS, TITLES, VERTEBRA_FINDINGS, LoadedClassifier, axial_input,
                                        level_slices, predict, scaled, vertebra_centroids, vertebra_input)
from mskai.image import Image


def _round(value: Any, digits: int = 2) -> Any:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if np.isfinite(value) else None


def _verdict_item(probability: float | None, threshold: float) -> dict[str, Any]:
    if probability is None:
        return {"probability": None, "positive": None}
    return {"probability": round(float(probability), 4), "positive": bool(probability >= threshold)}


def assess_findings(study: Any, vertebrae: list[dict[str, Any]], levels: list[dict[str, Any]],
                    vertebra_labels: Image, axial_labels: Sequence[Image],
                    classifiers: Mapping[str, LoadedClassifier | None], *, device: Any = "cpu",
                    timer: Any = None, features: dict[str, list] | None = None) -> dict[str, Any]:
    """Fill ``vertebrae[*]["findings"]`` and ``levels[*]["findings"|"canal"|"slice"|"lines"]`` in
    place; returns ``{"alignment": ..., "warnings": [...], "evidence": [...]}``.  ``features``
    (a dict) gets each classifier's training-distribution features, ``{finding: [array]}``."""
    from contextlib import nullcontext

    from mskai.cervical import measurements

    def stage(name: str) -> Any:
        return timer(name) if timer is not None else nullcontext()

    warnings: list[str] = []
    missing = [TITLES[key] for key, loaded in classifiers.items() if loaded is None]
    if missing:
        warnings.append(f"not assessed (no classifier bundle loaded): {', '.join(missing)}")
    with stage("measure"):
        slips = measurements.measure_slips(vertebra_labels, vertebrae) if vertebrae else {}
        cobb = measurements.cobb_lordosis(vertebra_labels, vertebrae) if vertebrae else {}
        alignment = {"lordosis_deg": _round(cobb.get("angle_deg"), 1), "from": cobb.get("upper", "C2"),
                     "to": cobb.get("lower", "C7"),
                     "method": "Cobb angle between C2's and C7's lower endplates in the mid-sagittal plane "
                               "(positive: lordosis, negative: kyphosis)",
                     "lines": cobb.get("lines") or {}, "notes": list(cobb.get("notes") or [])}
        measured = {lv["name"]: measurements.measure_level(lv, list(study.axial_t2), list(axial_labels),
                                                           vertebra_labels=vertebra_labels, vertebrae=vertebrae)
                    for lv in levels}

    with stage("classify_vertebrae"):
        vertebra_probabilities = _vertebra_probabilities(study, vertebrae, vertebra_labels, classifiers, device,
                                                         features)
    with stage("classify_levels"):
        level_probabilities = _level_probabilities(study, levels, axial_labels, classifiers, device, features)

    evidence: list[dict[str, Any]] = []
    for v in vertebrae:
        hyper = classifiers.get("hyperplasia")
        slip_cls = classifiers.get("listhesis")
        p_h = vertebra_probabilities["hyperplasia"].get(v["name"])
        p_s = vertebra_probabilities["listhesis"].get(v["name"])
        slip = slips.get(v["name"]) or {}
        listhesis = _verdict_item(p_s, slip_cls.threshold if slip_cls else 0.5)
        if slip_cls is not None and p_s is None:
            listhesis["note"] = "no vertebra below it in the labelling"
        listhesis.update({"slip_mm": _round(slip.get("slip_mm")), "slip_percent": _round(slip.get("slip_percent"), 1),
                          "grade": slip.get("grade"), "direction": slip.get("direction"),
                          "relative_to": slip.get("relative_to"), "line_mm": slip.get("line_mm")})
        v["findings"] = {"hyperplasia": _verdict_item(p_h, hyper.threshold if hyper else 0.5), "listhesis": listhesis}
        for key in VERTEBRA_FINDINGS:
            if v["findings"][key]["positive"]:
                evidence.append({"kind": TITLES[key], "name": v["name"], "position_mm": v["centroid_mm"],
                                 "probability": v["findings"][key]["probability"]})
    for lv in levels:
        m = measured.get(lv["name"]) or {}
        probabilities = level_probabilities.get(lv["name"], {})
        findings: dict[str, Any] = {}
        for key in AXIAL_FINDINGS:
            loaded = classifiers.get(key)
            item = _verdict_item(probabilities.get(key), loaded.threshold if loaded else 0.5)
            if loaded is not None and probabilities.get(key) is None:
                item["note"] = "no axial slice cuts this disc"
            findings[key] = item
        positive = bool(findings["herniation"]["positive"])
        findings["herniation"].update({"type": m.get("herniation_type") if positive else None,
                                       "side": m.get("side") if positive else None,
                                       "protrusion_mm": _round(m.get("protrusion_mm"))})
        findings["pll_thickening"]["thickness_mm"] = _round(m.get("pll_thickness_mm"))
        findings["lf_thickening"]["thickness_mm"] = _round(m.get("lf_thickness_mm"))
        lv["findings"] = findings
        lv["canal"] = {key: _round(m.get(key), 3 if key == "compression_ratio" else 2)
                       for key in ("canal_ap_mm", "cord_ap_mm", "cord_lr_mm", "compression_ratio")}
        lv["slice"] = m.get("slice")
        lv["lines"] = m.get("lines") or {}
        if m.get("notes"):
            lv["measurement_notes"] = list(m["notes"])
        for key in AXIAL_FINDINGS:
            if findings[key]["positive"]:
                evidence.append({"kind": TITLES[key], "name": lv["name"], "position_mm": lv["center_mm"],
                                 "slice": lv["slice"], "probability": findings[key]["probability"]})
    return {"alignment": alignment, "warnings": warnings, "evidence": evidence}


def _vertebra_probabilities(study: Any, vertebrae: list[dict[str, Any]], labels: Image,
                            classifiers: Mapping[str, LoadedClassifier | None], device: Any,
                            features: dict[str, list] | None = None) -> dict[str, dict[str, float]]:
    """Per vertebra finding, ``{vertebra name: probability}`` (absent: not assessed)."""
    out: dict[str, dict[str, float]] = {key: {} for key in VERTEBRA_FINDINGS}
    centroids = vertebra_centroids(labels)
    sources = {"hyperplasia": study.sagittal_t1 if study.sagittal_t1 is not None else study.sagittal_t2,
               "listhesis": study.sagittal_t2 if study.sagittal_t2 is not None else study.sagittal_t1}
    for key in VERTEBRA_FINDINGS:
        loaded = classifiers.get(key)
        if loaded is None or sources[key] is None:
            continue
        image = sources[key]
        volume = scaled(image)
        names, inputs = [], []
        for v in vertebrae:
            x = vertebra_input(key, image, volume, labels, int(v["label"]), loaded.input_spec, centroids)
            if x is not None:
                names.append(v["name"])
                inputs.append(x)
        sink = features.setdefault(key, []) if features is not None and inputs else None
        for name, p in zip(names, predict(loaded, inputs, device=device, features=sink)):
            out[key][name] = float(p)
    return out


def _level_probabilities(study: Any, levels: list[dict[str, Any]], axial_labels: Sequence[Image],
                         classifiers: Mapping[str, LoadedClassifier | None], device: Any,
                         features: dict[str, list] | None = None) -> dict[str, dict[str, float]]:
    """Per level, ``{finding: probability}``: the maximum over the level's slices
    (:func:`mskai.cervical.classifiers.level_slices`)."""
    out: dict[str, dict[str, float]] = {}
    volumes: dict[int, np.ndarray] = {}
    for key in AXIAL_FINDINGS:
        loaded = classifiers.get(key)
        if loaded is None:
            continue
        owners, inputs = [], []
        for lv in levels:
            for s in level_slices(lv):
                stack, index = int(s["stack"]), int(s["index"])
                if stack >= len(study.axial_t2):
                    continue
                image = study.axial_t2[stack]
                if stack not in volumes:
                    volumes[stack] = scaled(image)
                inputs.append(axial_input(key, image, volumes[stack], np.asarray(axial_labels[stack].array), index,
                                          loaded.input_spec))
                owners.append(lv["name"])
        sink = features.setdefault(key, []) if features is not None and inputs else None
        for name, p in zip(owners, predict(loaded, inputs, device=device, features=sink)):
            level = out.setdefault(name, {})
            level[key] = max(float(p), level.get(key, 0.0))
    return out


def verdict_text(vertebrae: Sequence[Mapping[str, Any]], levels: Sequence[Mapping[str, Any]]) -> str:
    """The positive findings by level, e.g. ``"herniation C4/5 (paracentral left); PLL thickening
    C5/6; hyperplasia C5"``, or ``"no finding"``."""
    parts = []
    for key in AXIAL_FINDINGS:
        where = []
        for lv in levels:
            item = (lv.get("findings") or {}).get(key) or {}
            if item.get("positive"):
                detail = " ".join(t for t in (item.get("type"), item.get("side")) if t)
                where.append(lv["name"] + (f" ({detail})" if detail else ""))
        if where:
            parts.append(f"{TITLES[key]} {', '.join(where)}")
    for key in VERTEBRA_FINDINGS:
        where = []
        for v in vertebrae:
            item = (v.get("findings") or {}).get(key) or {}
            if item.get("positive"):
                grade = item.get("grade") if key == "listhesis" else None
                where.append(v["name"] + (f" (grade {grade})" if grade else ""))
        if where:
            parts.append(f"{TITLES[key]} {', '.join(where)}")
    return "; ".join(parts) if parts else "no finding"


NETWORK_LABELS = {"sagittal": "sagittal segmentation network", "axial": "axial segmentation network",
                  **{key: f"{TITLES[key]} classifier" for key in VERTEBRA_FINDINGS + AXIAL_FINDINGS}}
DISTRIBUTION_CONSEQUENCES = {
    "sagittal": "it segments the vertebrae and discs that the names, levels, measurements and findings stand on",
    "axial": "it segments the canal, disc and ligaments that the axial findings and measurements read",
    **{key: f"it decides {TITLES[key]}" for key in VERTEBRA_FINDINGS + AXIAL_FINDINGS}}
DISTRIBUTION_METHOD = ("Mahalanobis distance of the first two stages' mean activations (Ledoit-Wolf shrunk "
                       "covariance), per network and unit (segmentation: slice; classifiers: their inputs), the "
                       "median over the units; out when any network is")


def training_distribution(metadata: Mapping[str, Mapping[str, Any]], features: Mapping[str, list]
                          ) -> tuple[dict[str, Any] | None, list[str]]:
    """``result["training_distribution"]`` and its warnings: every network that ran
    (``features[name]``: its arrays of unit rows; ``metadata[name]``: its bundle's metadata)
    against the summary its bundle records (:func:`mskai.distribution.combine`); None when
    no network gave features."""
    from mskai.distribution import assess, combine, features_of

    assessed = {}
    for name, arrays in features.items():
        arrays = [a for a in arrays if len(a)]
        if not arrays:
            continue
        meta = metadata.get(name) or {}
        assessed[name] = assess(meta.get("training_distribution"), features_of(arrays), demo=bool(meta.get("demo")),
                                what=f"study, as the {NETWORK_LABELS[name]} sees it,")
    if not assessed:
        return None, []
    return combine(assessed, labels=NETWORK_LABELS, consequences=DISTRIBUTION_CONSEQUENCES,
                   method=DISTRIBUTION_METHOD, unit="network")

