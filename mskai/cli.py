"""The ``mskai`` command line (SPEC §0.2).

Bad input ends with one line on stderr, ``mskai: error: ...``, and a non-zero
exit status; ``--debug`` shows the traceback instead.  Tasks plug in through
:mod:`mskai.tasks`: the task names and each task's own options
(:attr:`mskai.tasks.Task.options`) come from the registry; a task that is not
built answers "not available yet".
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Sequence

from mskai import __version__
from mskai.errors import InputError, MskaiError
from mskai.tasks import TaskOption, all_tasks, get_task

DEVICES = ("auto", "cpu", "cuda", "mps")


def _task_options(command: str) -> dict[str, list[tuple[str, TaskOption]]]:
    """The tasks' own options of ``command`` by flag: ``{flag: [(task, option), ...]}``."""
    by_flag: dict[str, list[tuple[str, TaskOption]]] = {}
    for task in all_tasks():
        for option in task.options:
            if command in option.commands:
                by_flag.setdefault(option.flag, []).append((task.name, option))
    return by_flag


def _add_task_options(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per task option; its help names the task(s) that take it."""
    for flag, owners in _task_options(command).items():
        parser.add_argument(flag, dest=owners[0][1].dest, metavar=owners[0][1].metavar,
                            help="; ".join(f"{task}: {option.help}" for task, option in owners))


def _given_task_options(args: argparse.Namespace, command: str) -> dict[str, object]:
    """The task options given on the command line, refused in one line when the
    chosen task does not take them."""
    given = {}
    for flag, owners in _task_options(command).items():
        value = getattr(args, owners[0][1].dest)
        if value is None:
            continue
        if args.task not in {task for task, _ in owners}:
            raise InputError(f"{flag} does not apply to 'mskai {command} {args.task}' "
                             f"(it is an option of {', '.join(task for task, _ in owners)})")
        given[owners[0][1].dest] = value
    return given


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mskai", description="Musculoskeletal AI: analyses, demo, training, evaluation, batch runs and models.")
    parser.add_argument("--version", action="version", version=f"mskai {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tasks = [task.name for task in all_tasks()]

    p = sub.add_parser("analyze", help="analyse one study and write result.json and overlay PNGs")
    p.add_argument("task", choices=tasks)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM file/folder, NIfTI, NRRD, PNG/JPEG")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    p.add_argument("--model", metavar="BUNDLE", help="bundle folder or id (default: the task's demo bundle)")
    p.add_argument("--device", default="auto", choices=DEVICES + ("cuda:0", "cuda:1"))
    p.add_argument("--series", metavar="UID", help="SeriesInstanceUID to use when a folder holds several series")
    p.add_argument("--force", action="store_true", help="analyse even if modality/body part look wrong")
    _add_task_options(p, "analyze")

    p = sub.add_parser("demo", help="run on the bundled sample cases (phantoms)")
    p.add_argument("task", nargs="?", choices=tasks)
    p.add_argument("--output", "-o", type=Path, default=Path("mskai-demo"), metavar="DIR")
    p.add_argument("--device", default="auto", choices=DEVICES)

    p = sub.add_parser("train", help="train a task's model from a dataset")
    p.add_argument("task", choices=tasks)
    p.add_argument("--data", required=True, type=Path, metavar="DATASET")
    p.add_argument("--recipe", default="paper", metavar="RECIPE", help="paper, demo, or a recipe JSON file")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in DIR")
    _add_task_options(p, "train")

    p = sub.add_parser("evaluate", help="evaluate a model bundle on a dataset")
    p.add_argument("task", choices=tasks)
    p.add_argument("--data", required=True, type=Path, metavar="DATASET")
    p.add_argument("--model", required=True, metavar="BUNDLE",
                   help="a bundle folder or id (SacroiliitisCT: several, comma-separated, for a comparison table; "
                        "CervicalMR: several segmentation or finding classifier bundles)")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    p.add_argument("--device", default="auto", choices=DEVICES)
    _add_task_options(p, "evaluate")

    p = sub.add_parser("batch", help="analyse a folder or list of studies (screening / department QC)")
    p.add_argument("task", choices=tasks)
    p.add_argument("input", type=Path, metavar="INPUT_LIST_OR_DIR")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    p.add_argument("--model", metavar="BUNDLE")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--resume", action="store_true", help="skip studies already done in DIR")
    p.add_argument("--force", action="store_true", help="analyse even if modality/body part look wrong")
    _add_task_options(p, "batch")

    p = sub.add_parser("models", help="list, verify or install model bundles")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="shipped and installed bundles")
    msub.add_parser("verify", help="check every bundle's checksums")
    pi = msub.add_parser("install", help="install a bundle from a folder or archive (or a URL with --allow-url)")
    pi.add_argument("source")
    pi.add_argument("--allow-url", action="store_true", help="allow downloading from an http(s) URL")
    pi.add_argument("--force", action="store_true", help="replace an installed bundle of the same id and version")
    return parser


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _models(args: argparse.Namespace) -> int:
    from mskai import bundles

    if args.models_command == "list":
        rows = bundles.list_bundles()
        if not rows:
            print("no model bundles found (shipped bundles live in Resources/Models; "
                  "install others with `mskai models install`)")
        for row in rows:
            status = "ok" if row.get("ok", True) else f"BROKEN: {row.get('message', '')}"
            print(f"{row.get('id')}@{row.get('version')}\t{row.get('task', '')}\t{row.get('path', '')}\t{status}")
        return 0
    if args.models_command == "verify":
        results = bundles.verify_all()
        bad = 0
        for ident, ok, message in results:
            print(f"{ident}\t{'ok' if ok else 'FAILED'}\t{message}")
            bad += 0 if ok else 1
        if not results:
            print("no model bundles found")
        return 1 if bad else 0
    bundle = bundles.install_bundle(args.source, allow_url=args.allow_url, force=args.force)
    print(f"installed {bundle.id}@{bundle.version} at {bundle.path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "models":
        return _models(args)
    if args.command == "demo":
        from mskai.demo import demo_failed, run_demo

        summary = run_demo(args.output, task=args.task, device=args.device)
        return 2 if args.task is None and demo_failed(summary) else 0
    task = get_task(args.task)
    if args.command == "analyze":
        extra = _given_task_options(args, "analyze")
        result = task.analyze(args.inputs, args.output, model=args.model, device=args.device,
                              force=args.force, series_uid=args.series, **extra)
        from mskai.distribution import short_note

        print(f"{args.task}: {result.get('verdict')}{short_note(result)} -> {Path(args.output) / 'result.json'}")
        for warning in result.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        return 0
    if args.command == "train":
        task.train(args.data, args.recipe, args.output, device=args.device, resume=args.resume,
                   **_given_task_options(args, "train"))
        return 0
    if args.command == "evaluate":
        task.evaluate(args.data, args.model, args.output, device=args.device, **_given_task_options(args, "evaluate"))
        return 0
    if args.command == "batch":
        extra = _given_task_options(args, "batch")
        if args.force:
            extra["force"] = True
        task.batch(args.input, args.output, resume=args.resume, model=args.model, device=args.device,
                   **extra)
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; Python warnings (e.g. NumPy's) and what C libraries print
    (:mod:`mskai.native_output`) stay off the terminal, and ``--debug`` prints them
    after MSKAI's own output."""
    from mskai import native_output

    args = _build_parser().parse_args(argv)
    mark = native_output.mark()
    with warnings.catch_warnings(record=True) as caught:
        code = _main(args)
    if args.debug:
        for message in native_output.kept_messages(mark):
            print(f"mskai: debug: printed by a library: {message}", file=sys.stderr)
        for warning in caught:
            print(f"mskai: debug: warning: {warning.category.__name__}: {warning.message} "
                  f"({warning.filename}:{warning.lineno})", file=sys.stderr)
    return code


def _main(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except MskaiError as err:
        if args.debug:
            traceback.print_exc()
        print(f"mskai: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("mskai: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an internal error: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"mskai: internal error: {type(err).__name__}: {message} (rerun with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
