"""The command line contract (SPEC §0.2): one-line errors, exit codes, tasks not built yet."""
import subprocess
import sys

import pytest

from mskai.cli import main
from mskai.tasks import PlaceholderTask, get_task
from mskai.errors import InputError, NotAvailableError

class KneeTask(PlaceholderTask):
    """A task that has not landed (every real task has): what the CLI must answer for one."""

    name = "knee"
    title = "knee cartilage grading (not built)"
    slicer_module = "KneeMR"
    order = 9


@pytest.fixture()
def unbuilt_task(monkeypatch):
    """The registry with a placeholder task ``knee`` beside the real ones."""
    import mskai.tasks as tasks

    registry = dict(tasks._registry())
    registry["knee"] = KneeTask()
    monkeypatch.setattr(tasks, "_registry", lambda: registry)
    return "knee"


def test_analyze_of_unbuilt_task_says_not_available(unbuilt_task, tmp_path, capsys):
    src = tmp_path / "x.nii.gz"
    src.write_bytes(b"")
    code = main(["analyze", unbuilt_task, str(src), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3
    assert err.count("\n") == 1 and err.startswith("mskai: error: ")
    assert "not available yet" in err and unbuilt_task in err
    assert not (tmp_path / "out" / "result.json").exists()


@pytest.mark.parametrize("command", [["train", "knee", "--data", "d", "--recipe", "demo", "--output", "o"],
                                     ["evaluate", "knee", "--data", "d", "--model", "m", "--output", "o"],
                                     ["batch", "knee", "in", "--output", "o"],
                                     ["demo", "knee"]])
def test_every_command_of_unbuilt_tasks_says_not_available(unbuilt_task, command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(command) == 3
    assert "not available yet" in capsys.readouterr().err


def test_unknown_task_is_an_input_error(unbuilt_task):
    with pytest.raises(InputError, match="unknown task"):
        get_task("hip")
    with pytest.raises(NotAvailableError):
        get_task(unbuilt_task).analyze([])


def test_internal_error_is_one_line_without_traceback(monkeypatch, capsys):
    import mskai.cli as cli

    def boom(args):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(cli, "_run", boom)
    assert main(["models", "list"]) == 1
    err = capsys.readouterr().err
    assert err == "mskai: internal error: RuntimeError: something broke (rerun with --debug for details)\n"
    assert main(["--debug", "models", "list"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_console_entry_point_runs_as_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mskai", "analyze", "ovf", str(tmp_path / "missing.dcm"),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.dcm" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_models_install_list_verify_and_tampered_bundle(tmp_path, monkeypatch, capsys):
    import torch

    from mskai.bundles import create_bundle

    monkeypatch.setenv("MSKAI_HOME", str(tmp_path / "home"))
    meta = {"id": "cli-test", "version": "1.0.0", "task": "ovf", "name": "cli test bundle",
            "architecture": {"name": "linear", "args": {}}, "input": {"modality": "CT"},
            "intended_use": "tests"}
    src = tmp_path / "src"
    create_bundle(src, meta, {"w": torch.arange(6, dtype=torch.float32)})
    assert main(["models", "install", str(src)]) == 0
    assert "installed cli-test@1.0.0" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert "cli-test@1.0.0" in capsys.readouterr().out
    assert main(["models", "verify"]) == 0
    installed = next((tmp_path / "home" / "models").glob("cli-test*"))
    weights = installed / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main(["models", "verify"]) == 1
    out = capsys.readouterr().out
    assert "cli-test@1.0.0\tFAILED" in out and "checksum" in out
    assert main(["models", "install", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mskai: error: ") and err.count("\n") == 1
    assert main(["models", "install", "https://example.invalid/b.zip"]) == 2
    assert "--allow-url" in capsys.readouterr().err


def test_batch_passes_ovf_options_and_records_a_failing_study(tmp_path, capsys):
    import csv

    listing = tmp_path / "studies.txt"
    listing.write_text(f"{tmp_path / 'missing-study'}\n")
    code = main(["batch", "ovf", str(listing), "--output", str(tmp_path / "out"),
                 "--aggregator", "max", "--evidence", "none"])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "worklist.csv")))
    assert len(rows) == 1 and rows[0]["status"].startswith("failed")
    code = main(["batch", "ovf", str(listing), "--output", str(tmp_path / "out2"), "--aggregator", "median"])
    err = capsys.readouterr().err
    assert code == 2 and "median" in err
