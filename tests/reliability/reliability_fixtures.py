"""Fixtures of the reliability suite, loaded by `pytest_plugins = ["reliability_fixtures"]` in its modules.

The file is separate from reliability_support.py because pytest must import a
plugin module itself, before any test module imports from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from reliability_support import (
    KNOWN_API_KEY,
    Connection,
    HostedPlatform,
    open_connection,
    seed_store,
    serve_platform,
)

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.local import LocalPlatformSettings
from kamiwaza_mcp.local.store import Store


@pytest.fixture(scope="session")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as running:
        yield running


@pytest.fixture(scope="session")
def fuzz_platform(
    portal: BlockingPortal, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostedPlatform]:
    """A platform without models that contains the SEEDED deployments, behind the bearer check."""
    root = tmp_path_factory.mktemp("reliability-platform")
    settings = LocalPlatformSettings(
        state_dir=root / "state", models_dir=root / "models", scan_hf_cache=False
    )
    with portal.wrap_async_context_manager(serve_platform(settings, KNOWN_API_KEY)) as hosted:
        portal.call(seed_store, hosted.platform.store, hosted.platform.settings.logs_dir)
        yield hosted


@pytest.fixture(scope="session", params=["remote", "embedded"])
def fuzz_connection(
    request: pytest.FixtureRequest,
    portal: BlockingPortal,
    fuzz_platform: HostedPlatform,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Connection]:
    """A server in remote mode (legacy protocol) or in the default embedded mode (auto protocol).

    The remote server reaches `fuzz_platform` with KNOWN_API_KEY. The embedded one
    runs its own platform on a state folder seeded with the same deployments, and is
    configured with the key as well, which it never sends.
    """
    closers: list[Callable[[], None]] = []
    if request.param == "remote":
        settings = ServerSettings.model_validate({"base_url": fuzz_platform.url, "api_key": KNOWN_API_KEY})
        connection = open_connection(portal, settings, "remote", "legacy", closers)
    else:
        root = tmp_path_factory.mktemp("reliability-embedded")
        state_dir = root / "state"
        state_dir.mkdir()
        store = Store.open(state_dir / "platform.db")
        try:
            seed_store(store, state_dir / "logs")
        finally:
            store.close()
        settings = ServerSettings.model_validate(
            {"state_dir": state_dir, "models_dir": root / "models", "api_key": KNOWN_API_KEY}
        )
        # The embedded platform reads HF_HUB_CACHE once, when the lifespan starts it; an empty
        # cache keeps models of this machine out of the fuzzed platform.
        previous = os.environ.get("HF_HUB_CACHE")
        os.environ["HF_HUB_CACHE"] = str(root / "hf-cache")
        try:
            connection = open_connection(portal, settings, "embedded", "auto", closers)
        finally:
            if previous is None:
                del os.environ["HF_HUB_CACHE"]
            else:
                os.environ["HF_HUB_CACHE"] = previous
    try:
        yield connection
    finally:
        for close in reversed(closers):
            close()
