"""Tools for the replicas (model instances) of deployments and their health."""

from __future__ import annotations

from typing import Annotated

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ._common import (
    DEFAULT_PAGE_SIZE,
    Cursor,
    Limit,
    ResponseFormat,
    ToolContext,
    app_of,
    canonical_uuid,
    structured,
    tool,
)
from ._paging import page_text, paginate
from ._views import InstanceEntry, InstanceView, instance_entry, instance_view

__all__ = ["TOOLS"]


class InstanceList(BaseModel):
    """One page of replicas, by deployment."""

    instances: list[InstanceEntry] = Field(description="instances of this page")
    total: int = Field(description="instances that match, on all pages")
    next_cursor: str | None = Field(description="cursor of the next page; null on the last page")


class InstanceHealth(BaseModel):
    """The health of one replica."""

    instance_id: str = Field(description="instance UUID")
    status: str | None = Field(description="the instance's status, such as DEPLOYED")
    health: str = Field(description="healthy, unhealthy or unknown")
    detail: str | None = Field(description="why the platform judged it so, when reported")


class DeploymentHealth(BaseModel):
    """The health of one deployment and of each of its replicas."""

    deployment_id: str = Field(description="deployment UUID")
    model_name: str | None = Field(description="name of the deployed model")
    status: str | None = Field(description="the deployment's status, such as DEPLOYED")
    instances: list[InstanceHealth] = Field(description="health of each replica; empty when none runs")


class HealthReport(BaseModel):
    """Health of one page of deployments, by deployment id."""

    deployments: list[DeploymentHealth] = Field(description="one entry per deployment")
    total: int = Field(description="deployments that match, on all pages")
    next_cursor: str | None = Field(description="cursor of the next page; null on the last page")


OptionalDeploymentId = Annotated[
    str | None,
    Field(min_length=1, max_length=64, description="deployment UUID to filter by; omit for all deployments"),
]


@tool("List model instances", read_only=True)
async def list_model_instances(
    ctx: ToolContext,
    deployment_id: OptionalDeploymentId = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
    response_format: ResponseFormat = "concise",
) -> Annotated[CallToolResult, InstanceList]:
    """List replicas with their status, host, port and process id, optionally of one deployment."""
    app = app_of(ctx)
    target = (
        None if deployment_id is None else canonical_uuid(deployment_id, "deployment", "list_deployments")
    )
    detailed = response_format == "detailed"
    views = [instance_entry(i, detailed=detailed) for i in await app.client.list_model_instances(target)]
    page = paginate(
        views,
        tool="list_model_instances",
        key=lambda view: (view.deployment_id, view.id),
        limit=limit,
        cursor=cursor,
        size_of=lambda view: max(len(_instance_line(view)), len(view.model_dump_json(exclude_unset=True))),
        max_tokens=app.policy.max_response_tokens,
    )
    result = InstanceList(instances=page.items, total=page.total, next_cursor=page.next_cursor)
    if page.total == 0:
        return structured("No model instances.", result)
    text = page_text(
        page,
        noun="instances",
        lines=[_instance_line(view) for view in page.items],
        max_tokens=app.policy.max_response_tokens,
        narrowing="filter with deployment_id",
    )
    return structured(text, result)


@tool("Get model instance", read_only=True)
async def get_model_instance(
    ctx: ToolContext,
    instance_id: Annotated[
        str,
        Field(min_length=1, max_length=64, description="instance UUID, as list_model_instances returns it"),
    ],
) -> Annotated[CallToolResult, InstanceView]:
    """Return one replica with its status, host, port and process id."""
    target = canonical_uuid(instance_id, "instance", "list_model_instances")
    view = instance_view(await app_of(ctx).client.get_model_instance(target))
    return structured(_instance_line(view), view)


@tool("Get health", read_only=True)
async def get_health(
    ctx: ToolContext,
    deployment_id: OptionalDeploymentId = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Annotated[CallToolResult, HealthReport]:
    """Report how many replicas of each deployment are healthy, or of one deployment."""
    app = app_of(ctx)
    target = (
        None if deployment_id is None else canonical_uuid(deployment_id, "deployment", "list_deployments")
    )
    entries = _group_health(await app.client.get_health(), only=target)
    if target is not None and not entries:
        # The platform lists no row for this id: get_deployment raises NotFoundError
        # for an unknown id, and otherwise the deployment has no replica to report.
        deployment = await app.client.get_deployment(target)
        entries.append(
            DeploymentHealth(
                deployment_id=target, model_name=deployment.m_name, status=deployment.status, instances=[]
            )
        )
    page = paginate(
        entries,
        tool="get_health",
        key=lambda entry: (entry.deployment_id,),
        limit=limit,
        cursor=cursor,
        size_of=lambda entry: max(len(_health_line(entry)), len(entry.model_dump_json())),
        max_tokens=app.policy.max_response_tokens,
    )
    report = HealthReport(deployments=page.items, total=page.total, next_cursor=page.next_cursor)
    if page.total == 0:
        return structured("No deployments.", report)
    text = page_text(
        page,
        noun="deployments",
        lines=[_health_line(entry) for entry in page.items],
        max_tokens=app.policy.max_response_tokens,
        narrowing="pass deployment_id",
    )
    return structured(text, report)


def _group_health(rows: list[dict[str, str]], only: str | None) -> list[DeploymentHealth]:
    by_deployment: dict[str, DeploymentHealth] = {}
    for row in rows:
        deployment_id = row.get("deployment_id", "")
        if only is not None and deployment_id.lower() != only:
            continue
        entry = by_deployment.get(deployment_id)
        if entry is None:
            entry = DeploymentHealth(
                deployment_id=deployment_id,
                model_name=row.get("model_name"),
                status=row.get("deployment_status") or row.get("status"),
                instances=[],
            )
            by_deployment[deployment_id] = entry
        if row.get("instance_id"):
            entry.instances.append(
                InstanceHealth(
                    instance_id=row["instance_id"],
                    status=row.get("instance_status"),
                    health=row.get("health", "unknown"),
                    detail=row.get("detail"),
                )
            )
    return list(by_deployment.values())


def _instance_line(view: InstanceView) -> str:
    where = f"{view.host}:{view.port}" if view.port is not None else (view.host or "no address yet")
    pid = f", pid {view.pid}" if view.pid is not None else ""
    return f"{view.id} of deployment {view.deployment_id}: {view.status} at {where}{pid}"


def _health_line(entry: DeploymentHealth) -> str:
    healthy = sum(1 for instance in entry.instances if instance.health == "healthy")
    return (
        f"{entry.deployment_id} {entry.model_name or ''} {entry.status}: "
        f"{healthy}/{len(entry.instances)} replicas healthy"
    )


TOOLS = (list_model_instances, get_model_instance, get_health)
