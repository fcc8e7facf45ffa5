"""Discovery of Hugging Face model folders on disk.

A folder is a model when it contains config.json, with or without weights
(`*.safetensors` files or a sharded `model.safetensors.index.json`), or when it
contains `*.gguf` files, which llama.cpp serves and which need no config.json. Model ids are
uuid5 of the resolved folder path, so they stay the same across restarts.

Models a user downloaded with huggingface_hub sit in its hub cache as
`models--<org>--<name>/snapshots/<revision>/`, and `refs/main` names the revision
of the main branch. `scan_hf_cache` finds them with their repo id `org/name`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .gguf import read_gguf_header

__all__ = [
    "DiscoveredModel",
    "ModelFileInfo",
    "context_length_from_config",
    "inspect_model_folder",
    "model_id_for_path",
    "read_model_config",
    "scan_hf_cache",
    "scan_models_dir",
    "text_config_of",
]

logger = logging.getLogger(__name__)

# Fixed namespace of model ids. Changing it changes every model id.
MODEL_ID_NAMESPACE = uuid.UUID("6f1c2b1e-8d3a-5c47-9a0e-3b5d7e2f4c81")

CONFIG_FILE = "config.json"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"

# Config keys of the maximum sequence length, in order of preference (Llama-style, GPT-2, others).
_CONTEXT_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_CACHE_MODEL_PREFIX = "models--"


@dataclass(frozen=True)
class ModelFileInfo:
    """One file of a model folder, named by its path relative to the folder."""

    name: str
    size: int


@dataclass(frozen=True)
class DiscoveredModel:
    """A Hugging Face model folder and what its config.json states about the model."""

    id: str
    name: str
    repo_id: str
    family: str | None
    architecture: str | None
    context_length: int | None
    path: Path
    files: tuple[ModelFileInfo, ...] = field(default_factory=tuple)

    @property
    def has_safetensors(self) -> bool:
        return any(f.name.endswith(".safetensors") for f in self.files)


def model_id_for_path(path: Path) -> str:
    """Return the stable model id of a folder: uuid5 of its resolved path."""
    return str(uuid.uuid5(MODEL_ID_NAMESPACE, str(path.resolve())))


def read_model_config(model_dir: Path) -> dict[str, Any]:
    """Read `model_dir/config.json`.

    Raises FileNotFoundError when it is missing and ValueError when it is not a JSON object.
    """
    config_path = model_dir / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a JSON object (found {type(config).__name__})")
    return config


def text_config_of(config: dict[str, Any]) -> dict[str, Any]:
    """Return the language-model part of a config.

    Multimodal configs keep the decoder's settings under `text_config`.
    """
    text_config = config.get("text_config")
    if isinstance(text_config, dict) and "hidden_size" not in config:
        return text_config
    return config


def context_length_from_config(config: dict[str, Any]) -> int | None:
    """Return the maximum sequence length the config states, or None."""
    for source in (config, text_config_of(config)):
        for key in _CONTEXT_LENGTH_KEYS:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def inspect_model_folder(
    path: Path, *, repo_id: str | None = None, name: str | None = None, hub_repo_id: str | None = None
) -> DiscoveredModel:
    """Describe the model folder at `path` from its config.json and file listing.

    `repo_id` is used when the config's `_name_or_path` is not an `org/name` id, and
    `hub_repo_id` (the repo a hub cache folder belongs to) is used in any case. `name`
    defaults to the folder's name. Raises FileNotFoundError when config.json is missing
    and ValueError when it is invalid. A folder with `*.gguf` files and no config.json is
    described from the GGUF metadata of its first file.
    """
    path = path.resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} not found")
    if not (path / CONFIG_FILE).is_file() and _gguf_in(path):
        return _inspect_gguf_folder(path, repo_id=hub_repo_id or repo_id, name=name)
    config = read_model_config(path)

    name_or_path = config.get("_name_or_path")
    if hub_repo_id is not None:
        repo_id = hub_repo_id
    elif isinstance(name_or_path, str) and _REPO_ID.match(name_or_path):
        repo_id = name_or_path
    architectures = config.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    model_type = config.get("model_type")

    return DiscoveredModel(
        id=model_id_for_path(path),
        name=name or path.name,
        repo_id=repo_id or path.name,
        family=model_type if isinstance(model_type, str) else None,
        architecture=architecture if isinstance(architecture, str) else None,
        context_length=context_length_from_config(config),
        path=path,
        files=_list_files(path),
    )


def scan_models_dir(models_dir: Path) -> list[DiscoveredModel]:
    """Find the model folders in `models_dir`, sorted by path.

    A model sits either directly in `models_dir/<name>` or in `models_dir/<org>/<name>`,
    where it gets the repo id `org/name` unless its config names one. A folder whose
    config.json or GGUF header cannot be read is logged and skipped. A missing `models_dir` gives [].
    """
    if not models_dir.is_dir():
        return []
    found: list[DiscoveredModel] = []
    for child in _subfolders(models_dir):
        if _is_model_folder(child):
            _add_model(found, child, repo_id=None)
            continue
        for grandchild in _subfolders(child):
            if _is_model_folder(grandchild):
                _add_model(found, grandchild, repo_id=f"{child.name}/{grandchild.name}")
    return sorted(found, key=lambda model: str(model.path))


def scan_hf_cache(hub_dir: Path) -> list[DiscoveredModel]:
    """Find the models in a Hugging Face hub cache, one per repo, sorted by repo id.

    Each repo contributes the snapshot that `refs/main` names, else its most recently
    modified snapshot. A snapshot without config.json and without `*.gguf` files is skipped.
    A missing `hub_dir` gives [].
    """
    if not hub_dir.is_dir():
        return []
    found: list[DiscoveredModel] = []
    for repo_dir in _subfolders(hub_dir):
        if not repo_dir.name.startswith(_HF_CACHE_MODEL_PREFIX):
            continue
        # Hub repo names cannot contain "--", so every "--" stands for the "/" of the repo id.
        repo_id = repo_dir.name.removeprefix(_HF_CACHE_MODEL_PREFIX).replace("--", "/")
        snapshot = _cache_snapshot(repo_dir)
        if snapshot is None or not _is_model_folder(snapshot):
            logger.debug("Skipping %s: no snapshot with a config.json or a .gguf file", repo_dir)
            continue
        _add_model(found, snapshot, hub_repo_id=repo_id, name=repo_id.rsplit("/", 1)[-1])
    return sorted(found, key=lambda model: model.repo_id)


def _is_model_folder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() or bool(_gguf_in(folder))


def _gguf_in(folder: Path) -> list[Path]:
    return sorted(file for file in folder.glob("*.gguf") if file.is_file())


def _inspect_gguf_folder(path: Path, *, repo_id: str | None, name: str | None) -> DiscoveredModel:
    """Describe a folder of GGUF files from the header of its first file (the first shard, when sharded).

    Raises ValueError when that file is not valid GGUF.
    """
    header = read_gguf_header(_gguf_in(path)[0])
    context_length = header.model_value("context_length")
    return DiscoveredModel(
        id=model_id_for_path(path),
        name=name or path.name,
        repo_id=repo_id or path.name,
        family=header.architecture,
        architecture=None,
        context_length=context_length if isinstance(context_length, int) and context_length > 0 else None,
        path=path,
        files=_list_files(path),
    )


def _cache_snapshot(repo_dir: Path) -> Path | None:
    """Return the repo's snapshot of `refs/main`, else its most recently modified one, else None."""
    snapshots = repo_dir / "snapshots"
    try:
        revision = (repo_dir / "refs" / "main").read_text(encoding="ascii").strip()
    except OSError:
        revision = ""
    if revision and (snapshots / revision).is_dir():
        return snapshots / revision
    candidates = _subfolders(snapshots) if snapshots.is_dir() else []
    return max(candidates, key=lambda folder: folder.stat().st_mtime, default=None)


def _add_model(found: list[DiscoveredModel], folder: Path, **names: str | None) -> None:
    """Append the model in `folder`, described with `names` (see inspect_model_folder), or log why not."""
    try:
        found.append(inspect_model_folder(folder, **names))
    except (OSError, ValueError) as exc:
        logger.warning("Skipping model folder %s: %s", folder, exc)


def _subfolders(folder: Path) -> list[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        logger.warning("Cannot list %s: %s", folder, exc)
        return []
    return [child for child in children if child.is_dir() and not child.name.startswith(".")]


def _list_files(folder: Path) -> tuple[ModelFileInfo, ...]:
    """List the regular files under `folder`, skipping hidden files and folders such as `.cache`."""
    files = []
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not file.is_file():
            continue
        files.append(ModelFileInfo(name=relative.as_posix(), size=file.stat().st_size))
    return tuple(files)
