"""Prompts that guide an agent through deploying a model and diagnosing a deployment, and argument completion.

Completion offers deployment ids for the `deployment_id` prompt argument and
the `id` of the deployment resource template, and model names for the
`model` prompt argument. Values start with what the person typed, ignoring case.
"""

from __future__ import annotations

import logging

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.prompts.base import Message, Prompt, UserMessage
from mcp_types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    EmbeddedResource,
    PromptReference,
    ResourceTemplateReference,
    TextResourceContents,
)

from .app_context import AppContext, current_app
from .client import KamiwazaError
from .resources import DEPLOYMENT_URI_TEMPLATE, read_deployment
from .tools._common import canonical_uuid

__all__ = ["MAX_COMPLETIONS", "register_completion", "register_prompts"]

logger = logging.getLogger(__name__)

# The MCP specification caps a completion result at 100 values.
MAX_COMPLETIONS = 100


def register_prompts(server: MCPServer[AppContext], *, deploy_enabled: bool) -> None:
    """Register the prompts on `server`; the deploy prompt only when deploy_model is enabled."""
    if deploy_enabled:
        server.add_prompt(
            Prompt.from_function(
                deploy_a_model,
                name="deploy_a_model",
                title="Deploy a model",
                description="Choose a model, check that it fits, deploy it, wait until it serves, and test it.",
            )
        )
    server.add_prompt(
        Prompt.from_function(
            diagnose_deployment,
            name="diagnose_deployment",
            title="Diagnose a deployment",
            description="Find out why a deployment is not serving, from its status, replicas and last error.",
        )
    )


def deploy_a_model(model: str | None = None, replicas: str = "1") -> list[Message]:
    """Return the steps to deploy `model` (or a model the agent picks) with `replicas` replicas."""
    which = f"the model {model}" if model else "a model"
    pick = f"find {model} in the list" if model else "ask me which model to deploy, if I have not said"
    text = (
        f"Deploy {which} on the Kamiwaza platform with {replicas} replica(s), and check that it answers.\n"
        f"1. Call list_models and {pick}; use its name in the next steps.\n"
        f"2. Call estimate_model_vram with the model and replicas {replicas}. If it does not fit, tell me, "
        "and propose fewer replicas, a lower max_concurrent_requests or a smaller model.\n"
        "3. Call deploy_model. It waits until the deployment is DEPLOYED or FAILED; if it is still DEPLOYING, "
        "call get_deployment_status every few seconds until it is DEPLOYED.\n"
        "4. If it FAILED, call get_deployment and explain its last error.\n"
        "5. Call simple_generate with the deployment_id and a short prompt, and show me the reply, "
        "the deployment id and the endpoint URL."
    )
    return [UserMessage(text)]


async def diagnose_deployment(deployment_id: str) -> list[Message]:
    """Return the steps to diagnose a deployment, with the deployment as it is now when it can be read."""
    target = canonical_uuid(deployment_id, "deployment", "list_deployments")
    text = (
        f"Find out why deployment {target} is not serving as expected.\n"
        "1. Call get_deployment with this deployment_id: note its status, the replicas up and the last error.\n"
        "2. Call get_health and list_model_instances with the deployment_id to see which replicas are "
        "unhealthy or stopped.\n"
        "3. If the last error is OOM or the status is FAILED, call estimate_model_vram for its model and "
        "replicas, and compare the estimate with the memory available.\n"
        "4. Explain the cause in plain words and propose the next step: load_model for an UNLOADED "
        "deployment, a new deployment with fewer replicas for one that does not fit, or generate to check "
        "a DEPLOYED one. Do not stop or unload anything unless I ask."
    )
    messages: list[Message] = [UserMessage(text)]
    uri = DEPLOYMENT_URI_TEMPLATE.replace("{id}", target)
    try:
        snapshot = await read_deployment(target)
    except ResourceError as exc:
        # The steps still help without the snapshot, for instance while the platform restarts.
        messages.append(UserMessage(f"The deployment could not be read just now: {exc}"))
        return messages
    resource = TextResourceContents(uri=uri, mime_type="application/json", text=snapshot)
    messages.append(UserMessage(EmbeddedResource(type="resource", resource=resource)))
    return messages


def register_completion(server: MCPServer[AppContext]) -> None:
    """Register the completion handler of the prompt arguments and the resource template on `server`."""
    # MCPServer.completion carries no annotations in mcp 2.3.0.
    server.completion()(complete_argument)  # type: ignore[no-untyped-call]


async def complete_argument(
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion | None:
    """Return the deployment ids or model names that start with the typed value, sorted."""
    if isinstance(ref, ResourceTemplateReference):
        wants = "deployment" if ref.uri == DEPLOYMENT_URI_TEMPLATE and argument.name == "id" else None
    elif argument.name == "deployment_id":
        wants = "deployment"
    elif argument.name == "model":
        wants = "model"
    else:
        wants = None
    if wants is None:
        return None

    app = current_app()
    try:
        if wants == "deployment":
            candidates = [deployment.id for deployment in await app.client.list_deployments()]
        else:
            candidates = [model.name for model in await app.client.list_models()]
    except KamiwazaError as exc:
        # A completion is a convenience; the person can still type the value.
        logger.info("Completion of %s found no values: %s: %s", argument.name, exc.kind, exc)
        return Completion(values=[])
    typed = argument.value.casefold()
    matches = sorted({value for value in candidates if value.casefold().startswith(typed)})
    return Completion(
        values=matches[:MAX_COMPLETIONS], total=len(matches), has_more=len(matches) > MAX_COMPLETIONS
    )
