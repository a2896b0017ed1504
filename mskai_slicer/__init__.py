"""Slicer-side helpers shared by the MSKAI modules' Logic classes.

Everything here uses Slicer's MRML and logic classes (``slicer``) and VTK,
never ``qt``/``ctk``, so the same code runs in the desktop application and on
the standalone MRML scene of ``trame-slicer`` used by the tests:

* :mod:`mskai_slicer.geometry`: volume node <-> :class:`mskai.Image` with exact
  geometry (the one place where Slicer's RAS meets MSKAI's LPS);
* :mod:`mskai_slicer.outputs`: :class:`~mskai_slicer.outputs.OutputManager`,
  which creates a module's result nodes and replaces them on re-run without
  touching nodes the user created or edited;
* :mod:`mskai_slicer.segments`: a segmentation node as one named label image
  (the modules' optional segmentation inputs, corrected segmentations saved
  as training labels);
* :mod:`mskai_slicer.views`: the sagittal slice view to read a slice from, and
  the layout each module's results are read in;
* :mod:`mskai_slicer.markups_edits`: when a user's edit of markups points is
  finished (WristQC re-scores once per edit, not per mouse move);
* :mod:`mskai_slicer.sample_data`: the modules' phantoms in the Sample Data module;
* :mod:`mskai_slicer.training_data`: whether the input looks like the model's
  training data, and a demonstration model's disclaimer, as result-table rows
  and the line under the verdict;
* :mod:`mskai_slicer.model_panel`: the model section's bundle list and install;
* :mod:`mskai_slicer.environment`: binds a standalone Slicer for tests;
* :mod:`mskai_slicer.offscreen`: a real slice view rendered offscreen
  (standalone only: tests and the screenshot script);
* :mod:`mskai_slicer.testing`: test bodies shared by pytest and the modules'
  desktop self-tests.

Import the submodules directly; this package imports nothing at load time so
that ``import mskai_slicer`` never needs Slicer.
"""
