"""Slicer-side helpers shared by the MSKAI modules' Logic classes.

Everything here uses Slicer's MRML and logic classes (``slicer``) and VTK,
never ``qt``/``ctk``, so the same code runs in the desktop application and on
the standalone MRML scene of ``trame-slicer`` used by the tests:

* :mod:`mskai_slicer.geometry`: volume node <-> :class:`mskai.Image` with exact
  geometry (the one place where Slicer's RAS meets MSKAI's LPS);
* :mod:`mskai_slicer.outputs`: :class:`~mskai_slicer.outputs.OutputManager`,
  which creates a module's result nodes and replaces them on re-run without
  touching nodes the user created or edited;
* :mod:`mskai_slicer.environment`: binds a standalone Slicer for tests;
* :mod:`mskai_slicer.testing`: test bodies shared by pytest and the modules'
  desktop self-tests.

Import the submodules directly; this package imports nothing at load time so
that ``import mskai_slicer`` never needs Slicer.
"""
