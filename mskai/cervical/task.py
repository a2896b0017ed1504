"""The ``cervical`` task object (CervicalMR): not built yet, so every entry point
answers "not available yet"; it already declares its Slicer module's inputs
(sagittal T1, sagittal T2 and axial T2 series)."""
from mskai.tasks import PhantomVolume, PlaceholderTask


class CervicalTask(PlaceholderTask):
    """CervicalMR: five classifiers for cervical spondylosis on MR."""

    name = "cervical"
    title = "cervical spondylosis findings on MR"
    slicer_module = "CervicalMR"
    order = 3
    input_what = "MR study"
    slicer_phantom_inputs = (
        PhantomVolume("sagittal_t1_node", "Sag T1", (9, 32, 32), (0.6, 0.6, 3.0), "MR", "sagittal", seed=1),
        PhantomVolume("sagittal_t2_node", "Sag T2", (9, 32, 32), (0.6, 0.6, 3.0), "MR", "sagittal", seed=2),
        PhantomVolume("axial_t2_node", "Ax T2", (12, 28, 28), (0.5, 0.5, 4.0), "MR", seed=3),
    )


TASK = CervicalTask()
