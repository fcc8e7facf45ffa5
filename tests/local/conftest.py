"""Setup shared by the local platform's tests: an empty Hugging Face hub cache and a broken model."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def empty_hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the hub cache at an empty folder, so models a developer downloaded do not appear in tests."""
    hub = tmp_path_factory.mktemp("hf-hub-cache")
    saved = {key: os.environ.get(key) for key in ("HF_HUB_CACHE", "HF_HOME")}
    os.environ["HF_HUB_CACHE"] = str(hub)
    os.environ.pop("HF_HOME", None)
    yield hub
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def broken_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A copy of the tiny model whose weights file is not safetensors, so loading it fails."""
    folder = tmp_path_factory.mktemp("broken") / "broken-llama"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"these bytes are not a safetensors file")
    return folder
