"""The store of unloaded deployments' creation requests, and the request rebuilt from a deployment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kamiwaza_mcp.client import UnloadedDeployments
from kamiwaza_mcp.client._unloaded import creation_request_of
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment

PLATFORM = "https://kamiwaza.test/api"
DEPLOYMENT_ID = "5f3c7a8e-1d2b-4c5d-8e9f-0a1b2c3d4e5f"
NEW_ID = "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"
MODEL_ID = "0b6f6a0e-7f43-4d0c-9a43-2c1d1e3f4a5b"
CONFIG_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
FILE_ID = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"


def request() -> CreateModelDeployment:
    return CreateModelDeployment(m_id=MODEL_ID, m_config_id=CONFIG_ID, min_copies=2, starting_copies=2)


async def test_entries_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "unloaded.json"
    store = UnloadedDeployments(path)
    await store.keep(PLATFORM, DEPLOYMENT_ID, request())
    await store.mark_reloaded(PLATFORM, DEPLOYMENT_ID, NEW_ID)

    reopened = UnloadedDeployments(path)
    entry = reopened.get(PLATFORM, DEPLOYMENT_ID)

    assert entry is not None
    assert entry.request == request()
    assert entry.reloaded_as == NEW_ID
    assert reopened.get("https://other.test/api", DEPLOYMENT_ID) is None
    assert [p.name for p in path.parent.iterdir()] == ["unloaded.json"]


async def test_unreadable_file_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "unloaded.json"
    path.write_text("{not json")

    store = UnloadedDeployments(path)

    assert store.get(PLATFORM, DEPLOYMENT_ID) is None
    assert "Ignoring unreadable unloaded-deployments file" in caplog.text


async def test_unwritable_file_keeps_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = UnloadedDeployments(blocker / "unloaded.json")

    await store.keep(PLATFORM, DEPLOYMENT_ID, request())

    assert store.get(PLATFORM, DEPLOYMENT_ID) is not None
    assert "the entries are kept in memory only" in caplog.text


def test_creation_request_from_record() -> None:
    record = {
        "id": DEPLOYMENT_ID,
        "m_id": MODEL_ID,
        "m_config_id": CONFIG_ID,
        "m_file_id": FILE_ID,
        "requested_at": "2026-12-04T10:00:00Z",
        "created_at": "2026-12-04T10:00:00Z",
        "status": "DEPLOYED",
        "min_copies": 2,
        "starting_copies": 2,
        "max_concurrent_requests": 8,
        "engine_name": "vllm",
        "lb_port": 61100,
        "vram_allocation": 2.5e9,
        "runtime_env": {"HF_HOME": "/data"},
        "max_copies": None,
    }

    rebuilt = creation_request_of(Deployment.model_validate(record))

    assert rebuilt.model_dump(exclude_defaults=True) == {
        "m_id": MODEL_ID,
        "m_config_id": CONFIG_ID,
        "m_file_id": FILE_ID,
        "min_copies": 2,
        "starting_copies": 2,
        "max_concurrent_requests": 8,
        "engine_name": "vllm",
        "vram_allocation": 2.5e9,
        "runtime_env": {"HF_HOME": "/data"},
    }
    assert rebuilt.lb_port == 0
