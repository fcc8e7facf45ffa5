"""The models the local platform serves: folders found on disk, kept in the store.

Four sources feed it. Folders under `models_dir` are "discovered", folders in
`model_paths` are "configured", and snapshots in the Hugging Face hub cache are
"hf_cache". These are found again at every sync, which drops the folders that are gone. Folders registered through the API are
"registered" and stay until the platform's state is removed; while such a folder
is missing it is left out of the listing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio

from .catalog import DiscoveredModel, inspect_model_folder, scan_hf_cache, scan_models_dir
from .settings import LocalPlatformSettings
from .store import ModelRecord, Store

__all__ = ["DEFAULT_CONFIG_NAME", "DEFAULT_ENGINE", "ModelRegistry", "RegistrationError", "config_id_of"]

logger = logging.getLogger(__name__)

DEFAULT_ENGINE = "transformers"
DEFAULT_CONFIG_NAME = "default"
_FOUND_SOURCES = ("discovered", "configured", "hf_cache")


class RegistrationError(Exception):
    """A folder cannot be registered as a model; the message names the folder and the fix."""


def config_id_of(model_id: str) -> str:
    """Return the id of a model's default config, derived from the model id so it survives restarts."""
    return str(uuid.uuid5(uuid.UUID(model_id), DEFAULT_CONFIG_NAME))


class ModelRegistry:
    """Keeps the store's models table in step with the folders on disk."""

    def __init__(self, settings: LocalPlatformSettings, store: Store) -> None:
        self._settings = settings
        self._store = store

    async def sync(self) -> None:
        """Scan `models_dir` and `model_paths` again, then drop found models whose folder is gone."""
        found = await anyio.to_thread.run_sync(self._find_models)
        for model, source in found:
            self._store.upsert_model(model.id, str(model.path), source, _info_of(model))
        found_ids = {model.id for model, _ in found}
        for record in self._store.list_models():
            if record.source in _FOUND_SOURCES and record.id not in found_ids:
                logger.info("Model folder %s is gone; dropping model %s", record.path, record.id)
                self._store.delete_model(record.id)

    async def register(self, path: str) -> ModelRecord:
        """Register the model folder (Hugging Face or GGUF) at `path`; raise RegistrationError when it is not one."""
        model = await anyio.to_thread.run_sync(_inspect_registration, path)
        record = self._store.upsert_model(model.id, str(model.path), "registered", _info_of(model))
        logger.info("Registered model %s at %s", record.id, record.path)
        return record

    def list_models(self) -> list[ModelRecord]:
        """Return the models whose folder exists, oldest first."""
        return [record for record in self._store.list_models() if Path(record.path).is_dir()]

    def get_model(self, model_id: str) -> ModelRecord | None:
        record = self._store.get_model(model_id)
        if record is None or not Path(record.path).is_dir():
            return None
        return record

    def _find_models(self) -> list[tuple[DiscoveredModel, str]]:
        found = [(model, "discovered") for model in scan_models_dir(self._settings.models_path)]
        for path in self._settings.model_paths:
            try:
                found.append((inspect_model_folder(path), "configured"))
            except (OSError, ValueError) as exc:
                logger.warning("Skipping configured model folder %s: %s", path, exc)
        hub_dir = self._settings.hf_cache_dir
        if self._settings.scan_hf_cache and hub_dir is not None:
            found += [(model, "hf_cache") for model in scan_hf_cache(hub_dir)]
        return found


def _inspect_registration(path: str) -> DiscoveredModel:
    folder = Path(path).expanduser()
    if not folder.is_absolute():
        raise RegistrationError(f"path {path!r} is relative; pass the absolute path of the model folder")
    try:
        return inspect_model_folder(folder)
    except FileNotFoundError as exc:
        raise RegistrationError(f"{exc}; pass a folder that contains config.json or a .gguf file") from exc
    except (OSError, ValueError) as exc:
        raise RegistrationError(f"model folder {folder} cannot be read: {exc}") from exc


def _info_of(model: DiscoveredModel) -> dict[str, Any]:
    info = asdict(model)
    info["path"] = str(model.path)
    return info
