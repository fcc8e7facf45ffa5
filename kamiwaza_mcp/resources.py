"""Resources: the platform's deployments as JSON, for hosts that attach them to a conversation.

`kamiwaza://deployments` contains every deployment as a list entry, oldest
first; `kamiwaza://deployments/{id}` contains one deployment with its replicas.
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from .app_context import AppContext, current_app
from .client import KamiwazaError, NotFoundError
from .tools._common import canonical_uuid
from .tools._views import deployment_entry, deployment_view
from .tools.deployments import deployment_sort_key

__all__ = ["DEPLOYMENTS_URI", "DEPLOYMENT_URI_TEMPLATE", "register_resources"]

DEPLOYMENTS_URI = "kamiwaza://deployments"
DEPLOYMENT_URI_TEMPLATE = "kamiwaza://deployments/{id}"


def register_resources(server: MCPServer[AppContext]) -> None:
    """Register the deployment resources on `server`."""
    server.resource(
        DEPLOYMENTS_URI,
        name="deployments",
        title="Deployments",
        description="Every deployment with its status, replicas up, id and endpoint, oldest first.",
        mime_type="application/json",
    )(read_deployments)
    server.resource(
        DEPLOYMENT_URI_TEMPLATE,
        name="deployment",
        title="Deployment",
        description="One deployment with its replicas, endpoint and last error; id is the deployment UUID.",
        mime_type="application/json",
    )(read_deployment)


async def read_deployments() -> str:
    """Return every deployment as JSON: `{"total": n, "deployments": [entry, ...]}`."""
    app = current_app()
    try:
        deployments = await app.client.list_deployments()
    except KamiwazaError as exc:
        raise ResourceError(f"{exc.kind}: {exc}") from exc
    entries = [
        deployment_entry(app.client, deployment).model_dump(mode="json")
        for deployment in sorted(deployments, key=deployment_sort_key)
    ]
    return json.dumps({"total": len(entries), "deployments": entries})


async def read_deployment(id: str) -> str:
    """Return one deployment as JSON, the same object get_deployment returns."""
    app = current_app()
    try:
        target = canonical_uuid(id, "deployment", "list_deployments")
        deployment = await app.client.get_deployment(target)
    except NotFoundError as exc:
        raise ResourceNotFoundError(f"{exc.kind}: {exc}") from exc
    except KamiwazaError as exc:
        raise ResourceError(f"{exc.kind}: {exc}") from exc
    return deployment_view(app.client, deployment).model_dump_json(exclude_unset=True)
