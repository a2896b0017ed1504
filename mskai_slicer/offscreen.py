"""A real Slicer slice view rendered offscreen, outside the desktop application.

Standalone only (tests and ``Utilities/make_screenshot.py``): it builds one
of trame-slicer's slice views -- Slicer's own slice logic, layer blending and
displayable managers (markups, segmentations) -- on the standalone scene of
:mod:`mskai_slicer.environment`, renders it through EGL
(``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``, set here unless the caller
chose another window class) and returns the pixels.  The desktop application
never imports this module.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from mskai_slicer.environment import bind_standalone_slicer, is_standalone


class OffscreenSliceView:
    """One slice view of the standalone scene (see :func:`offscreen_slice_view`)."""

    def __init__(self, view: Any, app_logic: Any):
        self.view = view
        self._app_logic = app_logic

    @property
    def slice_node(self) -> Any:
        return self.view.get_view_node()

    @property
    def composite_node(self) -> Any:
        return self._app_logic.GetSliceLogicByLayoutName(self.view.name).GetSliceCompositeNode()

    def show(self, background: Any, foreground: Any = None, opacity: float = 0.5) -> None:
        """Background and foreground volumes (nodes or None) and the foreground opacity."""
        composite = self.composite_node
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))

    def fit(self) -> None:
        """Fit the view to its background volume."""
        self.view.fit_view_to_content()

    def jump_to_lps(self, point_lps: Sequence[float]) -> None:
        """Move the slice plane through ``point_lps`` (mm) without panning."""
        x, y, z = (float(v) for v in point_lps)
        self.slice_node.JumpSliceByOffsetting(-x, -y, z)

    def capture(self) -> np.ndarray:
        """Render and return the view's pixels, ``(height, width, 3)`` uint8, top row first."""
        from vtkmodules.util.numpy_support import vtk_to_numpy
        from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

        self.view.render()
        grabber = vtkWindowToImageFilter()
        grabber.SetInput(self.view.render_window())
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.Update()
        image = grabber.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return np.ascontiguousarray(pixels[::-1, :, :3])


@contextmanager
def offscreen_slice_view(orientation: str = "Sagittal", size: tuple[int, int] = (400, 400),
                         name: str = "MSKAIOffscreen") -> Iterator[OffscreenSliceView]:
    """A slice view named ``name`` with the given orientation and ``(width,
    height)`` in pixels; on exit its slice logic and nodes leave the scene, so
    other code sees only the desktop-like Red, Yellow and Green views."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    scene = bind_standalone_slicer()
    if not is_standalone():
        raise RuntimeError("offscreen slice views are for the standalone Slicer (tests, scripts) only")
    from mskai_slicer import environment
    from trame_slicer.views.render_scheduler import DirectRendering
    from trame_slicer.views.slice_view import SliceView

    app_logic = environment._standalone.app.app_logic
    view = SliceView(scene, app_logic, name, scheduled_render_strategy=DirectRendering())
    try:
        view.render_window().SetOffScreenRendering(1)
        view.set_orientation(orientation)
        view.render_window().SetSize(*size)
        view.update_size(*size)
        yield OffscreenSliceView(view, app_logic)
    finally:
        logic = app_logic.GetSliceLogicByLayoutName(name)
        nodes = [view.get_view_node(), logic.GetSliceCompositeNode() if logic is not None else None]
        if logic is not None:
            app_logic.GetSliceLogics().RemoveItem(logic)
            logic.SetMRMLScene(None)
        view.finalize()
        for node in nodes:
            if node is not None and node.GetScene() is scene:
                scene.RemoveNode(node)
