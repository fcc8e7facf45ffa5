"""Setup shared by the local platform's tests: an empty Hugging Face hub cache."""

from __future__ import annotations

import os
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
