"""Model bundles: format, registry, checksums, safe loading and installation.

A bundle is a folder (SPEC §0.3)::

    <id>-<version>/
        metadata.json        # id, version, task, architecture, input, ... weights
        model.safetensors    # or a weights-only torch ``.pt`` state dict
        [extra files]        # e.g. a mean image; checksummed like the weights

``metadata.json`` lists every weights file with its sha256 and size; a bundle
whose files do not match is refused.  Weights load only through safetensors or
``torch.load(weights_only=True)``: no pickled code from a model file ever runs.

One file (about 650 lines) on purpose: the format, the checksums, the registry,
installation and the shared weights loader are one trust boundary -- every path
by which weights reach a network goes through the checks written here.

Where bundles are found (see :func:`mskai.paths.models_dirs`): the registry
``Resources/Models/registry.json`` (shipped bundles, pinned by checksum), the
shipped ``Resources/Models/*/`` folders and the user's installed bundles under
``mskai_home()/models/<id>-<version>/``.  Nothing is downloaded unless
:func:`install_bundle` is given a URL with ``allow_url=True``.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, TypeVar, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mskai import DEMO_DISCLAIMER
from mskai.errors import ModelError
from mskai import paths
from mskai.files import read_json

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED_FIELDS = ("schema_version", "id", "version", "task", "architecture", "input", "weights")
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHUNK = 1 << 20


def registry_path() -> Path:
    """The shipped model registry, ``Resources/Models/registry.json``."""
    return paths.resources_dir() / "Models" / "registry.json"


def ship_bundle(source: str | Path, folder: str, description: str) -> "Bundle":
    """Copy a trained bundle into the shipped models (``Resources/Models/<folder>``, replacing
    what is there), verify its weights and register it in :func:`registry_path` (its entry
    replaced, the others kept, sorted by id): what the ``Utilities/train_*_demo.sh`` scripts do
    with the bundles they train."""
    import shutil

    target = registry_path().parent / folder
    if Path(source).resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    bundle = load_bundle(target)
    bundle.verify()
    path = registry_path()
    registry = json.loads(path.read_text(encoding="utf-8"))
    entries = [e for e in registry["bundles"] if e["id"] != bundle.id]
    entries.append({"id": bundle.id, "version": bundle.version, "task": bundle.task, "path": folder,
                    "sha256": bundle.weights[0]["sha256"], "description": description})
    registry["bundles"] = sorted(entries, key=lambda e: e["id"])
    path.write_text(json.dumps(registry, indent=2) + "\n", encoding="utf-8")
    print(f"registered {bundle.label} sha256 {bundle.weights[0]['sha256']}")
    return bundle


def installed_models_dir() -> Path:
    """Where :func:`install_bundle` puts bundles: ``mskai_home()/models``."""
    return paths.mskai_home() / "models"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Bundle:
    """A model bundle folder whose ``metadata.json`` has been read and checked.

    Construct with :func:`load_bundle` (or :meth:`Bundle.from_folder`).  The
    weights are checked against their checksums by :meth:`verify`, which
    :meth:`state_dict` calls before loading anything.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], expected_sha256: str | None = None):
        self.path = Path(path)
        self.metadata = metadata
        self.expected_sha256 = expected_sha256
        """sha256 of the main weights pinned by the registry, when found through it."""

    @classmethod
    def from_folder(cls, folder: str | Path, expected_sha256: str | None = None) -> "Bundle":
        """Read and check ``metadata.json`` of a bundle folder (weights are not read)."""
        folder = Path(folder)
        metadata_path = folder / METADATA_FILE
        if not folder.is_dir():
            raise ModelError(f"model bundle folder {folder} does not exist")
        if not metadata_path.is_file():
            raise ModelError(f"model bundle folder {folder} has no {METADATA_FILE}; "
                             "it is not an MSKAI model bundle")
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ModelError(f"{METADATA_FILE} of model bundle {folder} is not UTF-8 text") from None
        except json.JSONDecodeError as error:
            raise ModelError(f"{METADATA_FILE} of model bundle {folder} is not valid JSON "
                             f"(line {error.lineno} column {error.colno}: {error.msg})") from None
        _check_metadata(metadata, str(folder))
        return cls(folder, metadata, expected_sha256)

    # ----------------------------------------------------------------- facts
    @property
    def id(self) -> str:
        return self.metadata["id"]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def demo(self) -> bool:
        return bool(self.metadata.get("demo", False))

    @property
    def label(self) -> str:
        """``id@version``, how messages and listings name the bundle."""
        return f"{self.id}@{self.version}"

    @property
    def weights(self) -> list[dict[str, Any]]:
        """The ``weights`` entries ``{file, sha256, bytes, dtype}``; the first is the main one."""
        return self.metadata["weights"]

    def info(self) -> dict[str, Any]:
        """The ``model`` block of ``result.json``."""
        disclaimer = self.metadata.get("disclaimer") or (DEMO_DISCLAIMER if self.demo else None)
        return {"id": self.id, "version": self.version, "sha256": self.weights[0]["sha256"],
                "demo": self.demo, "disclaimer": disclaimer}

    def __repr__(self) -> str:
        return f"Bundle({self.label!r}, path={str(self.path)!r})"

    # ----------------------------------------------------------------- checks and loading
    def verify(self) -> None:
        """Check every listed weights and extra file: present, complete, same sha256.

        Raises :class:`ModelError` with one line naming the file and the problem.
        """
        if self.expected_sha256 and self.expected_sha256.lower() != self.weights[0]["sha256"].lower():
            raise ModelError(f"model bundle {self.label} does not match the registry's checksum "
                             f"for it (registry {_short(self.expected_sha256)}, bundle "
                             f"{_short(self.weights[0]['sha256'])}); reinstall the bundle")
        for entry in [*self.weights, *self.metadata.get("extra_files", [])]:
            self._verify_file(entry)

    def _verify_file(self, entry: dict[str, Any]) -> None:
        path = self.path / entry["file"]
        name = entry["file"]
        if not path.is_file():
            raise ModelError(f"model file {name} of bundle {self.label} is missing "
                             f"(expected at {path})")
        expected_bytes = entry.get("bytes")
        actual_bytes = path.stat().st_size
        if expected_bytes is not None and actual_bytes < expected_bytes:
            raise ModelError(f"model file {name} of bundle {self.label} is truncated "
                             f"({actual_bytes} of {expected_bytes} bytes); the copy or download "
                             "did not finish")
        actual = sha256_of(path)
        if actual != entry["sha256"].lower():
            raise ModelError(f"model file {name} of bundle {self.label} does not match its checksum "
                             f"(expected {_short(entry['sha256'])}, got {_short(actual)}); "
                             "the file is damaged or was modified")

    def state_dict(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Verified weights of all weights files, merged, on ``device``.

        Tensors stored as float16 by ``create_bundle(fp16=True)`` come back as float32.
        """
        self.verify()
        merged: dict[str, torch.Tensor] = {}
        for entry in self.weights:
            tensors = self._load_weights_file(self.path / entry["file"], entry["file"])
            if entry.get("dtype") == "float16":
                tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}
            duplicated = merged.keys() & tensors.keys()
            if duplicated:
                raise ModelError(f"model bundle {self.label} defines {sorted(duplicated)[0]!r} in "
                                 "more than one weights file")
            merged.update(tensors)
        return {k: v.to(device) for k, v in merged.items()}

    def _load_weights_file(self, path: Path, name: str) -> dict[str, torch.Tensor]:
        if path.suffix == ".safetensors":
            try:
                return load_file(str(path), device="cpu")
            except (SafetensorError, OSError, ValueError) as error:
                raise ModelError(f"model file {name} of bundle {self.label} cannot be read as "
                                 f"safetensors ({_first_line(error)})") from None
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # torch's own message suggests weights_only=False: never the advice to give.
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
            reason = (f"it holds Python objects ({found.group(1)})" if found
                      else "it is damaged or holds Python objects")
            raise ModelError(f"model file {name} of bundle {self.label} was refused: it is not a "
                             f"plain weights-only state dict, {reason}; MSKAI never runs code from a "
                             "model file") from None
        except Exception as error:  # noqa: BLE001 - torch raises many kinds for damaged files
            raise ModelError(f"model file {name} of bundle {self.label} cannot be read as a torch "
                             f"state dict ({_first_line(error)})") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not (isinstance(loaded, dict) and loaded
                and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())):
            raise ModelError(f"model file {name} of bundle {self.label} does not hold a state dict "
                             "(a mapping of names to tensors)")
        return loaded


BundleSource = Union[Bundle, str, Path]  # not `|`: evaluated at import, Python 3.9
"""A bundle, or what :func:`load_bundle` finds one by: a folder path, an ``id`` or ``id@version``."""

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def load_weights(network: ModuleT, bundle: Bundle, device: str | torch.device = "cpu", *,
                 defaults: Mapping[str, torch.Tensor] | None = None) -> ModuleT:
    """Load a bundle's verified weights into ``network`` (every key, every shape), move it
    to ``device`` and put it in eval mode; returns ``network``.

    ``defaults`` fill in tensors that the bundle's weights lack (a buffer that older
    bundles did not store).  Raises :class:`ModelError` in one line naming the bundle
    when a weights file is missing, damaged or refused (:meth:`Bundle.state_dict`) or
    when the weights do not fit the network (a missing or unexpected key, a shape).
    """
    state = bundle.state_dict()
    for key, value in (defaults or {}).items():
        state.setdefault(key, value)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"model bundle {bundle.label}: weights do not fit its architecture ({first})") from None
    return network.to(device).eval()


# --------------------------------------------------------------------------- creating

def create_bundle(folder: str | Path, metadata: dict[str, Any], state_dict: dict[str, torch.Tensor],
                  *, fp16: bool = False, extra_files: dict[str, bytes] | None = None) -> Bundle:
    """Write a bundle: ``model.safetensors``, extra files and ``metadata.json``.

    Args:
        folder: bundle folder (created; existing bundle files are overwritten).
        metadata: the fields of SPEC §0.3 (``id``, ``version``, ``task``,
            ``architecture``, ``input``, ...).  ``weights`` and ``extra_files``
            are filled in here; ``schema_version`` defaults to the current one,
            ``demo`` to False, and a demo bundle gets :data:`mskai.DEMO_DISCLAIMER`.
        state_dict: tensors to store (moved to CPU; tied tensors are copied).
        fp16: store float32/float64 tensors as float16 (halves the size);
            :meth:`Bundle.state_dict` casts them back to float32.
        extra_files: other files of the bundle by plain file name (e.g. a mean
            image); they are checksummed in ``metadata["extra_files"]``.

    Returns:
        The written bundle, verified.
    """
    folder = Path(folder)
    meta = {key: value for key, value in metadata.items() if key not in ("weights", "extra_files")}
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta.setdefault("demo", False)
    if meta["demo"]:
        meta.setdefault("disclaimer", DEMO_DISCLAIMER)
    # Check the caller's fields before writing anything (the weights entry is filled in below).
    _check_metadata({**meta, "weights": [{"file": WEIGHTS_FILE, "sha256": "0" * 64}]}, str(folder))

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        if fp16 and tensor.dtype in (torch.float32, torch.float64):
            tensor = tensor.half()
        # clone: safetensors refuses tensors that share memory (tied weights).
        tensors[key] = tensor.clone().contiguous()
    weights_path = folder / WEIGHTS_FILE
    save_file(tensors, str(weights_path), metadata={"format": "pt"})
    float_dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}

    meta["weights"] = [{"file": WEIGHTS_FILE, "sha256": sha256_of(weights_path),
                        "bytes": weights_path.stat().st_size,
                        "dtype": "float16" if fp16 else ",".join(sorted(float_dtypes)) or "none"}]
    extras = []
    for name, content in (extra_files or {}).items():
        _check_file_name(name, str(folder))
        path = folder / name
        path.write_bytes(content)
        extras.append({"file": name, "sha256": sha256_of(path), "bytes": len(content)})
    if extras:
        meta["extra_files"] = extras
    _check_metadata(meta, str(folder))
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    bundle = Bundle.from_folder(folder)
    bundle.verify()
    return bundle


# --------------------------------------------------------------------------- finding

def load_bundle(path_or_id: str | Path) -> Bundle:
    """A bundle from a folder path, or by ``id`` / ``id@version`` from the registry
    and the model folders (the newest version when none is given).

    The metadata is checked; call :meth:`Bundle.verify` or
    :meth:`Bundle.state_dict` to check the weights.
    """
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return Bundle.from_folder(path)
    if path.is_file() and path.name == METADATA_FILE:
        return Bundle.from_folder(path.parent)
    if path.is_file():
        raise ModelError(f"{path} is a file, not a model bundle folder; install an archive with "
                         "'mskai models install' or pass the folder holding metadata.json")
    bundle_id, _, version = text.partition("@")
    if not _SAFE_ID.match(bundle_id):
        raise ModelError(f"model bundle folder {path} does not exist")
    matches = [entry for entry in _known_bundles() if entry.get("id") == bundle_id
               and (not version or entry.get("version") == version) and entry["exists"]]
    if not matches:
        looked = ", ".join(str(d) for d in paths.models_dirs())
        raise ModelError(f"no model bundle {text!r} found (looked in the registry and in {looked}); "
                         "run 'mskai models list' to see the available bundles")
    best = max(matches, key=lambda entry: _version_key(entry["version"]))
    bundle = Bundle.from_folder(best["path"], expected_sha256=best.get("registry_sha256"))
    if bundle.id != bundle_id:
        raise ModelError(f"the registry names {bundle_id!r} for {best['path']} but its "
                         f"metadata.json says {bundle.id!r}")
    return bundle


def default_bundle(task: str) -> Bundle:
    """The bundle a task uses when no ``--model`` is given: its registry entry
    (normally the shipped demo bundle), else the newest bundle found for it."""
    candidates = [entry for entry in _known_bundles() if entry.get("task") == task and entry["exists"]]
    if not candidates:
        raise ModelError(f"no model bundle for task {task!r} is installed; pass --model or install "
                         "one with 'mskai models install'")
    registered = [entry for entry in candidates if entry["source"] == "registry"]
    best = max(registered or candidates, key=lambda entry: _version_key(entry["version"]))
    return Bundle.from_folder(best["path"], expected_sha256=best.get("registry_sha256"))


def list_bundles() -> list[dict[str, Any]]:
    """Every known bundle with its verification status.

    Each row: ``id``, ``version``, ``task``, ``path``, ``source`` (``registry``,
    ``shipped`` or ``installed``), ``demo``, ``ok`` and ``message`` (``"ok"`` or
    the one-line problem).
    """
    rows = []
    for entry in _known_bundles():
        row = {key: entry.get(key) for key in ("id", "version", "task", "source")}
        row.update(path=str(entry["path"]), demo=False)
        try:
            bundle = Bundle.from_folder(entry["path"], expected_sha256=entry.get("registry_sha256"))
            row.update(id=bundle.id, version=bundle.version, task=bundle.task, demo=bundle.demo)
            bundle.verify()
            row.update(ok=True, message="ok")
        except ModelError as error:
            row.update(ok=False, message=str(error))
        rows.append(row)
    return rows


def verify_all() -> list[tuple[str, bool, str]]:
    """``(id@version, ok, message)`` for every bundle of :func:`list_bundles`."""
    return [(f"{row['id']}@{row['version']}", row["ok"], row["message"]) for row in list_bundles()]


def _known_bundles() -> list[dict[str, Any]]:
    """Registry entries, then bundle folders in the model folders, one row per folder.

    Rows hold ``id``, ``version``, ``task``, ``path`` (resolved), ``source``,
    ``exists`` and, for registry rows, ``registry_sha256``.
    """
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    registry_base = registry_path().parent
    for entry in _read_registry():
        path = (registry_base / entry["path"]).resolve()
        seen.add(path)
        rows.append({"id": entry["id"], "version": entry["version"], "task": entry.get("task"),
                     "path": path, "source": "registry", "registry_sha256": entry.get("sha256"),
                     "exists": (path / METADATA_FILE).is_file()})
    installed = installed_models_dir()
    for directory in paths.models_dirs():
        if not directory.is_dir():
            continue
        # Names starting with "." are installs in progress (see install_bundle).
        for folder in sorted(p for p in directory.iterdir()
                             if not p.name.startswith(".") and (p / METADATA_FILE).is_file()):
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            summary = _peek_metadata(folder)
            source = "installed" if directory == installed else "shipped"
            rows.append({**summary, "path": folder.resolve(), "source": source, "exists": True})
    return rows


def _read_registry() -> list[dict[str, Any]]:
    path = registry_path()
    if not path.is_file():
        return []
    registry = read_json(path, f"model registry {path}", ModelError)
    entries = registry.get("bundles") if isinstance(registry, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and {"id", "version", "path"} <= e.keys() for e in entries):
        raise ModelError(f"model registry {path} must hold a 'bundles' list of entries with id, "
                         "version and path")
    return entries


def _peek_metadata(folder: Path) -> dict[str, Any]:
    """id, version and task of a folder for listing, tolerant of broken metadata."""
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {}
    return {"id": str(metadata.get("id", folder.name)), "version": str(metadata.get("version", "?")),
            "task": metadata.get("task")}


# --------------------------------------------------------------------------- installing

def install_bundle(source: str | Path, *, allow_url: bool = False, force: bool = False) -> Bundle:
    """Install a bundle into ``mskai_home()/models/<id>-<version>/``.

    Args:
        source: a bundle folder, a ``.zip`` / ``.tar.gz`` / ``.tgz`` / ``.tar``
            archive of one, or an ``http(s)://`` URL of such an archive.
        allow_url: downloading is done only when this is True (``--allow-url``).
        force: replace an installed bundle with the same id and version but
            different weights.

    The bundle is verified before anything is installed; archive members with
    absolute paths, ``..`` or links are refused.  Installing the same bundle
    twice is harmless.  The models folder is checked first (writable, room:
    :func:`mskai.files.check_output_folder`).
    """
    from mskai.files import check_output_folder

    check_output_folder(installed_models_dir(), what="models folder")
    text = str(source)
    with tempfile.TemporaryDirectory(prefix="mskai-install-") as scratch:
        scratch_dir = Path(scratch)
        if urllib.parse.urlparse(text).scheme in ("http", "https"):
            if not allow_url:
                raise ModelError(f"{text} is a URL; MSKAI downloads nothing unless asked: "
                                 "pass --allow-url to download and install it")
            local = _download(text, scratch_dir)
        else:
            local = Path(text).expanduser()
            if not local.exists():
                raise ModelError(f"cannot install {local}: no such file or folder")
        if local.is_dir():
            folder = _bundle_root(local, text)
        elif local.name.lower().endswith(ARCHIVE_SUFFIXES):
            extracted = scratch_dir / "extracted"
            _extract_safely(local, extracted)
            folder = _bundle_root(extracted, text)
        else:
            raise ModelError(f"cannot install {text}: expected a bundle folder or a .zip or "
                             ".tar.gz archive of one")

        bundle = Bundle.from_folder(folder)
        bundle.verify()
        if not _SAFE_ID.match(bundle.version):
            raise ModelError(f"model bundle {bundle.label} has a version that cannot name a folder")
        destination = installed_models_dir() / f"{bundle.id}-{bundle.version}"
        if destination.exists() and not force:
            existing = _compare_installed(destination, bundle)
            if existing == "same":
                return Bundle.from_folder(destination)
            if existing == "different":
                raise ModelError(f"a different {bundle.label} is already installed at {destination}; "
                                 "pass --force to replace it")
            # "damaged": the same bundle with broken files, repaired by installing it again.
        # Copy beside the destination, then swap, so a failed copy leaves no half bundle.
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
        try:
            shutil.copytree(folder, staging, dirs_exist_ok=True)
            if destination.exists():
                shutil.rmtree(destination)
            staging.rename(destination)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    installed = Bundle.from_folder(destination)
    installed.verify()
    return installed


def _download(url: str, scratch_dir: Path) -> Path:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "bundle"
    target = scratch_dir / name
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, _HASH_CHUNK)
    except OSError as error:  # URLError and HTTPError are OSErrors
        raise ModelError(f"cannot download {url} ({_first_line(error)})") from None
    return target


def _bundle_root(folder: Path, source: str) -> Path:
    """The folder holding metadata.json: ``folder`` itself or its single subfolder."""
    if (folder / METADATA_FILE).is_file():
        return folder
    candidates = [p for p in folder.iterdir() if p.is_dir() and (p / METADATA_FILE).is_file()]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelError(f"cannot install {source}: it holds no {METADATA_FILE}, so it is not an "
                         "MSKAI model bundle")
    raise ModelError(f"cannot install {source}: it holds {len(candidates)} bundles; install them "
                     "one at a time")


def _extract_safely(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive, refusing absolute paths, ``..`` and links."""
    target.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                for info in zipped.infolist():
                    _check_member(info.filename, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise ModelError(f"archive {archive.name} contains a link "
                                         f"({info.filename}); it was refused")
                zipped.extractall(target)
        else:
            with tarfile.open(archive, "r:*") as tarred:
                for member in tarred.getmembers():
                    _check_member(member.name, archive)
                    if not (member.isfile() or member.isdir()):
                        raise ModelError(f"archive {archive.name} contains a link or special file "
                                         f"({member.name}); it was refused")
                tarred.extractall(target, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise ModelError(f"archive {archive.name} is damaged or not a .zip/.tar.gz archive "
                         f"({_first_line(error)})") from None


def _check_member(name: str, archive: Path) -> None:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in posix.parts:
        raise ModelError(f"archive {archive.name} has a member outside its folder ({name}); "
                         "it was refused")


def _compare_installed(installed_folder: Path, bundle: Bundle) -> str:
    """``same`` (intact, same weights), ``damaged`` (same weights listed, files
    broken) or ``different`` (another bundle, or not a bundle) than ``bundle``."""
    try:
        installed = Bundle.from_folder(installed_folder)
    except ModelError:
        return "different"
    if [w["sha256"] for w in installed.weights] != [w["sha256"] for w in bundle.weights]:
        return "different"
    try:
        installed.verify()
    except ModelError:
        return "damaged"
    return "same"


# --------------------------------------------------------------------------- metadata checks

def _check_metadata(metadata: Any, where: str) -> None:
    if not isinstance(metadata, dict):
        raise ModelError(f"{METADATA_FILE} of model bundle {where} must be a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in metadata]
    if missing:
        raise ModelError(f"{METADATA_FILE} of model bundle {where} lacks required field(s): "
                         f"{', '.join(missing)}")
    schema = metadata["schema_version"]
    if not isinstance(schema, int) or schema < 1:
        raise ModelError(f"{METADATA_FILE} of model bundle {where} has an invalid schema_version "
                         f"{schema!r}")
    if schema > SCHEMA_VERSION:
        raise ModelError(f"model bundle {where} uses metadata schema {schema} but this MSKAI reads "
                         f"up to {SCHEMA_VERSION}; update MSKAI")
    for name in ("id", "version", "task"):
        if not isinstance(metadata[name], str) or not metadata[name]:
            raise ModelError(f"{METADATA_FILE} of model bundle {where}: {name} must be a non-empty "
                             "string")
    if not _SAFE_ID.match(metadata["id"]):
        raise ModelError(f"{METADATA_FILE} of model bundle {where}: id {metadata['id']!r} may only "
                         "hold letters, digits, '.', '_' and '-'")
    architecture = metadata["architecture"]
    if not isinstance(architecture, dict) or not isinstance(architecture.get("name"), str):
        raise ModelError(f"{METADATA_FILE} of model bundle {where}: architecture must be an object "
                         "with a name (and args)")
    for list_name in ("weights", "extra_files"):
        entries = metadata.get(list_name, [])
        if not isinstance(entries, list) or (list_name == "weights" and not entries):
            raise ModelError(f"{METADATA_FILE} of model bundle {where}: {list_name} must be a "
                             "list of files (weights: at least one)")
        for entry in entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                    and isinstance(entry.get("sha256"), str)
                    and re.fullmatch(r"[0-9a-fA-F]{64}", entry["sha256"])):
                raise ModelError(f"{METADATA_FILE} of model bundle {where}: every {list_name} entry "
                                 "needs a file name and a 64-digit sha256")
            _check_file_name(entry["file"], where)
            if list_name == "weights" and not entry["file"].endswith(WEIGHTS_SUFFIXES):
                raise ModelError(f"{METADATA_FILE} of model bundle {where}: weights file "
                                 f"{entry['file']} must be .safetensors or a .pt state dict")


def _check_file_name(name: str, where: str) -> None:
    """A bundle file must sit inside the bundle: a relative path without ``..``."""
    posix = PurePosixPath(name)
    if not name or posix.is_absolute() or ".." in posix.parts or "\\" in name:
        raise ModelError(f"model bundle {where} names a file outside its folder ({name!r})")


def _version_key(version: str) -> tuple:
    """Sort key for versions like ``1.10.0`` > ``1.9.2``; non-numeric parts sort as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"[.\-+]", str(version)))


def _short(digest: str) -> str:
    return f"{digest[:12]}…"


def _first_line(error: BaseException) -> str:
    """The first sentence of an exception's message (libraries add long advice after it)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")
