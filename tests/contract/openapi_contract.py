"""The Kamiwaza REST API 1.2.0 OpenAPI document as validators for requests and responses.

Every schema comes from the document itself: a validator is a `$ref` into the
document, resolved through a `referencing` registry, so nested `#/components/...`
references resolve against the whole document. Validation uses JSON Schema Draft
2020-12 (the dialect of OpenAPI 3.1) with format checks, so `uuid` and `date-time`
values are checked too.

The published schemas leave `additionalProperties` open, so a misspelled or renamed
field would pass them. `closed_document` returns a copy in which every object
schema that lists `properties` and does not set `additionalProperties` rejects
other keys. The contract tests validate against that copy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jsonschema
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "API_PREFIX",
    "OpenAPISpec",
    "Operation",
    "closed_document",
    "load_spec",
    "spec_path",
]

API_PREFIX = "/api"
SPEC_FILE_NAME = "kamiwaza-openapi-1.2.0.json"
SPEC_ENV = "KAMIWAZA_OPENAPI_SPEC"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def spec_path() -> Path:
    """Return the path of the OpenAPI document: `$KAMIWAZA_OPENAPI_SPEC`, else the reference copy beside the repo."""
    # The document is not part of the repository; without it the contract tests are skipped.
    override = os.environ.get(SPEC_ENV)
    if override:
        return Path(override)
    return _REPO_ROOT.parent / "shared" / "reference" / SPEC_FILE_NAME


@cache
def load_spec() -> OpenAPISpec:
    """Load the OpenAPI document once per process, closed as `closed_document` describes."""
    path = spec_path()
    if not path.is_file():
        pytest.skip(
            f"the Kamiwaza OpenAPI document is not at {path}; set {SPEC_ENV} to the path of {SPEC_FILE_NAME}",
            allow_module_level=True,
        )
    document = json.loads(path.read_text(encoding="utf-8"))
    return OpenAPISpec(closed_document(document))


def closed_document(document: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `document` whose object schemas with `properties` reject unlisted keys.

    Closing breaks an `allOf` of several object schemas; the 1.2.0 document has none.
    """
    closed = copy.deepcopy(document)
    for schema in closed["components"]["schemas"].values():
        _close_objects(schema)
    for _, _, operation in _iter_operations(closed):
        for response in operation.get("responses", {}).values():
            for media in response.get("content", {}).values():
                _close_objects(media.get("schema", {}))
        for media in operation.get("requestBody", {}).get("content", {}).values():
            _close_objects(media.get("schema", {}))
    return closed


def _close_objects(schema: Any) -> None:
    if isinstance(schema, list):
        for item in schema:
            _close_objects(item)
        return
    if not isinstance(schema, dict):
        return
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    for key, value in schema.items():
        # Property names are data, not schemas, but their values are schemas.
        if key == "properties" and isinstance(value, dict):
            for subschema in value.values():
                _close_objects(subschema)
        elif isinstance(value, dict | list):
            _close_objects(value)


def _iter_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for template, item in document["paths"].items():
        for method in _HTTP_METHODS:
            if method in item:
                yield method.upper(), template, item[method]


def _pointer(*parts: str) -> str:
    """Build a JSON pointer, escaping `~` and `/` in each part as RFC 6901 requires."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass(frozen=True)
class Operation:
    """One operation of the document: its method, path template (without `/api`) and JSON pointer."""

    method: str
    template: str
    pointer: str
    definition: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"


class OpenAPISpec:
    """Validators for the operations of one OpenAPI 3.1 document."""

    _URI = "urn:kamiwaza:openapi:1.2.0"

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource: Resource[Any] = DRAFT202012.create_resource(document)
        self._registry: Registry[Any] = Registry().with_resource(self._URI, resource)
        self._operations = {
            (method, template): Operation(method, template, _pointer("paths", template, method.lower()), op)
            for method, template, op in _iter_operations(document)
        }
        self._patterns = [
            (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"), template)
            for template in document["paths"]
        ]

    def operations(self, prefix: str = "") -> list[Operation]:
        return [op for (_, template), op in sorted(self._operations.items()) if template.startswith(prefix)]

    def operation(self, method: str, template: str) -> Operation:
        try:
            return self._operations[(method.upper(), template)]
        except KeyError:
            raise KeyError(f"the spec has no operation {method.upper()} {template}") from None

    def match(self, method: str, url_path: str) -> tuple[Operation, dict[str, str]] | None:
        """Find the operation for a request path under `/api`; return it with its path parameters.

        Literal templates win over templated ones, as in the platform's router, so
        `/models/search/` is not read as `/models/{model_id}`.
        """
        if not url_path.startswith(API_PREFIX + "/"):
            return None
        path = url_path[len(API_PREFIX) :]
        candidates = [template for pattern, template in self._patterns if pattern.match(path)]
        candidates.sort(key=lambda template: template.count("{"))
        for template in candidates:
            operation = self._operations.get((method.upper(), template))
            if operation is not None:
                return operation, _path_values(template, path)
        return None

    def validator(self, pointer: str) -> Draft202012Validator:
        """Return a validator for the schema at `pointer` in the document."""
        return Draft202012Validator(
            {"$ref": f"{self._URI}#{pointer}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def errors(self, pointer: str, instance: Any) -> list[str]:
        """Return every validation error of `instance` against the schema at `pointer`, as text."""
        return [_describe(error) for error in self.validator(pointer).iter_errors(instance)]

    def response_pointer(self, operation: Operation, status: int) -> str | None:
        """Return the pointer of the JSON schema documented for `status`, or None when there is none."""
        responses = operation.definition.get("responses", {})
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        if key not in responses and "default" in responses:
            key = "default"
        if "application/json" not in responses.get(key, {}).get("content", {}):
            return None
        return operation.pointer + _pointer("responses", key, "content", "application/json", "schema")

    def request_body(self, operation: Operation) -> tuple[str, str] | None:
        """Return the media type of the operation's request body and the pointer of its schema."""
        content = operation.definition.get("requestBody", {}).get("content", {})
        if not content:
            return None
        if len(content) != 1:
            raise NotImplementedError(f"{operation.label}: more than one request media type")
        (media_type,) = content
        return media_type, operation.pointer + _pointer("requestBody", "content", media_type, "schema")

    def request_body_required(self, operation: Operation) -> bool:
        return bool(operation.definition.get("requestBody", {}).get("required", False))

    def parameters(self, operation: Operation, location: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """Map each parameter `in` `location` to its schema pointer and its definition."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for index, parameter in enumerate(operation.definition.get("parameters", [])):
            if "$ref" in parameter:
                raise NotImplementedError(f"{operation.label}: parameter $ref is not supported")
            if parameter["in"] == location:
                pointer = operation.pointer + _pointer("parameters", str(index), "schema")
                found[parameter["name"]] = (pointer, parameter)
        return found

    def request_errors(self, operation: Operation, request: httpx.Request) -> list[str]:
        """Check a request's path parameters, query parameters and body against `operation`."""
        path = request.url.path[len(API_PREFIX) :]
        errors = self._parameter_errors(operation, "path", _path_values(operation.template, path).items())
        errors += self._parameter_errors(operation, "query", request.url.params.multi_items())
        errors += self._body_errors(operation, request)
        return errors

    def _parameter_errors(
        self, operation: Operation, location: str, values: Iterable[tuple[str, str]]
    ) -> list[str]:
        declared = self.parameters(operation, location)
        errors: list[str] = []
        sent: list[str] = []
        for name, raw in values:
            sent.append(name)
            if name not in declared:
                errors.append(f"{location} parameter {name!r} is not declared by {operation.label}")
                continue
            pointer, _ = declared[name]
            if not any(self.validator(pointer).is_valid(value) for value in _wire_readings(raw)):
                errors.append(f"{location} parameter {name}={raw!r} does not fit its schema")
        if len(sent) != len(set(sent)):
            errors.append(f"{location} parameters repeat: {sent}")
        for name, (_, definition) in declared.items():
            if definition.get("required") and name not in sent:
                errors.append(f"required {location} parameter {name!r} is missing")
        return errors

    def _body_errors(self, operation: Operation, request: httpx.Request) -> list[str]:
        declared = self.request_body(operation)
        content = request.content
        if declared is None:
            return [f"{operation.label} takes no body, but {len(content)} bytes were sent"] if content else []
        if not content:
            return [f"{operation.label} requires a body"] if self.request_body_required(operation) else []

        media_type, pointer = declared
        sent_type = request.headers.get("content-type", "").split(";")[0].strip()
        if sent_type != media_type:
            return [f"body sent as {sent_type!r}; {operation.label} takes {media_type!r}"]
        if media_type == "application/json":
            body: Any = json.loads(content)
        elif media_type == "application/x-www-form-urlencoded":
            body = dict(parse_qsl(content.decode(), keep_blank_values=True))
        else:
            raise NotImplementedError(f"{operation.label}: request media type {media_type}")
        return [f"body {error}" for error in self.errors(pointer, body)]


def _wire_readings(raw: str) -> list[Any]:
    """Return the typed values a query or path string can stand for, as FastAPI reads them.

    Booleans are read only from `true` and `false`, the spelling this client sends,
    although the platform also accepts `1`, `yes` and `on`.
    """
    readings: list[Any] = [raw]
    if raw in ("true", "false"):
        readings.append(raw == "true")
    for number_type in (int, float):
        with contextlib.suppress(ValueError):
            readings.append(number_type(raw))
    return readings


def _path_values(template: str, path: str) -> dict[str, str]:
    names = re.findall(r"\{([^}]+)\}", template)
    pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$"
    match = re.match(pattern, path)
    assert match is not None, f"{path} does not match {template}"
    return dict(zip(names, match.groups(), strict=True))


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"
