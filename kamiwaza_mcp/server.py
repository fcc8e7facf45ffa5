"""The MCP server: one Kamiwaza client, one confirmation guard and one policy, shared by every tool.

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
from pathlib import Path
from typing import Any

import httpx
import platformdirs
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import Tool as MCPTool

from . import __version__
from .app_context import AppContext, request_app
from .client import BearerAuth, KamiwazaClient, PasswordLoginAuth, UnloadedDeployments
from .config import ConfigurationError, ServerSettings
from .guard import ConfirmationGuard
from .inprocess import DeadlineASGITransport
from .policy import ConfirmationMode, Policy
from .prompts import register_completion, register_prompts
from .resources import register_resources
from .tools import TOOL_NAMES, TOOL_SPECS, build_tools

__all__ = ["LOCAL_BASE_URL", "build_server", "instructions_for"]

logger = logging.getLogger(__name__)

# The host name is never resolved: requests go through the ASGI transport.
LOCAL_BASE_URL = "http://kamiwaza.local/api"
# In the state folder: the creation requests of deployments unloaded on a platform without an unload route.
UNLOADED_DEPLOYMENTS_FILE = "unloaded-deployments.json"


class KamiwazaServer(MCPServer[AppContext]):
    """MCPServer that leaves the tools the policy disables out of tools/list.

    The disabled tools stay registered, so a call made anyway reaches the tool
    and is rejected there with a message that names the setting.
    """

    def __init__(self, *, hidden_tools: frozenset[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_tools = hidden_tools

    async def list_tools(self) -> list[MCPTool]:
        return [tool for tool in await super().list_tools() if tool.name not in self.hidden_tools]


def build_server(
    settings: ServerSettings | None = None, *, clock: Callable[[], float] = time.monotonic
) -> KamiwazaServer:
    """Build the stdio-ready MCP server; `settings` defaults to `ServerSettings.from_env()`.

    Raises ConfigurationError for settings it cannot use, such as an unknown
    tool name in the allow or deny list. The platform connection opens when a
    client connects, in the server's lifespan. `clock` is the confirmation
    guard's monotonic clock in seconds; tests pass a fake one.
    """
    resolved = settings if settings is not None else ServerSettings.from_env()
    verify = _verify_of(resolved)
    if resolved.base_url is not None and not resolved.verify_ssl:
        logger.warning(
            "TLS certificate verification is off (KAMIWAZA_VERIFY_SSL=false): the server cannot tell "
            "the platform at %s from an impostor; use this only on a test cluster",
            resolved.base_url,
        )
    policy = resolved.policy
    _check_tool_names(policy)
    hidden = frozenset(
        spec.name
        for spec in TOOL_SPECS
        if policy.disabled_reason(spec.name, read_only=spec.read_only, destructive=spec.destructive)
    )
    if hidden:
        logger.info("Tools disabled by the policy: %s", ", ".join(sorted(hidden)))

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppContext]) -> AsyncIterator[AppContext]:
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(await _open_client(resolved, verify, stack))
            yield AppContext(client=client, guard=ConfirmationGuard(clock=clock), policy=policy)
        logger.info("Closed the connection to the platform")

    server = KamiwazaServer(
        hidden_tools=hidden,
        name="kamiwaza",
        title="Kamiwaza model serving",
        version=__version__,
        instructions=instructions_for(policy, hidden),
        tools=build_tools(),
        lifespan=lifespan,
        middleware=[_bind_app],
    )
    register_resources(server)
    register_prompts(server, deploy_enabled="deploy_model" not in hidden)
    register_completion(server)
    return server


def instructions_for(policy: Policy, hidden_tools: frozenset[str]) -> str:
    """Return the server's instructions: the workflow, and what the policy changes in it."""
    lines = [
        "Operates model serving on a Kamiwaza platform.",
        "Workflow: list_models -> estimate_model_vram -> deploy_model (it waits up to "
        f"{policy.max_wait_seconds:g} s, sending the status as progress; if it is still DEPLOYING, poll "
        "get_deployment_status until DEPLOYED) -> generate or simple_generate with the deployment_id.",
        "Inspect with list_deployments, get_deployment, list_model_instances, get_health. List tools return "
        "one page: pass next_cursor as cursor for the next one; response_format detailed adds every field "
        "the platform returned.",
    ]
    if not {"stop_deployment", "unload_model"} <= hidden_tools:
        lines.append(_confirmation_instructions(policy.confirmation))
    if "load_model" not in hidden_tools:
        lines.append("load_model brings an unloaded deployment back.")
    if policy.read_only:
        lines.append("This server is read-only: tools that change anything are not offered.")
    lines.append("Errors start with their kind (NotFoundError, PolicyError, ...) and say what to call next.")
    return "\n".join(lines)


def _confirmation_instructions(mode: ConfirmationMode) -> str:
    if mode is ConfirmationMode.DENY:
        return "stop_deployment and unload_model are rejected on this server (confirmation policy deny)."
    token_flow = (
        "call it once without confirmation_token to get a preview and a token, show the preview to the "
        "person, and call again with the token only if they agree"
    )
    if mode is ConfirmationMode.AUTO:
        how = f"the server asks them in a form when the client supports forms; otherwise {token_flow}"
    else:
        how = token_flow
    return f"stop_deployment and unload_model need the person's confirmation: {how}."


def _check_tool_names(policy: Policy) -> None:
    unknown = policy.unknown_tool_names(TOOL_NAMES)
    if unknown:
        raise ConfigurationError(
            f"unknown tool name{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in --tools or "
            f"--exclude-tools (KAMIWAZA_MCP_TOOLS, KAMIWAZA_MCP_EXCLUDE_TOOLS); valid names: "
            f"{', '.join(sorted(TOOL_NAMES))}"
        )


async def _bind_app(ctx: ServerRequestContext[AppContext, Any], call_next: CallNext) -> HandlerResult:
    """Make the lifespan state readable through `current_app()` while the request is handled."""
    token = request_app.set(ctx.lifespan_context)
    try:
        return await call_next(ctx)
    finally:
        request_app.reset(token)


async def _open_client(
    settings: ServerSettings, verify: bool | ssl.SSLContext, stack: AsyncExitStack
) -> KamiwazaClient:
    """Create the client for a remote platform, or start the local platform and create one for it."""
    if settings.base_url is not None:
        logger.info("Using the Kamiwaza platform at %s", settings.base_url)
        # The creation requests of unloaded deployments go to a file, so a restarted server can load them.
        state_dir = settings.state_dir or Path(platformdirs.user_state_dir("kamiwaza-mcp"))
        return KamiwazaClient(
            settings.base_url,
            auth=_auth_of(settings),
            verify=verify,
            timeouts=settings.timeouts,
            unloaded=UnloadedDeployments(state_dir / UNLOADED_DEPLOYMENTS_FILE),
        )

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


def _auth_of(settings: ServerSettings) -> httpx.Auth | None:
    """Return the API key as a bearer token, else the password login at `<base URL>/auth/token`, else None."""
    if settings.api_key is not None:
        return BearerAuth(settings.api_key.get_secret_value())
    if settings.username is not None and settings.password is not None:
        token_url = f"{settings.base_url}/auth/token"
        return PasswordLoginAuth(token_url, settings.username, settings.password.get_secret_value())
    return None


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
