"""Tools for the replicas (model instances) of deployments and their health."""

from __future__ import annotations

from typing import Annotated

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ._common import ToolContext, app_of, canonical_uuid, structured, tool
from ._views import InstanceView, instance_view

__all__ = ["TOOLS"]


class InstanceList(BaseModel):
    """Replicas of deployments."""

    instances: list[InstanceView] = Field(description="instances, in the platform's order")


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
    """Health of deployments."""

    deployments: list[DeploymentHealth] = Field(description="one entry per deployment")


OptionalDeploymentId = Annotated[
    str | None,
    Field(min_length=1, max_length=64, description="deployment UUID to filter by; omit for all deployments"),
]


@tool("List model instances", read_only=True)
async def list_model_instances(
    ctx: ToolContext, deployment_id: OptionalDeploymentId = None
) -> Annotated[CallToolResult, InstanceList]:
    """List replicas with their status, host, port and process id, optionally of one deployment."""
    target = (
        None if deployment_id is None else canonical_uuid(deployment_id, "deployment", "list_deployments")
    )
    instances = await app_of(ctx).client.list_model_instances(target)
    view = InstanceList(instances=[instance_view(instance) for instance in instances])
    if not view.instances:
        return structured("No model instances.", view)
    lines = [f"{len(view.instances)} instance(s):"] + [f"- {_instance_line(i)}" for i in view.instances]
    return structured("\n".join(lines), view)


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
    ctx: ToolContext, deployment_id: OptionalDeploymentId = None
) -> Annotated[CallToolResult, HealthReport]:
    """Report the health of each deployment and of each of its replicas, or of one deployment."""
    client = app_of(ctx).client
    target = (
        None if deployment_id is None else canonical_uuid(deployment_id, "deployment", "list_deployments")
    )
    rows = await client.get_health()
    report = _group_health(rows, only=target)
    if target is not None and not report.deployments:
        # The platform lists no row for this id: get_deployment raises NotFoundError
        # for an unknown id, and otherwise the deployment has no replica to report.
        deployment = await client.get_deployment(target)
        report.deployments.append(
            DeploymentHealth(
                deployment_id=target, model_name=deployment.m_name, status=deployment.status, instances=[]
            )
        )
    if not report.deployments:
        return structured("No deployments.", report)
    return structured("\n".join(_health_line(d) for d in report.deployments), report)


def _group_health(rows: list[dict[str, str]], only: str | None) -> HealthReport:
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
    return HealthReport(deployments=list(by_deployment.values()))


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
