"""Stand-in tasks that the tests hand to the worker process (:mod:`mskai.worker`).

They are pickled into the worker's requests, so they live in an importable
module (the worker gets this process's ``sys.path``) and hold nothing but plain
values.  Each can wait for a file to appear before it finishes, so that a test
can act on a running analysis without sleeping."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mskai.results import new_result, write_result
from mskai.tasks import Task


@dataclass
class StandInAnalysis:
    result: dict


class WorkerStandInTask(Task):
    """Reports progress, optionally waits for ``release_file``, then answers a fixed
    sacroiliitis-like result and records what it was given in ``call.json``;
    ``die`` ends the worker process abruptly, ``fail`` raises a bug."""

    name = "sij"
    slicer_module = "SacroiliitisCT"

    def __init__(self, release_file: str | None = None, die: bool = False, fail: bool = False):
        super().__init__()
        self.release_file, self.die, self.fail = release_file, die, fail

    def run(self, inputs, output_dir=None, *, model=None, device="auto", force=False, progress=None,
            **options):
        progress(0.25, "read the CT")
        if self.release_file is not None:
            deadline = time.monotonic() + 120
            while not Path(self.release_file).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.die:
            print("the stand-in task ends its process now", file=sys.stderr, flush=True)
            os._exit(3)
        if self.fail:
            raise ZeroDivisionError("a bug in the stand-in task")
        progress(1.0, "graded 12 slices")
        result = new_result("sij", inputs[0], {"id": "sij-demo", "version": "0.1.0", "sha256": "00"})
        result.update(verdict={"grade": 2, "positive": True}, probability=0.9)
        write_result(output_dir, result)
        (Path(output_dir) / "call.json").write_text(json.dumps({
            "pid": os.getpid(), "model": model, "device": device, "options": sorted(options),
            "input_node_id": inputs[0].meta.get("mrml_node_id"), "shape": list(inputs[0].shape)}))
        return StandInAnalysis(result)
