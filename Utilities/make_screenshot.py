"""Render the extension's screenshot from a real SpineOVF result.

The SpineOVF fracture phantom of ``mskai demo ovf`` (fixed seed, generated
into the user cache as the Sample Data module does) is analysed by the
SpineOVF Logic with the shipped demonstration bundle on trame-slicer's
standalone Slicer; the sagittal slice through the strongest evidence is then
rendered offscreen by a real Slicer slice view (EGL) with the occlusion
heatmap over the CT and the evidence point, and written as a PNG.

    .venv/bin/python Utilities/make_screenshot.py [Resources/Screenshots/SpineOVF-1.png]

The output is what the Extensions Index shows (EXTENSION_SCREENSHOTURLS in
the top CMakeLists.txt); keep it under 300 KB.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPOSITORY / "Resources" / "Screenshots" / "SpineOVF-1.png"
SIZE = (720, 720)
# A bone window: the vertebral bodies' height is what a fracture changes.
CT_WINDOW = (-250.0, 1250.0)


def make_screenshot(output: Path, device: str = "cpu") -> Path:
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "SpineOVF")]
    from PIL import Image as PILImage

    from mskai_slicer.environment import bind_standalone_slicer
    from mskai_slicer.geometry import node_world_lps_points
    from mskai_slicer.offscreen import offscreen_slice_view
    from mskai_slicer.sample_data import SampleCase, load_sample_case
    from SpineOVFLib import SpineOVFLogic

    bind_standalone_slicer()
    ct, vertebrae = load_sample_case(SampleCase("SpineOVF", "fracture"))
    logic = SpineOVFLogic()
    result = logic.analyze(ct, vertebrae, device=device)
    heatmap, evidence = logic.heatmap_node(), logic.evidence_node()
    if heatmap is None or evidence is None:
        raise SystemExit(f"the demo analysis gave no evidence to show (verdict {result['verdict']!r})")
    ct.GetDisplayNode().SetAutoWindowLevel(False)
    ct.GetDisplayNode().SetWindowLevelMinMax(*CT_WINDOW)
    vertebrae.GetDisplayNode().SetVisibility(False)  # the heatmap and the point tell the story
    evidence.GetDisplayNode().SetTextScale(6.0)  # the level name, readable at thumbnail size
    with offscreen_slice_view("Sagittal", SIZE) as view:
        view.show(ct, heatmap, opacity=0.5)
        view.fit()
        view.jump_to_lps(node_world_lps_points(evidence)[0])
        pixels = view.capture()
    output.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(pixels).save(output, optimize=True)
    level = result.get("suspected_level") or "-"
    print(f"{output}: {result['verdict']} (p = {result['probability']:.3f}), evidence at {level}, "
          f"{output.stat().st_size // 1024} KB")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args()
    make_screenshot(arguments.output, arguments.device)


if __name__ == "__main__":
    main()
