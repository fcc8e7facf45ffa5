"""Every tool called with arguments generated from its published input schema, valid and invalid.

Each call must return a result within CALL_TIMEOUT seconds and never raise. A
failed call must be an error result whose text names the failure, and an
argument object that breaks the schema must fail. Valid calls reach the
platform: a few of them name the seeded deployments, so routes respond with
real bodies, and the rest name ids that do not exist. After each tool's run the
server still serves a normal call, the seeded deployments are as they were,
and nothing the run returned or logged contains the configured API key.

Not fuzzed with valid arguments, with the reason:
- start_ray: a valid call starts a Ray head node, or joins the cluster at the
  address given, which would aim connections at arbitrary hosts.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import (
    SEEDED,
    Connection,
    HostedPlatform,
    profile,
    secret_hits,
    text_of,
)
from schema_strategies import invalid_arguments, json_value_of, valid_arguments

pytest_plugins = ["reliability_fixtures"]
pytestmark = pytest.mark.reliability

VALID_AND_INVALID = "valid and invalid"
INVALID_ONLY = "invalid only"
# How each tool is fuzzed. A tool missing here fails test_every_tool_has_a_fuzz_policy.
FUZZ_POLICIES = {
    "start_ray": INVALID_ONLY,
    "get_status": VALID_AND_INVALID,
    "list_models": VALID_AND_INVALID,
    "estimate_model_vram": VALID_AND_INVALID,
    "deploy_model": VALID_AND_INVALID,
    "list_deployments": VALID_AND_INVALID,
    "get_deployment": VALID_AND_INVALID,
    "get_deployment_status": VALID_AND_INVALID,
    "stop_deployment": VALID_AND_INVALID,
    "list_model_instances": VALID_AND_INVALID,
    "get_model_instance": VALID_AND_INVALID,
    "get_health": VALID_AND_INVALID,
    "get_deployment_logs": VALID_AND_INVALID,
    "unload_model": VALID_AND_INVALID,
    "load_model": VALID_AND_INVALID,
    "simple_generate": VALID_AND_INVALID,
    "generate": VALID_AND_INVALID,
}
# Seeded deployments a valid call may name, by tool. load_model gets only the STOPPED one,
# which it rejects at once: loading the others would start a launch of a model that does not exist.
KNOWN_DEPLOYMENTS = {"load_model": (SEEDED.stopped,)}
# Texts of error results for arguments rejected before the tool's code ran: the SDK's
# validation error, and the tools' rejection of undeclared arguments.
VALIDATION_FAILURE = "validation error for"
UNDECLARED_ARGUMENT = "does not accept the argument"


def tool_schemas(connection: Connection) -> dict[str, dict[str, Any]]:
    listing = connection.portal.call(connection.client.list_tools)
    return {tool.name: tool.input_schema for tool in listing.tools}


def with_known_ids(tool: str, arguments: dict[str, Any], choice: int) -> dict[str, Any]:
    """Name a seeded deployment or instance in place of a generated id."""
    known = dict(arguments)
    candidates = KNOWN_DEPLOYMENTS.get(tool, SEEDED.deployment_ids)
    if "deployment_id" in known:
        known["deployment_id"] = candidates[choice % len(candidates)]
    if "instance_id" in known:
        known["instance_id"] = SEEDED.unloaded_instance
    return known


def pre_parsed_strings(arguments: dict[str, Any]) -> list[str]:
    """Return the names of string arguments that hold JSON null, an array or an object.

    The SDK parses such strings before validation when the argument is optional
    (see test_json_looking_strings_stay_strings), so a valid call with one may fail validation.
    """
    names = []
    for name, value in arguments.items():
        if isinstance(value, str) and not isinstance(json_value_of(value), str | int | float):
            names.append(name)
    return names


def check_result(tool: str, arguments: dict[str, Any], result: Any, *, must_fail: str | None) -> None:
    text = text_of(result)
    arguments_text = json.dumps(arguments, default=repr)[:300]
    if result.is_error:
        assert text.strip(), f"{tool} returned an error result without a message for {arguments_text}"
        assert "Traceback (most recent call last)" not in text, f"{tool} leaked a traceback: {text[:500]}"
        assert not text.startswith("InternalError"), (
            f"{tool} failed unexpectedly for {arguments_text}: {text[:500]}"
        )
    if must_fail is not None:
        assert result.is_error, (
            f"{tool} accepted invalid arguments ({must_fail}): {arguments_text} -> {text[:300]}"
        )


def assert_server_answers(connection: Connection) -> None:
    """A normal call succeeds, and the seeded deployments keep their statuses."""
    result = connection.call("list_deployments", {})
    assert result.is_error is False, text_of(result)
    listed = {view["id"]: view["status"] for view in result.structured_content["deployments"]}
    assert listed == SEEDED.statuses


def test_every_tool_has_a_fuzz_policy(fuzz_connection: Connection) -> None:
    listed = set(tool_schemas(fuzz_connection))

    assert listed - set(FUZZ_POLICIES) == set(), "add the new tools to FUZZ_POLICIES"
    assert set(FUZZ_POLICIES) - listed == set(), (
        "remove the tools the server no longer lists from FUZZ_POLICIES"
    )


@pytest.mark.parametrize("tool", sorted(FUZZ_POLICIES))
def test_tool_fuzz(
    tool: str,
    fuzz_connection: Connection,
    fuzz_platform: HostedPlatform,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    connection = fuzz_connection
    schema = tool_schemas(connection)[tool]
    examples = profile().fuzz_examples_per_tool
    calls: list[str] = []
    passed_validation = 0

    invalid = invalid_arguments(schema).map(lambda pair: (pair[0], pair[1], 0))
    if FUZZ_POLICIES[tool] == VALID_AND_INVALID:
        # A third of the valid calls name a seeded deployment, the rest generated ids.
        valid = st.tuples(valid_arguments(schema), st.none(), st.integers(min_value=0, max_value=5))
        cases = st.one_of(valid, invalid)
    else:
        cases = invalid

    @given(case=cases)
    @settings(
        max_examples=examples,
        deadline=None,
        # No example database is written; a failure prints the blob that reproduces it.
        database=None,
        print_blob=True,
        derandomize=profile().derandomize,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    def run(case: tuple[dict[str, Any], str | None, int]) -> None:
        nonlocal passed_validation
        arguments, violation, choice = case
        if violation is None and choice < 2:
            arguments = with_known_ids(tool, arguments, choice)
        result = connection.call(tool, arguments)
        calls.append(tool)
        check_result(tool, arguments, result, must_fail=violation)
        text = text_of(result)
        if violation is None and not pre_parsed_strings(arguments):
            assert VALIDATION_FAILURE not in text, (
                f"{tool} rejected valid arguments {arguments!r}: {text[:300]}"
            )
        if VALIDATION_FAILURE not in text and UNDECLARED_ARGUMENT not in text:
            passed_validation += 1

    run()

    assert len(calls) >= examples, f"only {len(calls)} calls reached {tool}"
    if FUZZ_POLICIES[tool] == VALID_AND_INVALID:
        assert passed_validation > 0, f"every call of {tool} was rejected before the tool ran"
    assert_server_answers(connection)
    out, err = capfd.readouterr()
    logged = [record.getMessage() for record in caplog.records]
    hits = secret_hits([*connection.transcript, *logged, out, err])
    assert hits == [], f"the API key appeared in the output: {hits[:3]}"
    if connection.name == "remote":
        # The bearer check responds with 401 to a request without the key, so every call above would have failed.
        assert fuzz_platform.guard.requests, "no request reached the platform"


@pytest.mark.xfail(
    strict=True,
    reason="the MCP SDK parses JSON in string arguments annotated `str | None` before validation",
)
@pytest.mark.parametrize("text", ["null", "[1, 2]", '{"a": 1}'])
def test_json_looking_strings_stay_strings(fuzz_connection: Connection, text: str) -> None:
    # NOTE: fails today. FuncMetadata.pre_parse_json in mcp 2.3 replaces a string that
    # parses as JSON null, an array or an object whenever the parameter's
    # annotation is not exactly `str`, which every optional string of these tools is. So
    # generate(prompt="null") reads as no prompt, and list_deployments(model="null") as no filter.
    result = fuzz_connection.call("generate", {"deployment_id": SEEDED.unloaded, "prompt": text})
    assert "is UNLOADED, not DEPLOYED" in text_of(result)
