"""Tests of mskai.bundles: format, checksums, safe loading, registry and installation."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import mskai.paths
from mskai import DEMO_DISCLAIMER
from mskai.bundles import (create_bundle, default_bundle, install_bundle, list_bundles, load_bundle,
                           load_weights, verify_all)
from mskai.errors import ModelError

CHECKSUM_MESSAGE = (r"^model file model\.safetensors of bundle {label} does not match its checksum "
                    r"\(expected [0-9a-f]{{12}}…, got [0-9a-f]{{12}}…\); the file is damaged or was "
                    r"modified$")


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A private MSKAI_HOME and a private Resources folder with an empty registry."""
    home = tmp_path / "home"
    resources = tmp_path / "Resources"
    (resources / "Models").mkdir(parents=True)
    (resources / "Models" / "registry.json").write_text(json.dumps({"schema_version": 1, "bundles": []}))
    monkeypatch.setenv("MSKAI_HOME", str(home))
    monkeypatch.setattr(mskai.paths, "resources_dir", lambda: resources)
    return {"home": home, "models": resources / "Models", "installed": home / "models",
            "work": tmp_path / "work"}


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 2))
    net(torch.randn(3, 1, 8, 8))  # moves the batch-norm statistics and counter off their defaults
    return net.state_dict()


def metadata(bundle_id: str = "wrist-test", version: str = "1.0.0", **extra) -> dict:
    base = {
        "id": bundle_id, "version": version, "task": "wrist", "name": "test bundle",
        "description": "for tests", "architecture": {"name": "tiny", "args": {"channels": 4}},
        "input": {"modality": "DX", "spacing_mm": [0.2, 0.2], "size": [8, 8], "channels": 1},
        "preprocessing": {}, "thresholds": {"artifact": 0.5}, "class_names": ["ok", "artifact"],
        "training_data": {"description": "phantoms", "recipe": "demo", "seed": 0},
        "metrics": {}, "intended_use": "tests",
    }
    base.update(extra)
    return base


def assert_same_tensors(actual: dict, expected: dict, **tolerance) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        torch.testing.assert_close(actual[key], expected[key], **tolerance)


# --------------------------------------------------------------------------- create / load

def test_create_then_load_gives_the_same_tensors_and_metadata(places):
    weights = tiny_state_dict()
    created = create_bundle(places["work"] / "b", metadata(), weights,
                            extra_files={"mean_image.npy": b"\x93NUMPY-not-really"})
    loaded = load_bundle(places["work"] / "b")
    assert_same_tensors(loaded.state_dict(), weights, rtol=0, atol=0)

    on_disk = json.loads((places["work"] / "b" / "metadata.json").read_text())
    weights_file = places["work"] / "b" / "model.safetensors"
    assert on_disk["weights"] == [{"file": "model.safetensors",
                                   "sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
                                   "bytes": weights_file.stat().st_size, "dtype": "float32"}]
    assert on_disk["extra_files"][0]["sha256"] == hashlib.sha256(b"\x93NUMPY-not-really").hexdigest()
    assert on_disk["schema_version"] == 1 and on_disk["architecture"]["args"] == {"channels": 4}
    assert loaded.id == created.id == "wrist-test" and loaded.version == "1.0.0"
    assert loaded.info() == {"id": "wrist-test", "version": "1.0.0",
                             "sha256": on_disk["weights"][0]["sha256"], "demo": False,
                             "disclaimer": None}
    # Loading through metadata.json's own path names the same bundle.
    assert load_bundle(places["work"] / "b" / "metadata.json").path == places["work"] / "b"


def test_fp16_bundle_halves_the_file_and_loads_back_as_float32(places):
    weights = {**tiny_state_dict(), "head.weight": torch.randn(64, 64)}  # big enough to dwarf the header
    full = create_bundle(places["work"] / "full", metadata(), weights)
    half = create_bundle(places["work"] / "half", metadata(demo=True), weights, fp16=True)
    full_bytes = (full.path / "model.safetensors").stat().st_size
    half_bytes = (half.path / "model.safetensors").stat().st_size
    assert half_bytes < 0.6 * full_bytes

    with safe_open(str(half.path / "model.safetensors"), framework="pt") as stored:
        assert stored.get_tensor("0.weight").dtype == torch.float16
        assert stored.get_tensor("1.num_batches_tracked").dtype == torch.int64
    restored = half.state_dict()
    assert_same_tensors(restored, weights, rtol=1e-3, atol=1e-3)
    assert half.metadata["weights"][0]["dtype"] == "float16"
    assert half.info()["demo"] is True and half.info()["disclaimer"] == DEMO_DISCLAIMER


def test_pt_state_dict_bundle_loads(places):
    weights = tiny_state_dict()
    buffer = io.BytesIO()
    torch.save({"state_dict": weights, "epoch": 3}, buffer)  # a training checkpoint's layout
    write_pt_bundle(places["work"] / "pt", buffer.getvalue())
    assert_same_tensors(load_bundle(places["work"] / "pt").state_dict(), weights, rtol=0, atol=0)


def write_pt_bundle(folder: Path, content: bytes, bundle_id: str = "wrist-test") -> None:
    """A bundle whose metadata matches ``model.pt`` exactly (checksum included)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(content)
    (folder / "metadata.json").write_text(json.dumps(
        {**metadata(bundle_id), "schema_version": 1,
         "weights": [{"file": "model.pt", "sha256": hashlib.sha256(content).hexdigest()}]}))


def test_pt_files_that_are_not_state_dicts_are_one_line_errors(places):
    write_pt_bundle(places["work"] / "garbage", b"not a torch file at all")
    with pytest.raises(ModelError, match=r"^model file model\.pt of bundle wrist-test@1\.0\.0 was refused: "
                                         r"it is not a plain weights-only state dict, it is damaged"):
        load_bundle(places["work"] / "garbage").state_dict()

    checkpoint = io.BytesIO()
    torch.save({"w": torch.ones(3)}, checkpoint)
    write_pt_bundle(places["work"] / "cut", checkpoint.getvalue()[:200])
    with pytest.raises(ModelError, match=r"^model file model\.pt of bundle wrist-test@1\.0\.0 cannot be "
                                         r"read as a torch state dict \(PytorchStreamReader"):
        load_bundle(places["work"] / "cut").state_dict()

    buffer = io.BytesIO()
    torch.save(torch.ones(3), buffer)
    write_pt_bundle(places["work"] / "tensor", buffer.getvalue())
    with pytest.raises(ModelError, match=r"does not hold a state dict \(a mapping of names to tensors\)$"):
        load_bundle(places["work"] / "tensor").state_dict()


class RunsCodeWhenUnpickled:
    """A pickled object whose loading would execute code (writes a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def test_pickled_code_in_a_pt_file_is_refused_and_never_runs(places):
    folder = places["work"] / "evil"
    marker = places["work"] / "code-ran.txt"
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": RunsCodeWhenUnpickled(marker)}, buffer)
    write_pt_bundle(folder, buffer.getvalue(), bundle_id="evil")

    bundle = load_bundle(folder)
    bundle.verify()  # the checksum is right: the danger is the content
    with pytest.raises(ModelError, match=r"^model file model\.pt of bundle evil@1\.0\.0 was refused: "
                                         r"it is not a plain weights-only state dict, it holds Python "
                                         r"objects \(exec\); MSKAI never runs code from a model file$"):
        bundle.state_dict()
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(folder / "model.pt", weights_only=False)
    assert marker.read_text() == "code ran"


# --------------------------------------------------------------------------- damaged bundles

def test_a_changed_byte_is_a_checksum_error(places):
    bundle = create_bundle(places["work"] / "b", metadata(), tiny_state_dict())
    weights_file = bundle.path / "model.safetensors"
    content = bytearray(weights_file.read_bytes())
    content[len(content) // 2] ^= 0x01
    weights_file.write_bytes(bytes(content))

    pattern = CHECKSUM_MESSAGE.format(label=r"wrist-test@1\.0\.0")
    with pytest.raises(ModelError, match=pattern):
        bundle.verify()
    with pytest.raises(ModelError, match=pattern):
        load_bundle(bundle.path).state_dict()


def test_a_truncated_file_is_named_truncated(places):
    bundle = create_bundle(places["work"] / "b", metadata(), tiny_state_dict())
    weights_file = bundle.path / "model.safetensors"
    size = weights_file.stat().st_size
    weights_file.write_bytes(weights_file.read_bytes()[:1000])
    with pytest.raises(ModelError, match=rf"^model file model\.safetensors of bundle wrist-test@1\.0\.0 "
                                         rf"is truncated \(1000 of {size} bytes\); the copy or download "
                                         r"did not finish$"):
        bundle.state_dict()


def test_missing_or_broken_metadata_and_missing_files(places):
    folder = places["work"] / "b"
    folder.mkdir(parents=True)
    with pytest.raises(ModelError, match=r"^model bundle folder .*/b has no metadata\.json; it is not "
                                         r"an MSKAI model bundle$"):
        load_bundle(folder)

    (folder / "metadata.json").write_text('{"id": "x",\n "version": }')
    with pytest.raises(ModelError, match=r"^metadata\.json of model bundle .*/b is not valid JSON "
                                         r"\(line 2 column 13: Expecting value\)$"):
        load_bundle(folder)

    (folder / "metadata.json").write_text(json.dumps({"id": "x", "version": "1", "task": "wrist"}))
    with pytest.raises(ModelError, match=r"lacks required field\(s\): schema_version, architecture, "
                                         r"input, weights$"):
        load_bundle(folder)

    bundle = create_bundle(folder, metadata(), tiny_state_dict())
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"^model file model\.safetensors of bundle wrist-test@1\.0\.0 "
                                         r"is missing \(expected at .*model\.safetensors\)$"):
        bundle.verify()


def test_create_bundle_checks_metadata_before_writing(places):
    incomplete = {key: value for key, value in metadata().items() if key != "architecture"}
    with pytest.raises(ModelError, match=r"lacks required field\(s\): architecture$"):
        create_bundle(places["work"] / "b", incomplete, tiny_state_dict())
    assert not (places["work"] / "b").exists()


def test_weights_file_outside_the_bundle_is_refused(places):
    folder = places["work"] / "b"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(
        {**metadata(), "schema_version": 1, "weights": [{"file": "../elsewhere.pt", "sha256": "0" * 64}]}))
    with pytest.raises(ModelError, match=r"names a file outside its folder \('\.\./elsewhere\.pt'\)$"):
        load_bundle(folder)


def test_newer_schema_asks_to_update(places):
    folder = places["work"] / "b"
    create_bundle(folder, metadata(), tiny_state_dict())
    data = json.loads((folder / "metadata.json").read_text())
    data["schema_version"] = 99
    (folder / "metadata.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"uses metadata schema 99 but this MSKAI reads up to 1; "
                                         r"update MSKAI$"):
        load_bundle(folder)


# --------------------------------------------------------------------------- install

def make_archive(folder: Path, fmt: str) -> Path:
    """zip or gztar of the bundle folder, with the folder itself at the archive's top."""
    return Path(shutil.make_archive(str(folder.parent / folder.name), fmt, root_dir=folder.parent,
                                    base_dir=folder.name))


@pytest.mark.parametrize("fmt", ["zip", "gztar"])
def test_install_from_archive_into_mskai_home(places, fmt):
    weights = tiny_state_dict()
    source = create_bundle(places["work"] / "wrist-test", metadata(), weights)
    archive = make_archive(source.path, fmt)
    shutil.rmtree(source.path)

    installed = install_bundle(str(archive))
    assert installed.path == places["installed"] / "wrist-test-1.0.0"
    assert_same_tensors(installed.state_dict(), weights, rtol=0, atol=0)
    assert load_bundle("wrist-test").path == installed.path
    # Installing the same bundle again is harmless.
    assert install_bundle(str(archive)).path == installed.path


def test_install_from_folder_refuses_to_overwrite_a_different_bundle_unless_forced(places):
    first = create_bundle(places["work"] / "one", metadata(), tiny_state_dict(seed=1))
    other = create_bundle(places["work"] / "two", metadata(), tiny_state_dict(seed=2))
    install_bundle(first.path)
    with pytest.raises(ModelError, match=r"^a different wrist-test@1\.0\.0 is already installed at "
                                         r".*wrist-test-1\.0\.0; pass --force to replace it$"):
        install_bundle(other.path)
    replaced = install_bundle(other.path, force=True)
    assert replaced.info()["sha256"] == other.info()["sha256"]
    assert sorted(p.name for p in places["installed"].iterdir()) == ["wrist-test-1.0.0"]


def test_installing_again_repairs_a_damaged_install(places):
    source = create_bundle(places["work"] / "b", metadata(), tiny_state_dict())
    installed = install_bundle(source.path)
    (installed.path / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(ModelError, match="is truncated"):
        installed.verify()
    install_bundle(source.path).verify()


def test_install_refuses_a_damaged_bundle_and_installs_nothing(places):
    bundle = create_bundle(places["work"] / "b", metadata(), tiny_state_dict())
    with open(bundle.path / "model.safetensors", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff\xfe")
    with pytest.raises(ModelError, match=CHECKSUM_MESSAGE.format(label=r"wrist-test@1\.0\.0")):
        install_bundle(bundle.path)
    assert not places["installed"].exists() or not any(places["installed"].iterdir())


def test_archive_members_outside_the_folder_are_refused(places):
    bundle = create_bundle(places["work"] / "b", metadata(), tiny_state_dict())
    escaped = places["work"] / "evil.txt"

    zipped = places["work"] / "traversal.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(bundle.path / "metadata.json", "b/metadata.json")
        archive.writestr("b/../../evil.txt", "escaped")
    with pytest.raises(ModelError, match=r"^archive traversal\.zip has a member outside its folder "
                                         r"\(b/\.\./\.\./evil\.txt\); it was refused$"):
        install_bundle(zipped)

    tarred = places["work"] / "absolute.tar.gz"
    with tarfile.open(tarred, "w:gz") as archive:
        archive.add(bundle.path / "metadata.json", "b/metadata.json")
        info = tarfile.TarInfo(str(escaped))
        info.size = 7
        archive.addfile(info, io.BytesIO(b"escaped"))
    with pytest.raises(ModelError, match=r"^archive absolute\.tar\.gz has a member outside its folder"):
        install_bundle(tarred)

    linked = places["work"] / "link.tar.gz"
    with tarfile.open(linked, "w:gz") as archive:
        info = tarfile.TarInfo("b/model.safetensors")
        info.type, info.linkname = tarfile.SYMTYPE, str(escaped)
        archive.addfile(info)
    with pytest.raises(ModelError, match=r"^archive link\.tar\.gz contains a link or special file "
                                         r"\(b/model\.safetensors\); it was refused$"):
        install_bundle(linked)
    assert not escaped.exists()


def test_damaged_archive_and_unknown_source_are_one_line_errors(places):
    places["work"].mkdir(parents=True)
    broken = places["work"] / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ModelError, match=r"^archive broken\.zip is damaged or not a \.zip/\.tar\.gz archive"):
        install_bundle(broken)
    with pytest.raises(ModelError, match=r"^cannot install .*nowhere: no such file or folder$"):
        install_bundle(places["work"] / "nowhere")
    text_file = places["work"] / "notes.txt"
    text_file.write_text("hello")
    with pytest.raises(ModelError, match=r"expected a bundle folder or a \.zip or \.tar\.gz archive"):
        install_bundle(text_file)


def test_url_needs_allow_url_and_then_downloads(places, monkeypatch):
    weights = tiny_state_dict()
    archive = make_archive(create_bundle(places["work"] / "wrist-test", metadata(), weights).path, "zip")
    url = "https://models.example.org/wrist-test-1.0.0.zip"
    with pytest.raises(ModelError, match=r"^https://models\.example\.org/wrist-test-1\.0\.0\.zip is a URL; "
                                         r"MSKAI downloads nothing unless asked: pass --allow-url"):
        install_bundle(url)

    requested = []

    def fake_urlopen(address, timeout):  # stands in for the network
        requested.append(address)
        return io.BytesIO(archive.read_bytes())

    monkeypatch.setattr("mskai.bundles.urllib.request.urlopen", fake_urlopen)
    installed = install_bundle(url, allow_url=True)
    assert requested == [url]
    assert_same_tensors(installed.state_dict(), weights, rtol=0, atol=0)


# --------------------------------------------------------------------------- registry, list, verify

def test_list_verify_and_lookup_by_id_through_registry_and_model_folders(places):
    shipped = create_bundle(places["models"] / "wrist-demo", metadata("wrist-demo", demo=True),
                            tiny_state_dict(), fp16=True)
    (places["models"] / "registry.json").write_text(json.dumps({"schema_version": 1, "bundles": [
        {"id": "wrist-demo", "version": "1.0.0", "task": "wrist", "path": "wrist-demo",
         "sha256": shipped.info()["sha256"]}]}))
    for version in ("1.2.0", "1.10.0"):
        install_bundle(create_bundle(places["work"] / version, metadata("wrist-user", version),
                                     tiny_state_dict()).path)
    broken = create_bundle(places["installed"] / "wrist-broken-1", metadata("wrist-broken", "1"),
                           tiny_state_dict())
    (broken.path / "model.safetensors").write_bytes(b"nonsense")

    rows = {(row["id"], row["version"]): row for row in list_bundles()}
    assert set(rows) == {("wrist-demo", "1.0.0"), ("wrist-user", "1.2.0"), ("wrist-user", "1.10.0"),
                         ("wrist-broken", "1")}
    assert rows[("wrist-demo", "1.0.0")]["source"] == "registry"
    assert rows[("wrist-demo", "1.0.0")]["demo"] is True
    assert rows[("wrist-user", "1.10.0")]["source"] == "installed"
    assert rows[("wrist-broken", "1")]["ok"] is False
    assert "is truncated (8 of" in rows[("wrist-broken", "1")]["message"]

    verdicts = {label: ok for label, ok, _ in verify_all()}
    assert verdicts == {"wrist-demo@1.0.0": True, "wrist-user@1.2.0": True,
                        "wrist-user@1.10.0": True, "wrist-broken@1": False}

    assert load_bundle("wrist-user").version == "1.10.0"  # newest, compared as numbers
    assert load_bundle("wrist-user@1.2.0").version == "1.2.0"
    assert load_bundle("wrist-demo").expected_sha256 == shipped.info()["sha256"]
    assert default_bundle("wrist").id == "wrist-demo"
    with pytest.raises(ModelError, match=r"^no model bundle 'wrist-user@9' found \(looked in the "
                                         r"registry and in .*\); run 'mskai models list'"):
        load_bundle("wrist-user@9")
    with pytest.raises(ModelError, match=r"^no model bundle for task 'knee' is installed"):
        default_bundle("knee")


def test_registry_checksum_pins_the_shipped_bundle(places):
    shipped = create_bundle(places["models"] / "wrist-demo", metadata("wrist-demo"), tiny_state_dict())
    (places["models"] / "registry.json").write_text(json.dumps({"schema_version": 1, "bundles": [
        {"id": "wrist-demo", "version": "1.0.0", "task": "wrist", "path": "wrist-demo",
         "sha256": "ab" * 32}]}))
    # The bundle is self-consistent but is not the one the registry pinned.
    shipped.verify()
    with pytest.raises(ModelError, match=r"^model bundle wrist-demo@1\.0\.0 does not match the "
                                         r"registry's checksum for it \(registry abababababab…, bundle "):
        load_bundle("wrist-demo").verify()


def test_invalid_registry_is_one_line(places):
    (places["models"] / "registry.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"^model registry .*registry\.json is not valid JSON"):
        list_bundles()


def test_shipped_registry_file_is_valid():
    registry = json.loads((Path(__file__).resolve().parents[1] / "Resources" / "Models" /
                           "registry.json").read_text())
    assert registry["schema_version"] == 1
    assert isinstance(registry["bundles"], list)


# --------------------------------------------------------------------------- loading into a network

def tiny_network() -> torch.nn.Module:
    """The network whose state :func:`tiny_state_dict` holds."""
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 2))


def test_load_weights_fills_the_network_and_puts_it_in_eval_mode(places):
    weights = tiny_state_dict()
    bundle = create_bundle(places["work"] / "b", metadata(), weights)
    network = tiny_network().train()
    assert load_weights(network, bundle) is network
    assert not network.training
    assert_same_tensors(network.state_dict(), weights, rtol=0, atol=0)


@pytest.mark.parametrize("edit, problem", [
    (lambda w: w.pop("3.bias"), "missing key"),
    (lambda w: w.update({"3.bias": torch.zeros(5)}), "shape"),
    (lambda w: w.update({"extra.weight": torch.zeros(1)}), "unexpected key"),
])
def test_load_weights_that_do_not_fit_is_one_line_naming_the_bundle(places, edit, problem):
    weights = tiny_state_dict()
    edit(weights)
    bundle = create_bundle(places["work"] / "b", metadata(), weights)
    with pytest.raises(ModelError, match=r"^model bundle wrist-test@1\.0\.0: weights do not fit its "
                                         r"architecture \(Error\(s\) in loading state_dict for "
                                         r"Sequential:\)$"):
        load_weights(tiny_network(), bundle)


def test_load_weights_defaults_fill_only_what_the_bundle_lacks(places):
    weights = tiny_state_dict()
    stored_bias = weights["3.bias"].clone()
    weights.pop("1.running_mean")
    bundle = create_bundle(places["work"] / "b", metadata(), weights)
    network = load_weights(tiny_network(), bundle,
                           defaults={"1.running_mean": torch.full((4,), 7.0), "3.bias": torch.zeros(2)})
    assert torch.equal(network[1].running_mean, torch.full((4,), 7.0))
    assert torch.equal(network[3].bias.detach(), stored_bias)


def test_load_weights_refuses_a_damaged_weights_file(places):
    bundle = create_bundle(places["work"] / "b", metadata(), tiny_state_dict())
    with open(bundle.path / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\0\0\0")
    with pytest.raises(ModelError, match=CHECKSUM_MESSAGE.format(label=r"wrist-test@1\.0\.0")):
        load_weights(tiny_network(), bundle)


def test_ship_bundle_copies_verifies_and_registers_keeping_the_other_entries(places):
    from mskai.bundles import ship_bundle

    registry = places["models"] / "registry.json"
    registry.write_text(json.dumps({"schema_version": 1, "bundles": [
        {"id": "zz-other", "version": "1.0.0", "task": "wrist", "path": "zz-other", "sha256": "0" * 64}]}))
    create_bundle(places["work"] / "trained", metadata("wrist-shipped", "1.2.0"), tiny_state_dict())
    bundle = ship_bundle(places["work"] / "trained", "wrist-shipped", "a test bundle (demo)")
    assert (places["models"] / "wrist-shipped" / "model.safetensors").is_file()
    entries = json.loads(registry.read_text())["bundles"]
    assert [e["id"] for e in entries] == ["wrist-shipped", "zz-other"]
    assert entries[0] == {"id": "wrist-shipped", "version": "1.2.0", "task": "wrist", "path": "wrist-shipped",
                          "sha256": bundle.weights[0]["sha256"], "description": "a test bundle (demo)"}
    assert load_bundle("wrist-shipped").version == "1.2.0"
    # Shipping again replaces the folder and the entry, never duplicates it.
    create_bundle(places["work"] / "trained2", metadata("wrist-shipped", "1.3.0"), tiny_state_dict(1))
    ship_bundle(places["work"] / "trained2", "wrist-shipped", "a test bundle (demo)")
    entries = json.loads(registry.read_text())["bundles"]
    assert [e["version"] for e in entries if e["id"] == "wrist-shipped"] == ["1.3.0"]
    # A damaged bundle is refused before it is registered.
    create_bundle(places["work"] / "bad", metadata("wrist-bad"), tiny_state_dict())
    (places["work"] / "bad" / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(ModelError):
        ship_bundle(places["work"] / "bad", "wrist-bad", "broken")
    assert "wrist-bad" not in [e["id"] for e in json.loads(registry.read_text())["bundles"]]
