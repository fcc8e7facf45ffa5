"""Tools for the Ray cluster the platform schedules deployments on."""

from __future__ import annotations

from typing import Annotated, Any

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ._common import ToolContext, app_of, structured, tool

__all__ = ["TOOLS"]


class RayStartResult(BaseModel):
    """Result of starting or joining Ray, as the platform reported it."""

    status: str | None = Field(description="Ray status after the call, such as running")
    address: str | None = Field(description="address of the Ray cluster, when reported")
    details: dict[str, Any] = Field(description="the platform's whole response body")


class RayNodeView(BaseModel):
    """One node of the Ray cluster."""

    node_id: str = Field(description="Ray node id")
    alive: bool = Field(description="whether Ray considers the node alive")
    host_name: str | None = Field(description="host name of the node")
    address: str | None = Field(description="IP address of the node")
    cpus: float = Field(description="CPUs Ray schedules on the node")
    gpus: float = Field(description="GPUs Ray schedules on the node")
    memory_bytes: int = Field(description="memory of the node in bytes")


class ClusterStatus(BaseModel):
    """Whether Ray runs, with its nodes and resources."""

    status: str = Field(description="running or not running")
    running: bool = Field(description="whether Ray is running")
    address: str | None = Field(description="address of the Ray cluster, when running")
    nodes: list[RayNodeView] = Field(description="nodes of the cluster")
    resources: dict[str, float] = Field(description="total resources, such as CPU, GPU and memory (bytes)")
    message: str | None = Field(description="the platform's note about the status")


@tool("Start Ray", read_only=False, destructive=False, idempotent=True)
async def start_ray(
    ctx: ToolContext,
    address: Annotated[
        str | None,
        Field(
            max_length=256,
            description="address of an existing Ray cluster to join; omit to start a local head",
        ),
    ] = None,
) -> Annotated[CallToolResult, RayStartResult]:
    """Start the Ray cluster the platform schedules deployments on, or join the one at `address`.

    When Ray already runs, nothing changes; get_status shows the cluster.
    """
    body = await app_of(ctx).client.start_ray(address)
    status = body.get("status")
    found_address = body.get("address")
    view = RayStartResult(
        status=str(status) if status is not None else None,
        address=str(found_address) if found_address is not None else None,
        details=body,
    )
    text = f"Ray is {view.status or 'started'}" + (f" at {view.address}" if view.address else "")
    return structured(text, view)


@tool("Get cluster status", read_only=True)
async def get_status(ctx: ToolContext) -> Annotated[CallToolResult, ClusterStatus]:
    """Report whether Ray is running, with its nodes, CPUs, GPUs and memory."""
    ray = await app_of(ctx).client.get_status()
    view = ClusterStatus(
        status=ray.status,
        running=ray.status.strip().lower() == "running",
        address=ray.address,
        nodes=[
            RayNodeView(
                node_id=node.node_id,
                alive=node.alive,
                host_name=node.host_name,
                address=node.address,
                cpus=node.cpus,
                gpus=node.gpus,
                memory_bytes=node.memory_bytes,
            )
            for node in ray.nodes
        ],
        resources=ray.resources,
        message=ray.message,
    )
    text = f"Ray is {view.status}; {len(view.nodes)} node(s)"
    if view.resources:
        text += "; resources " + ", ".join(
            _resource_text(key, value) for key, value in sorted(view.resources.items())
        )
    if view.message:
        text += f". {view.message}"
    return structured(text, view)


def _resource_text(key: str, value: float) -> str:
    if "memory" in key.lower():
        return f"{key}={value / 2**30:.1f} GiB"
    return f"{key}={value:g}"


TOOLS = (start_ray, get_status)
