"""A local mskai worker process, and the client that drives it without blocking.

Why: in 3D Slicer the main thread holds Python's GIL while the Qt event loop
idles (PythonQt's thread support is off), so a Python thread there runs only
in the gaps between main-thread Python calls -- 20 to 100 times slower.  The
modules therefore run their analyses in a separate process started with
Slicer's own Python (``PythonSlicer``; ``sys.executable`` elsewhere), and the
panel only looks at it from a timer.

Protocol (files in a session folder, so that the client needs neither threads
nor non-blocking pipes, on every platform):

* the client starts ``python -m mskai.worker SESSION`` (SESSION in ``/dev/shm``
  where it exists, else the user cache; stdout and stderr go to a log in the
  user cache, ``worker-logs/``) and keeps it between analyses, so the task's models
  stay loaded (:meth:`mskai.tasks.Task.loaded_model`);
* a request is a pickled dict in ``request-<n>.pkl`` (written by the client,
  atomically), announced by the line ``<n>`` on the worker's stdin;
* the worker appends JSON lines to ``events-<n>.jsonl``: ``{"progress": f,
  "message": m}`` while it works, then ``{"done": path}`` (the pickled
  analysis, :meth:`mskai.tasks.Task.portable`) or ``{"error": {"kind",
  "message"}}`` (an :class:`mskai.MskaiError` by its class name, or
  ``"internal"`` with the traceback in the log); every event has its
  ``time`` (seconds since the epoch);
* cancel kills the worker's process tree at once; the next request starts a
  fresh worker.  A worker that dies is reported with its last log lines.

Requests: ``{"op": "run", "task": name or a Task object, "inputs", "output_dir",
"model", "device", "options"}`` runs :meth:`mskai.tasks.Task.run` and keeps the
analysis; ``{"op": "follow_up", "task", "action", "run_key", "output_dir",
"arguments"}`` continues the kept analysis (:meth:`mskai.tasks.Task.follow_up`,
e.g. SpineOVF's "explain this slice"); ``{"op": "status"}`` answers how many
times each task loaded a model.

The pickles never leave this machine's user cache: the client writes what the
worker reads and the other way round (both run as the same user).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

from mskai import errors
from mskai.errors import InputError, MskaiError

POLL_SECONDS = 0.05
"""How often :meth:`AnalysisJob.wait` looks (the panel polls from its own timer)."""


class WorkerError(MskaiError):
    """The worker process stopped, or failed outside the analysis."""

    exit_code = 1


class AnalysisCancelledError(MskaiError):
    """The user cancelled the analysis, or its input went away, before it finished."""


# --------------------------------------------------------------------------- the worker

def serve(session: Path, requests: TextIO) -> int:
    """Answer the requests announced on ``requests`` (one number per line) until
    it ends or says ``quit``."""
    kept: dict[str, tuple[str, Any, dict[str, Any]]] = {}
    for line in requests:
        number = line.strip()
        if number == "quit":
            break
        if number:
            _answer(session, int(number), kept)
    return 0


def _answer(session: Path, number: int, kept: dict[str, tuple[str, Any, dict[str, Any]]]) -> None:
    with (session / f"events-{number}.jsonl").open("a", encoding="utf-8") as events:
        def emit(**event: Any) -> None:
            events.write(json.dumps({"time": time.time(), **event}) + "\n")
            events.flush()

        try:
            request_path = session / f"request-{number}.pkl"
            with request_path.open("rb") as handle:
                request = pickle.load(handle)
            request_path.unlink()  # the images it holds may be large (and in memory: /dev/shm)
            answer = _execute(request, kept, lambda fraction, message: emit(progress=float(fraction),
                                                                              message=str(message)))
            path = session / f"answer-{number}.pkl"
            temporary = path.with_name(f".{path.name}.tmp")
            with temporary.open("wb") as handle:
                pickle.dump(answer, handle, protocol=pickle.HIGHEST_PROTOCOL)
            temporary.replace(path)
            emit(done=str(path))
        except MskaiError as error:
            emit(error={"kind": type(error).__name__, "message": str(error)})
        except Exception as error:  # a bug: the traceback goes to the log, one line to the panel
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            message = " ".join(str(error).split())
            emit(error={"kind": "internal", "message": f"{type(error).__name__}: {message}".rstrip(": ")})


def _execute(request: Mapping[str, Any], kept: dict[str, tuple[str, Any, dict[str, Any]]],
             report: Callable[[float, str], None]) -> Any:
    from mskai.tasks import Task, all_tasks, slicer_task

    if request["op"] == "status":
        return {"model_loads": {task.name: task.model_loads for task in all_tasks()}}
    task: Task = slicer_task(request["task"]) if isinstance(request["task"], str) else request["task"]
    if request["op"] == "run":
        analysis = task.run(request["inputs"], request["output_dir"], model=request.get("model"),
                            device=request.get("device", "auto"), progress=report, **request.get("options", {}))
        kept[task.name] = (str(request["output_dir"]), analysis, dict(request.get("options", {})))
    elif request["op"] == "follow_up":
        run_key, analysis, options = kept.get(task.name, ("", None, {}))
        if run_key != str(request["run_key"]):
            raise InputError("the worker no longer holds that analysis (it was restarted or analysed "
                             "another study since); run the analysis again")
        analysis = task.follow_up(request["action"], analysis, options, Path(request["output_dir"]),
                                  progress=report, **request.get("arguments", {}))
        kept[task.name] = (str(request["output_dir"]), analysis, options)
    else:
        raise WorkerError(f"unknown worker request {request['op']!r}")
    return task.portable(analysis)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mskai.worker SESSION``: serve the requests of that session folder."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1 or not Path(arguments[0]).is_dir():
        print("usage: python -m mskai.worker SESSION_FOLDER", file=sys.stderr)
        return 2
    session = Path(arguments[0])
    print(f"mskai worker {os.getpid()} ready", file=sys.stderr, flush=True)
    try:
        return serve(session, sys.stdin)
    finally:  # its client asked it to end, or went away (stdin closed)
        shutil.rmtree(session, ignore_errors=True)


# --------------------------------------------------------------------------- the client

class WorkerProcess:
    """The client side: one worker process, started on first use and kept.

    ``python`` is the interpreter to start (Slicer's ``PythonSlicer`` in the
    application); ``sys.path`` of this process is handed on as ``PYTHONPATH``,
    so the worker imports what this process imports (mskai from a source
    checkout, the modules' libraries, a test's stand-in tasks)."""

    def __init__(self, python: str | None = None, sessions_dir: Path | None = None):
        self.python = python or sys.executable
        self.sessions_dir = sessions_dir
        self.session: Path | None = None
        self.log_path: Path | None = None
        self.process: subprocess.Popen | None = None
        self._requests = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the worker if it does not run (returns at once; it imports while
        the caller goes on)."""
        if self.alive:
            return
        self._remove_session()
        self.session = Path(tempfile.mkdtemp(prefix="mskai-worker-", dir=self.sessions_dir or _session_base()))
        self.log_path = _log_folder() / f"{self.session.name}.log"
        paths = [entry for entry in sys.path if entry and Path(entry).is_dir()]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            options: dict[str, Any] = ({"start_new_session": True} if os.name == "posix"
                                       else {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)})
            self.process = subprocess.Popen([self.python, "-m", "mskai.worker", str(self.session)],
                                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=str(self.session), env=environment, text=True, **options)
        self._requests = 0

    def submit(self, request: Mapping[str, Any], output_dir: Path | None = None, input_node: Any = None,
               options: Mapping[str, Any] | None = None) -> AnalysisJob:
        """Hand ``request`` (module docstring) to the worker; returns its job at once."""
        self.start()
        assert self.session is not None and self.process is not None and self.process.stdin is not None
        self._requests += 1
        number = self._requests
        path = self.session / f"request-{number}.pkl"
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("wb") as handle:  # streamed: the images are not copied into one bytes object
            pickle.dump(dict(request), handle, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(path)
        try:
            self.process.stdin.write(f"{number}\n")
            self.process.stdin.flush()
        except OSError:  # it died since start(): the job reports it with the log
            pass
        return AnalysisJob(self, number, output_dir, input_node, dict(options or {}))

    def kill(self) -> None:
        """End the worker and every process it started, now."""
        if self.process is None:
            return
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            family = root.children(recursive=True) + [root]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=5)
        self.process.wait(timeout=5)
        self._close_stdin()
        self.process = None
        self._remove_session()

    def close(self) -> None:
        """Ask the worker to end; kill it when it does not within 5 seconds."""
        if not self.alive:
            self.process = None
            self._remove_session()
            return
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=5)
            self._close_stdin()
            self.process = None
            self._remove_session()
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def _remove_session(self) -> None:
        """Remove the folder of a worker that has ended (its requests, answers and log)."""
        if self.session is not None and not self.alive:
            shutil.rmtree(self.session, ignore_errors=True)
            self.session = None

    def _close_stdin(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def log_tail(self, lines: int = 5) -> list[str]:
        """The last lines the worker wrote (its log), for an error message."""
        return log_tail(self.log_path, lines)


def log_tail(log_path: Path | None, lines: int = 5) -> list[str]:
    """The last non-empty lines of a worker log."""
    if log_path is None or not log_path.is_file():
        return []
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _log_folder(keep: int = 20) -> Path:
    """The worker logs' folder in the user cache, holding the newest ``keep`` logs."""
    from mskai.paths import cache_dir

    folder = cache_dir("worker-logs")
    for old in sorted(folder.glob("*.log"), key=lambda path: path.stat().st_mtime)[:-keep]:
        old.unlink(missing_ok=True)
    return folder


def _session_base() -> Path:
    """Where session folders go: memory-backed ``/dev/shm`` where there is one (the
    images handed over never touch the disk), else the user cache."""
    shared_memory = Path("/dev/shm")
    if shared_memory.is_dir() and os.access(shared_memory, os.W_OK):
        return shared_memory
    from mskai.paths import cache_dir

    return cache_dir("worker")


class AnalysisJob:
    """One request in the worker, looked at by :meth:`poll` (never blocking).

    The panel's timer calls :meth:`poll` (or reads :attr:`running`), then shows
    :attr:`fraction` and :meth:`take_messages`; once the job has ended,
    :attr:`answer` (the task's portable analysis) or :attr:`error` is set.
    :meth:`cancel` kills the worker at once.  ``output_dir``, ``input_node`` and
    ``options`` are the caller's, kept with the job."""

    def __init__(self, worker: WorkerProcess | None, number: int, output_dir: Path | None, input_node: Any,
                 options: dict[str, Any]):
        self.worker = worker
        self.number = number
        self.output_dir = output_dir
        self.input_node = input_node
        self.options = options
        self.fraction = 0.0
        self.answer: Any = None
        self.error: BaseException | None = None
        self.done = worker is None
        self.events: list[dict[str, Any]] = []
        self.observers: list[tuple[Any, int]] = []
        self._messages: list[str] = []
        self._offset = 0
        self._session = worker.session if worker is not None else None
        self._log = worker.log_path if worker is not None else None

    @classmethod
    def finished(cls, answer: Any = None, error: BaseException | None = None, output_dir: Path | None = None,
                 input_node: Any = None, options: dict[str, Any] | None = None) -> AnalysisJob:
        """A job that ended before it was handed out (work done here, or refused)."""
        job = cls(None, 0, output_dir, input_node, dict(options or {}))
        job.answer, job.error, job.fraction = answer, error, 1.0 if error is None else 0.0
        return job

    def poll(self) -> None:
        """Read what the worker reported since the last look; notice a dead worker."""
        if self.done:
            return
        events_path = self._session / f"events-{self.number}.jsonl"
        if events_path.is_file():
            with events_path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.decode("utf-8").splitlines():
                if line.strip():
                    self._take(json.loads(line))
                    if self.done:
                        return
        if not self.done and (self.worker.session != self._session or not self.worker.alive):
            code = self.worker.process.poll() if self.worker.process is not None else None
            tail = " | ".join(log_tail(self._log)) or "nothing"
            self._end(error=WorkerError(f"the MSKAI worker process stopped (exit status {code}) before the "
                                        f"analysis finished; its last lines: {tail}"))

    def _take(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if "progress" in event:
            self.fraction = min(max(float(event["progress"]), 0.0), 1.0)
            if event.get("message"):
                self._messages.append(str(event["message"]))
        elif "done" in event:
            answer_path = Path(event["done"])
            with answer_path.open("rb") as handle:
                self._end(answer=pickle.load(handle))
            answer_path.unlink()
        elif "error" in event:
            kind, message = event["error"]["kind"], event["error"]["message"]
            error_class = getattr(errors, kind, None)
            if not (isinstance(error_class, type) and issubclass(error_class, MskaiError)):
                error_class = WorkerError
                if kind == "internal":
                    message = f"internal error in the analysis: {message} (traceback in {self._log})"
            self._end(error=error_class(message))

    def _end(self, answer: Any = None, error: BaseException | None = None) -> None:
        self.answer, self.error, self.done = answer, error, True

    @property
    def running(self) -> bool:
        self.poll()
        return not self.done

    @property
    def cancel_requested(self) -> bool:
        return isinstance(self.error, AnalysisCancelledError)

    def take_messages(self) -> list[str]:
        """Progress messages reported since the last call, oldest first."""
        messages, self._messages = self._messages, []
        return messages

    def cancel(self, reason: str = "the analysis was cancelled") -> None:
        """Stop now: the worker's process tree is killed (the next request starts a
        fresh worker); the job ends with :class:`AnalysisCancelledError`."""
        if self.done:
            return
        if self.worker is not None and self.worker.session == self._session:
            self.worker.kill()
        self._end(error=AnalysisCancelledError(reason))

    def wait(self, timeout: float | None = None) -> bool:
        """Poll until the job ends (or ``timeout`` seconds); True when it has ended.
        For scripts and tests: the panel polls from its timer instead."""
        return self.wait_until(lambda: self.done, timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float | None = None) -> bool:
        """Poll until ``condition()`` holds or the job ends (or ``timeout`` seconds);
        returns ``condition()``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.poll()
        while not condition() and not self.done:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
            self.poll()
        return condition()


if __name__ == "__main__":
    sys.exit(main())
