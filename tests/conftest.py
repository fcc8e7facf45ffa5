"""Shared test setup: offline Hugging Face libraries and a tiny model built once per session."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from _loopback_guard import refuse_non_loopback

# Set at import, before any test module imports transformers, so nothing reaches the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# An empty Hugging Face cache, so the models a developer downloaded never show up
# in the local platform's listings during the tests.
_EMPTY_HF_CACHE = tempfile.mkdtemp(prefix="kamiwaza-mcp-test-hf-cache-")
os.environ["HF_HUB_CACHE"] = _EMPTY_HF_CACHE
atexit.register(shutil.rmtree, _EMPTY_HF_CACHE, ignore_errors=True)

sys.addaudithook(refuse_non_loopback)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama model folder (needs the `engine` extra)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from kamiwaza_mcp.local.tiny_model import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")
