"""Which view shows what: the sagittal slice view to read a slice from, and the
view layout each module's results are read in (one of Slicer's, or one
registered here).  Qt-free (slice nodes and the layout node only), so it is
tested on the real MRML scene.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

# A slice view counts as sagittal when its plane's normal is within this angle
# of the left-right (x) axis: Slicer's "Sagittal" preset, or a slightly
# reformatted sagittal plane.
SAGITTAL_TOLERANCE_DEGREES = 15.0
# The desktop layout's default sagittal view, preferred among equals.
DEFAULT_SAGITTAL_VIEW = "Yellow"

# The layout a module switches to when it shows a result (the names of
# vtkMRMLLayoutNode's constants).  SpineOVF: one large sagittal view (Yellow),
# where the slices, the heatmap and the evidence point are read; WristQC: one
# large Red view, which shows a radiograph in its own plane.
MODULE_LAYOUTS = {
    "SpineOVF": "SlicerLayoutOneUpYellowSliceView",
    "WristQC": "SlicerLayoutOneUpRedSliceView",
}

# Layouts Slicer does not have, registered on the layout node when first used:
# module -> (layout ID, vtkMRMLLayoutNode description).  SacroiliitisCT: a large
# axial view (Red), where sacroiliitis is graded slice by slice, beside a
# coronal view (Green), where both joints and the analysed range box are seen
# from the front and the box's inferior and superior faces are dragged.
SACROILIITIS_LAYOUT_ID = 31201
CUSTOM_LAYOUTS = {
    "SacroiliitisCT": (SACROILIITIS_LAYOUT_ID, """
<layout type="horizontal" split="true">
 <item splitSize="640">
  <view class="vtkMRMLSliceNode" singletontag="Red">
   <property name="orientation" action="default">Axial</property>
   <property name="viewlabel" action="default">R</property>
   <property name="viewcolor" action="default">#F34A33</property>
  </view>
 </item>
 <item splitSize="360">
  <view class="vtkMRMLSliceNode" singletontag="Green">
   <property name="orientation" action="default">Coronal</property>
   <property name="viewlabel" action="default">G</property>
   <property name="viewcolor" action="default">#6EB04B</property>
  </view>
 </item>
</layout>
""".strip()),
}


def _plane_normal(slice_node: Any) -> np.ndarray:
    matrix = slice_node.GetSliceToRAS()
    normal = np.array([matrix.GetElement(row, 2) for row in range(3)], dtype=float)
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else normal


def is_sagittal(slice_node: Any) -> bool:
    """Whether ``slice_node`` shows a sagittal plane: its orientation is
    ``"Sagittal"`` or its normal lies along x (:data:`SAGITTAL_TOLERANCE_DEGREES`)."""
    if slice_node.GetOrientation() == "Sagittal":
        return True
    return abs(_plane_normal(slice_node)[0]) >= math.cos(math.radians(SAGITTAL_TOLERANCE_DEGREES))


def sagittal_slice_node(slice_nodes: Iterable[Any]) -> Any:
    """The slice node of the view to take a sagittal slice from, or None.

    Only views shown in the current layout count (``IsMappedInLayout``;
    when no view is marked as shown, as outside the desktop application,
    every view counts).  Among the sagittal ones (:func:`is_sagittal`) the
    one whose normal is closest to x wins, then the default sagittal view
    (Yellow), then the first by name.
    """
    nodes = list(slice_nodes)
    shown = [node for node in nodes if node.IsMappedInLayout()]
    candidates = [node for node in (shown or nodes) if is_sagittal(node)]
    if not candidates:
        return None
    return min(candidates, key=lambda node: (-round(abs(_plane_normal(node)[0]), 6),
                                             node.GetLayoutName() != DEFAULT_SAGITTAL_VIEW,
                                             node.GetLayoutName() or node.GetName() or ""))


def slice_plane_point_lps(slice_node: Any) -> list[float]:
    """The centre of the plane ``slice_node`` shows (its SliceToRAS origin), in LPS mm."""
    matrix = slice_node.GetSliceToRAS()
    r, a, s = (matrix.GetElement(row, 3) for row in range(3))
    return [-r, -a, s]


def module_layout(module_name: str, layout_node: Any = None) -> int | None:
    """The ``vtkMRMLLayoutNode`` layout ID of :data:`MODULE_LAYOUTS` or
    :data:`CUSTOM_LAYOUTS` for ``module_name``, None for a module that keeps the
    user's layout.  A custom layout is added to ``layout_node`` (the application's,
    ``layoutManager.layoutLogic().GetLayoutNode()``) when it lacks it."""
    import slicer

    if module_name in CUSTOM_LAYOUTS:
        layout_id, description = CUSTOM_LAYOUTS[module_name]
        if layout_node is not None and not layout_node.IsLayoutDescription(layout_id):
            layout_node.AddLayoutDescription(layout_id, description)
        return layout_id
    name = MODULE_LAYOUTS.get(module_name)
    return None if name is None else int(getattr(slicer.vtkMRMLLayoutNode, name))
