"""Hypothesis strategies for tool arguments, generated from a tool's published JSON input schema.

`valid_arguments` draws objects that the schema accepts. `invalid_arguments`
draws a valid object with one violation, and names it: an undeclared argument,
a missing required one, or one value of the wrong type, out of bounds, too
long or short, or outside its enum.

Violations are chosen so that pydantic's lax validation, which the server
applies, still rejects them. So values that lax mode converts are left out: a
numeric string, a boolean or an integral float for an integer, and a string
such as "yes" for a boolean. Null is left out for an argument that may be
omitted, because the server reads it as omitted.

Only the keywords the tools use are supported; any other validation keyword
raises UnsupportedSchemaError, so a schema change cannot go unfuzzed silently.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import strategies as st

__all__ = ["UnsupportedSchemaError", "invalid_arguments", "json_value_of", "valid_arguments", "valid_value"]

# Keywords that describe a value without constraining it.
_ANNOTATION_KEYWORDS = frozenset({"description", "title", "default", "examples"})
_VALIDATION_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "items",
        "minItems",
        "maxItems",
        "properties",
        "required",
        "additionalProperties",
    }
)
# Maximum length of a string or list drawn at random. The maximum length allowed is drawn as a boundary case.
_MAX_DRAWN_LENGTH = 80
_MAX_DRAWN_ITEMS = 4
# Unicode without surrogates, which cannot be encoded in a JSON-RPC message.
_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=_MAX_DRAWN_LENGTH)
# Strings a caller may send by mistake or on purpose: ids in other spellings, paths, markup, controls.
_EDGE_STRINGS = (
    "5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f",
    "5F3C2A8E-0C1D-4B7A-9E2F-1A2B3C4D5E6F",
    " 5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f ",
    "{5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f}",
    "urn:uuid:5f3c2a8e-0c1d-4b7a-9e2f-1a2b3c4d5e6f",
    "00000000-0000-0000-0000-000000000000",
    "../../../../etc/passwd",
    "..%2f..%2fapi%2fserving%2fdeployments",
    "a/b?c=d#e",
    "Qwen/Qwen3-4B",
    "'; DROP TABLE deployments; --",
    "<script>alert(1)</script>",
    "\x00",
    "\u202e\u200b",
    "tiny-llama",
    "127.0.0.1:6379",
)


class UnsupportedSchemaError(ValueError):
    """A schema uses a keyword or type these strategies do not generate values for."""


def valid_arguments(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Draw argument objects that `schema` (an object schema) accepts."""
    _check_keywords(schema, "/")
    if schema.get("type") != "object":
        raise UnsupportedSchemaError(f"tool input schema must be an object, got type {schema.get('type')!r}")
    return _object(schema, "/")


def invalid_arguments(schema: dict[str, Any]) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """Draw (arguments, violation) pairs: a valid object broken in exactly one way, and how."""
    properties: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.get("required", [])
    options: list[st.SearchStrategy[tuple[dict[str, Any], str]]] = [_with_unknown_argument(schema)]
    options += [_without(schema, name) for name in required]
    options += [_with_invalid_value(schema, name) for name in properties]
    return st.one_of(options)


def valid_value(schema: dict[str, Any], where: str = "") -> st.SearchStrategy[Any]:
    """Draw one value that `schema` accepts."""
    _check_keywords(schema, where)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return _integer(schema)
    if kind == "number":
        return _number(schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return _array(schema, where)
    if kind == "object":
        return _object(schema, where)
    raise UnsupportedSchemaError(f"no strategy for type {kind!r} at {where or '/'}")


def _check_keywords(schema: dict[str, Any], where: str) -> None:
    unknown = set(schema) - _VALIDATION_KEYWORDS - _ANNOTATION_KEYWORDS
    if unknown:
        raise UnsupportedSchemaError(
            f"schema at {where or '/'} uses {sorted(unknown)}; teach tests/reliability/schema_strategies.py "
            "to generate values for them"
        )
    if isinstance(schema.get("type"), list):
        raise UnsupportedSchemaError(
            f"schema at {where or '/'} has a list of types {schema['type']}; teach "
            "tests/reliability/schema_strategies.py to generate values for each of them"
        )


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    drawn_high = _MAX_DRAWN_LENGTH if high is None else min(high, _MAX_DRAWN_LENGTH)
    text = st.text(
        alphabet=st.characters(exclude_categories=("Cs",)), min_size=low, max_size=max(low, drawn_high)
    )
    edges = st.sampled_from([s for s in _EDGE_STRINGS if _fits_length(s, low, high)] or ["x" * max(low, 1)])
    longest = st.just("x" * max(low, 1) if high is None else "é" * high)

    # Mostly generated text, one draw in six an edge string and one in six the longest allowed string.
    def pick(kind: int) -> st.SearchStrategy[str]:
        if kind == 0:
            return longest
        if kind == 1:
            return edges
        return text

    return st.integers(min_value=0, max_value=5).flatmap(pick)


def _fits_length(value: str, low: int, high: int | None) -> bool:
    return len(value) >= low and (high is None or len(value) <= high)


def _integer(schema: dict[str, Any]) -> st.SearchStrategy[int]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + 1
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - 1
    bounds = [bound for bound in (low, high) if bound is not None]
    return st.one_of(st.integers(min_value=low, max_value=high), st.sampled_from(bounds or [0]))


def _number(schema: dict[str, Any]) -> st.SearchStrategy[float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    floats = st.floats(
        min_value=low,
        max_value=high,
        exclude_min="exclusiveMinimum" in schema,
        exclude_max="exclusiveMaximum" in schema,
        allow_nan=False,
        allow_infinity=False,
    )
    inclusive = [bound for key, bound in (("minimum", low), ("maximum", high)) if key in schema]
    return st.one_of(floats, st.sampled_from(inclusive)) if inclusive else floats


def _array(schema: dict[str, Any], where: str) -> st.SearchStrategy[list[Any]]:
    if "items" not in schema:
        raise UnsupportedSchemaError(f"array at {where or '/'} has no items schema")
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")
    drawn_high = max(low, _MAX_DRAWN_ITEMS if high is None else min(high, _MAX_DRAWN_ITEMS))
    return st.lists(valid_value(schema["items"], f"{where}[]"), min_size=low, max_size=drawn_high)


def _object(schema: dict[str, Any], where: str) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    unknown_required = required - set(properties)
    if unknown_required:
        raise UnsupportedSchemaError(
            f"object at {where or '/'} requires undeclared {sorted(unknown_required)}"
        )
    values = {name: valid_value(sub, f"{where}/{name}") for name, sub in properties.items()}
    return st.fixed_dictionaries(
        {name: values[name] for name in properties if name in required},
        optional={name: values[name] for name in properties if name not in required},
    )


def _with_unknown_argument(schema: dict[str, Any]) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    declared = set(schema.get("properties", {}))
    names = st.one_of(
        st.sampled_from(["confirm", "force", "dry_run", "api_key", "id", "deploymentId", "__proto__"]),
        st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=20),
    ).filter(lambda name: name not in declared)
    extra_values = st.one_of(st.booleans(), st.integers(), _TEXT, st.none())

    @st.composite
    def build(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
        arguments = draw(_object(schema, "/"))
        name = draw(names)
        arguments[name] = draw(extra_values)
        return arguments, f"undeclared argument {name!r}"

    return build()


def _without(schema: dict[str, Any], name: str) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    def drop(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
        arguments.pop(name, None)
        return arguments, f"missing required argument {name!r}"

    return _object(schema, "/").map(drop)


def _with_invalid_value(schema: dict[str, Any], name: str) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    sub = schema["properties"][name]
    required = name in schema.get("required", [])

    @st.composite
    def build(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
        arguments = draw(_object(schema, "/"))
        value, violation = draw(_invalid_value(sub, nullable=not required))
        arguments[name] = value
        return arguments, f"{name}: {violation}"

    return build()


def _invalid_value(schema: dict[str, Any], *, nullable: bool) -> st.SearchStrategy[tuple[Any, str]]:
    """Draw (value, why) pairs that violate `schema` in a way lax validation also rejects."""
    kind = schema.get("type")
    options: list[st.SearchStrategy[tuple[Any, str]]] = []
    if not nullable:
        options.append(st.just((None, "null")))
    # An empty list can be a valid array and a dict a valid object, so each gets only the other.
    if kind != "array":
        options.append(
            st.lists(st.integers(), max_size=3).map(lambda value: (value, f"list instead of {kind}"))
        )
    if kind != "object":
        options.append(
            st.dictionaries(_TEXT, st.integers(), max_size=2).map(
                lambda value: (value, f"dict instead of {kind}")
            )
        )

    if "enum" in schema:
        options.append(_TEXT.filter(lambda s: s not in schema["enum"]).map(lambda s: (s, "outside the enum")))
    if kind == "string":
        options += _invalid_strings(schema)
    elif kind in ("integer", "number"):
        options += _invalid_numbers(schema, integer=kind == "integer")
    elif kind == "boolean":
        options.append(
            st.sampled_from(["maybe", "enabled", "2"]).map(lambda s: (s, "a word that is no boolean"))
        )
        options.append(st.integers(min_value=2).map(lambda n: (n, "an integer other than 0 or 1")))
    elif kind == "array":
        options += _invalid_arrays(schema)
    elif kind == "object":
        options.append(st.integers().map(lambda n: (n, "integer instead of object")))
        if schema.get("required"):
            options.append(st.just(({}, "an object without its required keys")))
    return st.one_of(options)


def _invalid_strings(schema: dict[str, Any]) -> list[st.SearchStrategy[tuple[Any, str]]]:
    options: list[st.SearchStrategy[tuple[Any, str]]] = [
        st.integers().map(lambda n: (n, "integer instead of string")),
        st.booleans().map(lambda b: (b, "boolean instead of string")),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda x: (x, "number instead of string")),
    ]
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    if low > 0:
        options.append(st.just(("x" * (low - 1), f"shorter than {low}")))
    if high is not None:
        options.append(st.just(("y" * (high + 1), f"longer than {high}")))
    return options


def _invalid_numbers(schema: dict[str, Any], *, integer: bool) -> list[st.SearchStrategy[tuple[Any, str]]]:
    kind = "integer" if integer else "number"
    options: list[st.SearchStrategy[tuple[Any, str]]] = [
        st.sampled_from(["abc", "one", "", "1 2", "0x"]).map(lambda s: (s, f"non-numeric string for {kind}")),
    ]
    if integer:
        fractions = st.integers(min_value=-1000, max_value=1000).map(lambda n: n + 0.5)
        options.append(fractions.map(lambda x: (x, "float with a fraction for integer")))
    step = 1 if integer else 0.5
    if "minimum" in schema:
        options.append(st.just((schema["minimum"] - step, f"below the minimum {schema['minimum']}")))
    if "maximum" in schema:
        options.append(st.just((schema["maximum"] + step, f"above the maximum {schema['maximum']}")))
    if "exclusiveMinimum" in schema:
        options.append(st.just((schema["exclusiveMinimum"], "equal to the exclusive minimum")))
    if "exclusiveMaximum" in schema:
        options.append(st.just((schema["exclusiveMaximum"], "equal to the exclusive maximum")))
    return options


def _invalid_arrays(schema: dict[str, Any]) -> list[st.SearchStrategy[tuple[Any, str]]]:
    item = schema["items"]
    options: list[st.SearchStrategy[tuple[Any, str]]] = [
        st.integers().map(lambda n: (n, "integer instead of array")),
        st.just(("not json [", "a string that is no array")),
    ]
    if schema.get("minItems", 0) > 0:
        options.append(st.just(([], f"fewer than {schema['minItems']} items")))
    if "maxItems" in schema:
        too_many = schema["maxItems"] + 1
        options.append(
            st.lists(valid_value(item), min_size=too_many, max_size=too_many).map(
                lambda items: (items, f"more than {schema['maxItems']} items")
            )
        )

    @st.composite
    def bad_item(draw: st.DrawFn) -> tuple[Any, str]:
        value, violation = draw(_invalid_value(item, nullable=False))
        return [value], f"an item that is invalid ({violation})"

    options.append(bad_item())
    return options


def json_value_of(text: str) -> Any:
    """Return what the SDK's argument pre-parsing turns `text` into: its JSON value, or `text` itself."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text
