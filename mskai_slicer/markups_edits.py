"""When a user's edit of a markups node is finished, so that a result can be
computed again once per edit and not on every mouse move.  Qt-free: it
observes the node's VTK events, in the desktop application and on the test
scene alike.

The rule (:class:`PointEditWatcher`):

* while a control point is dragged (between Slicer's
  ``PointStartInteractionEvent`` and ``PointEndInteractionEvent``) nothing is
  reported; the end of the drag reports once;
* while a point is being placed (a point in ``PositionPreview`` status
  follows the mouse) nothing is reported; placing it
  (``PointPositionDefinedEvent``) reports once;
* any other change outside an interaction -- a script calling
  ``SetNthControlPointPosition``, unsetting or removing a point -- reports at
  once (``PointModifiedEvent``, ``PointPositionDefinedEvent``,
  ``PointPositionUndefinedEvent``, ``PointRemovedEvent``);
* a report is made only when the points (labels, positions, statuses)
  differ from those of the last report, so the several events Slicer sends
  for one change, or a drag that ends where it started, report at most once.
"""
from __future__ import annotations

from typing import Any, Callable

import slicer

# Events after which the points may have changed, outside an interaction.
CHANGE_EVENTS = ("PointModifiedEvent", "PointPositionDefinedEvent", "PointPositionUndefinedEvent",
                 "PointRemovedEvent")


def points_signature(node: Any) -> tuple:
    """Labels, positions (rounded to 1e-6 mm) and position statuses of every control point."""
    signature = []
    for index in range(node.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(index, position)
        signature.append((node.GetNthControlPointLabel(index), tuple(round(v, 6) for v in position),
                          node.GetNthControlPointPositionStatus(index)))
    return tuple(signature)


class PointEditWatcher:
    """Calls ``on_edit(node)`` once per finished edit of ``node`` (see the
    module docstring); :meth:`stop` removes the observers."""

    def __init__(self, node: Any, on_edit: Callable[[Any], None]):
        self.node = node
        self._on_edit = on_edit
        self._interacting = False
        self._reporting = False
        self._signature = points_signature(node)
        events = slicer.vtkMRMLMarkupsNode
        self._observers = [node.AddObserver(events.PointStartInteractionEvent, self._on_start),
                           node.AddObserver(events.PointEndInteractionEvent, self._on_end)]
        self._observers += [node.AddObserver(getattr(events, name), self._on_change) for name in CHANGE_EVENTS]

    def stop(self) -> None:
        for tag in self._observers:
            self.node.RemoveObserver(tag)
        self._observers = []

    def _on_start(self, caller: Any = None, event: Any = None) -> None:
        self._interacting = True

    def _on_end(self, caller: Any = None, event: Any = None) -> None:
        self._interacting = False
        self._report_if_changed()

    def _on_change(self, caller: Any = None, event: Any = None) -> None:
        if self._interacting or self._placing():
            return
        self._report_if_changed()

    def _placing(self) -> bool:
        preview = slicer.vtkMRMLMarkupsNode.PositionPreview
        return any(self.node.GetNthControlPointPositionStatus(index) == preview
                   for index in range(self.node.GetNumberOfControlPoints()))

    def _report_if_changed(self) -> None:
        if self._reporting:
            return
        signature = points_signature(self.node)
        if signature == self._signature:
            return
        self._reporting = True
        try:
            self._on_edit(self.node)
        finally:
            self._reporting = False
            # What the callback itself changed is not the user's next edit.
            self._signature = points_signature(self.node)
