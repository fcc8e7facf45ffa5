"""Rewrite pydantic's JSON schemas into the plain form every MCP host accepts.

Some hosts reject `$ref`/`$defs`, a property without `type`, or an array
without `items`. `portable_schema` inlines every local reference, rewrites
optional values (`anyOf: [X, {"type": "null"}]`) to a single typed schema,
drops the `title` keys pydantic adds, and then checks the result, so a schema
a host could reject fails at registration instead.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["SchemaError", "portable_schema"]

_DEFS_PREFIX = "#/$defs/"


class SchemaError(ValueError):
    """A tool schema cannot be made portable."""


def portable_schema(
    schema: dict[str, Any], *, for_input: bool, keep_descriptions: bool = True
) -> dict[str, Any]:
    """Return a copy of `schema` with local references inlined and optional values simplified.

    For an input schema (`for_input=True`) an optional argument becomes its
    non-null schema, since leaving it out of `required` already lets callers
    omit it, and the top level gets `additionalProperties: false` because the
    tools reject undeclared arguments. In an output schema an optional field
    stays nullable, as `type: [X, "null"]`, because results carry the null.
    Without `keep_descriptions`, every `description` keyword is dropped, and
    so are `additionalProperties: true` and `default: null`.
    """
    definitions = schema.get("$defs", {})
    result: dict[str, Any] = _rewrite(copy.deepcopy(schema), definitions, seen=(), nullable=not for_input)
    if not keep_descriptions:
        result = _without_descriptions(result)
    result.pop("$defs", None)
    if for_input:
        result["additionalProperties"] = False
    _check(result, where="")
    return result


def _rewrite(node: Any, definitions: dict[str, Any], seen: tuple[str, ...], nullable: bool) -> Any:
    if isinstance(node, list):
        return [_rewrite(item, definitions, seen, nullable) for item in node]
    if not isinstance(node, dict):
        return node

    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix(_DEFS_PREFIX)
        if not ref.startswith(_DEFS_PREFIX) or name not in definitions:
            raise SchemaError(
                f"cannot inline the reference {ref!r}: only local $defs references can be inlined"
            )
        if name in seen:
            raise SchemaError(f"cannot inline the recursive definition {name!r}")
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        node = {**copy.deepcopy(definitions[name]), **siblings}
        seen = (*seen, name)

    rewritten: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs"):
            rewritten[key] = {name: _rewrite(sub, definitions, seen, nullable) for name, sub in value.items()}
        else:
            rewritten[key] = _rewrite(value, definitions, seen, nullable)
    return _collapse_optional(rewritten, nullable)


def _without_descriptions(node: Any) -> Any:
    """Drop `description` keywords, and the keywords that only restate JSON Schema's defaults.

    Those are `additionalProperties: true` and `default: null`, which
    pydantic adds and which tell nothing about a result.
    """
    if isinstance(node, list):
        return [_without_descriptions(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            continue
        if (key, value) in (("additionalProperties", True), ("default", None)):
            continue
        if key == "properties":
            # Here the keys are property names, so a property named "description" stays.
            kept[key] = {name: _without_descriptions(sub) for name, sub in value.items()}
        else:
            kept[key] = _without_descriptions(value)
    return kept


def _collapse_optional(node: dict[str, Any], nullable: bool) -> dict[str, Any]:
    """Turn `{anyOf: [X, {type: null}], ...}` into X merged with the node's other keys.

    With `nullable`, X's type becomes `[type, "null"]`; without it a null
    default is dropped, since the value is then only ever omitted.
    """
    options = node.get("anyOf")
    if not isinstance(options, list) or len(options) != 2:
        return node
    non_null = [option for option in options if option != {"type": "null"}]
    if len(non_null) != 1 or not isinstance(non_null[0].get("type"), str):
        return node
    merged = {**non_null[0], **{key: value for key, value in node.items() if key != "anyOf"}}
    if nullable:
        merged["type"] = [non_null[0]["type"], "null"]
    elif merged.get("default", ...) is None:
        del merged["default"]
    return merged


def _check(node: dict[str, Any], where: str) -> None:
    if "$ref" in node or "$defs" in node:
        raise SchemaError(f"schema at {where or '/'} still has a reference")
    if node.get("type") == "array" and "items" not in node:
        raise SchemaError(f"array at {where or '/'} has no items schema")
    for name, sub in node.get("properties", {}).items():
        path = f"{where}/{name}"
        if "type" not in sub:
            raise SchemaError(f"property {path} has no type")
        _check(sub, path)
    items = node.get("items")
    if isinstance(items, dict):
        _check(items, f"{where}[]")
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        _check(additional, f"{where}{{}}")
    for option in node.get("anyOf", []):
        _check(option, where)
