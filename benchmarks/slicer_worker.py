"""Benchmark: the SpineOVF phantom analysis through the modules' worker process,
polled as Slicer's main thread polls it, against the blocking call.

    python benchmarks/slicer_worker.py [--repeats 3]

On Slicer's real MRML scene (trame-slicer, as the tests use it), with the
demo bundle, the demo fracture phantom and its vertebra segmentation:

* ``blocking_s``: ``SpineOVFLogic.analyze`` in this process (best of the warm
  runs, after one that loads the model);
* ``worker_s``: ``analyze_async`` + ``finish``, polled every 50 ms (the
  panel's timer interval) while this process holds Python's GIL between polls (``usleep`` through
  ``ctypes.PyDLL``), as Slicer's idle event loop does (best of the warm runs,
  after one in which the worker imports torch and loads the model);
* ``startup_s``: from starting a fresh worker to its first answer (a status
  request), i.e. what the panel waits for on the first Analyze before torch is
  imported there;
* ``cancel_s``: from Cancel on a running analysis until the worker's process
  tree is gone.

Last line: ``worker_s=... blocking_s=... ratio=... startup_s=... cancel_s=...``
(goal: ratio <= 1.3).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPOSITORY), str(REPOSITORY / "SpineOVF")]

_LIBC = ctypes.PyDLL(ctypes.util.find_library("c"))  # its calls keep the GIL


def poll_like_slicer(job) -> None:
    while job.running:
        _LIBC.usleep(50_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of each kind")
    args = parser.parse_args()

    from mskai_slicer.environment import bind_standalone_slicer

    bind_standalone_slicer()
    from SpineOVFLib.checks import phantom_spine_nodes
    from SpineOVFLib.logic import SpineOVFLogic

    ct, segmentation, _ = phantom_spine_nodes()
    logic = SpineOVFLogic()

    start = time.perf_counter()
    logic.worker().start()
    status = logic.worker().submit({"op": "status"})
    status.wait(timeout=120)
    startup_s = time.perf_counter() - start
    print(f"worker start-up (to its first answer): {startup_s:.2f} s")

    blocking = []
    for run in range(args.repeats + 1):
        start = time.perf_counter()
        logic.analyze(ct, segmentation, device="cpu")
        blocking.append(time.perf_counter() - start)
    print("blocking runs (first loads the model): " + ", ".join(f"{s:.2f}" for s in blocking) + " s")

    worker = []
    for run in range(args.repeats + 1):
        start = time.perf_counter()
        job = logic.analyze_async(ct, segmentation, device="cpu")
        poll_like_slicer(job)
        logic.finish(job)
        worker.append(time.perf_counter() - start)
    print("worker runs, GIL held between 50 ms polls (first imports torch and loads the model): "
          + ", ".join(f"{s:.2f}" for s in worker) + " s")

    job = logic.analyze_async(ct, segmentation, device="cpu")
    job.wait_until(lambda: job.fraction > 0.1, timeout=120)
    pid = logic.worker().pid
    start = time.perf_counter()
    job.cancel()
    cancel_s = time.perf_counter() - start
    import psutil

    print(f"cancel: worker {pid} gone after {cancel_s:.3f} s (still running: {psutil.pid_exists(pid)})")
    logic.shutdown()

    blocking_s, worker_s = min(blocking[1:]), min(worker[1:])
    print(f"worker_s={worker_s:.3f} blocking_s={blocking_s:.3f} ratio={worker_s / blocking_s:.2f} "
          f"startup_s={startup_s:.3f} cancel_s={cancel_s:.3f}")


if __name__ == "__main__":
    main()
