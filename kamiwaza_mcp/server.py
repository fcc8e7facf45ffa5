"""The MCP server: one Kamiwaza client and one confirmation guard, shared by every tool.

With `KAMIWAZA_BASE_URL` set, the client calls that platform over HTTP(S).
Without it, the lifespan starts the embedded local platform and the client
reaches it in-process through an ASGI transport, over the same code path.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from mcp.server.mcpserver import MCPServer

from . import __version__
from .app_context import AppContext
from .client import KamiwazaClient
from .config import ConfigurationError, ServerSettings
from .guard import ConfirmationGuard
from .inprocess import DeadlineASGITransport
from .tools import build_tools

__all__ = ["INSTRUCTIONS", "LOCAL_BASE_URL", "build_server"]

logger = logging.getLogger(__name__)

# The host name is never resolved: requests go through the ASGI transport.
LOCAL_BASE_URL = "http://kamiwaza.local/api"

INSTRUCTIONS = """\
Operates model serving on a Kamiwaza platform.
Workflow: list_models -> estimate_model_vram -> deploy_model (it waits until DEPLOYED; if it is still \
DEPLOYING, poll get_deployment_status until DEPLOYED) -> generate or simple_generate with the deployment_id.
Inspect with list_deployments, get_deployment, list_model_instances, get_health.
stop_deployment and unload_model act only with a confirmation_token: call them once without it to get a \
preview and a token, show the preview to the user, then call again with that token. load_model brings an \
unloaded deployment back.
Errors start with their kind (NotFoundError, DeploymentError, ...) and say what to call next."""


def build_server(
    settings: ServerSettings | None = None, *, clock: Callable[[], float] = time.monotonic
) -> MCPServer[AppContext]:
    """Build the stdio-ready MCP server; `settings` defaults to `ServerSettings.from_env()`.

    Raises ConfigurationError for settings it cannot use. The platform
    connection opens when a client connects, in the server's lifespan.
    `clock` is the confirmation guard's monotonic clock in seconds; tests pass a fake one.
    """
    resolved = settings if settings is not None else ServerSettings.from_env()
    verify = _verify_of(resolved)

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppContext]) -> AsyncIterator[AppContext]:
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(await _open_client(resolved, verify, stack))
            yield AppContext(client=client, guard=ConfirmationGuard(clock=clock))
        logger.info("Closed the connection to the platform")

    return MCPServer(
        name="kamiwaza",
        title="Kamiwaza model serving",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=build_tools(),
        lifespan=lifespan,
    )


async def _open_client(
    settings: ServerSettings, verify: bool | ssl.SSLContext, stack: AsyncExitStack
) -> KamiwazaClient:
    """Create the client for a remote platform, or start the local platform and create one for it."""
    if settings.base_url is not None:
        logger.info("Using the Kamiwaza platform at %s", settings.base_url)
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        return KamiwazaClient(settings.base_url, api_key=api_key, verify=verify, timeouts=settings.timeouts)

    # Imported here so a server for a remote platform never loads the local one.
    from .local import LocalPlatform, LocalPlatformSettings

    # Unset folders are left out, so the platform applies its own defaults.
    folders = {"state_dir": settings.state_dir, "models_dir": settings.models_dir}
    local_settings = LocalPlatformSettings.model_validate(
        {key: path for key, path in folders.items() if path}
    )
    platform = await stack.enter_async_context(LocalPlatform(local_settings))
    logger.info("Started the embedded local platform")
    return KamiwazaClient(
        LOCAL_BASE_URL, transport=DeadlineASGITransport(platform.app), timeouts=settings.timeouts
    )


def _verify_of(settings: ServerSettings) -> bool | ssl.SSLContext:
    """Return the TLS verification setting for httpx, loading the CA bundle when one is set."""
    if settings.ca_bundle is None:
        return settings.verify_ssl
    try:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"invalid KAMIWAZA_CA_BUNDLE={str(settings.ca_bundle)!r}: cannot load it as CA certificates ({exc}); "
            "set it to a PEM file of CA certificates"
        ) from exc
