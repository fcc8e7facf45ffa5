"""portable_schema: inlined references, typed properties, closed inputs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from kamiwaza_mcp.tools._schema import SchemaError, portable_schema


class Message(BaseModel):
    role: str
    content: str


class Arguments(BaseModel):
    name: str = Field(description="a name")
    messages: list[Message] | None = None
    limit: int | None = Field(default=None, ge=1)


class Node(BaseModel):
    children: list[Node] = []


def test_input_schema_is_inlined_and_closed() -> None:
    schema = portable_schema(Arguments.model_json_schema(), for_input=True)

    assert schema == {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "description": "a name"},
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                },
            },
            "limit": {"type": "integer", "minimum": 1},
        },
    }


def test_output_schema_keeps_null() -> None:
    schema = portable_schema(Arguments.model_json_schema(), for_input=False)

    assert "additionalProperties" not in schema
    assert schema["properties"]["limit"] == {"type": ["integer", "null"], "minimum": 1, "default": None}
    assert schema["properties"]["messages"]["type"] == ["array", "null"]
    assert schema["properties"]["messages"]["items"]["properties"]["role"] == {"type": "string"}


def test_property_named_title_is_kept() -> None:
    class Titled(BaseModel):
        title: str

    schema = portable_schema(Titled.model_json_schema(), for_input=True)

    assert schema["properties"] == {"title": {"type": "string"}}


def test_recursive_model_is_rejected() -> None:
    with pytest.raises(SchemaError, match="recursive definition 'Node'"):
        portable_schema(Node.model_json_schema(), for_input=True)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "properties": {"x": {}}}, "property /x has no type"),
        ({"type": "object", "properties": {"x": {"type": "array"}}}, "array at /x has no items"),
        ({"type": "object", "properties": {"x": {"$ref": "#/components/X"}}}, "only local \\$defs"),
    ],
)
def test_unportable_schema_is_rejected(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        portable_schema(schema, for_input=True)
