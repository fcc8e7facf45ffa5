"""The MCP tools, one module per group, and their registration.

Every tool is a short adapter over `KamiwazaClient`: resolve the arguments,
make one or two client calls, return a text summary with a structured view.
"""

from __future__ import annotations

from mcp.server.mcpserver.tools import Tool

from . import cluster, deployments, generation, instances, lifecycle, logs, models
from ._common import ToolSpec
from ._schema import portable_schema

__all__ = ["TOOL_NAMES", "TOOL_SPECS", "build_tools"]

TOOL_SPECS: tuple[ToolSpec, ...] = (
    *cluster.TOOLS,
    *models.TOOLS,
    *deployments.TOOLS,
    *instances.TOOLS,
    *logs.TOOLS,
    *lifecycle.TOOLS,
    *generation.TOOLS,
)


TOOL_NAMES: tuple[str, ...] = tuple(spec.name for spec in TOOL_SPECS)


def build_tools() -> list[Tool]:
    """Build the registration of every tool, with portable, closed input schemas.

    The schemas are rewritten here, after the SDK derived them from the
    signatures, because pydantic emits `$defs` for nested models and leaves the
    arguments object open. Output schemas keep their types but lose their
    field descriptions: they would more than double the size of tools/list,
    which hosts put into the model's context, and each tool's description
    already tells what it returns. `MCPServer(tools=...)` takes the result.
    """
    tools = []
    for spec in TOOL_SPECS:
        tool = Tool.from_function(
            spec.fn,
            name=spec.name,
            title=spec.title,
            description=spec.description,
            annotations=spec.annotations,
            structured_output=True,
        )
        tool.parameters = portable_schema(tool.parameters, for_input=True)
        output = tool.fn_metadata.output_schema
        if output is not None:
            tool.fn_metadata.output_schema = portable_schema(output, for_input=False, keep_descriptions=False)
        tools.append(tool)
    return tools
