"""The ``sij`` task object (SacroiliitisCT): not built yet, so every entry point
answers "not available yet"; it already declares its Slicer module's inputs."""
from mskai.tasks import PhantomVolume, PlaceholderTask


class SacroiliitisTask(PlaceholderTask):
    """SacroiliitisCT: MS-2.5D-Net sacroiliitis grading on pelvic CT."""

    name = "sij"
    title = "sacroiliitis grading on pelvic CT (MS-2.5D-Net)"
    slicer_module = "SacroiliitisCT"
    order = 1
    input_what = "CT"
    files_of_one_series = True
    slicer_phantom_inputs = (
        PhantomVolume("input_volume_node", "Pelvis CT", (10, 24, 32), (0.8, 0.8, 2.5), "CT"),
    )


TASK = SacroiliitisTask()
