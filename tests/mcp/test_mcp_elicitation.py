"""The person's confirmation of stop_deployment and unload_model through a form, in both protocol modes.

Responses that must act on nothing are tried on the session's shared deployment,
and each is followed by a check that it is still DEPLOYED. The accepted forms
act on a deployment of the test's own, which also shows the progress
notifications of deploy_model and load_model.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp_support import (
    DEPLOY_TIMEOUT,
    MODES,
    TINY_MODEL,
    Connection,
    FakeClock,
    FormResponses,
    ProgressLog,
    connect,
    text_of,
)
from mcp_types import ElicitResult, InputRequiredResult

from kamiwaza_mcp.policy import ConfirmationMode, Policy

pytest_plugins = ["mcp_fixtures"]
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

SLOW_WAIT = Policy(max_wait_seconds=DEPLOY_TIMEOUT)


def form_policy(**changes: Any) -> Policy:
    return SLOW_WAIT.model_copy(update=changes)


async def stop_shared(conn: Connection, deployment_id: str, **extra: Any) -> tuple[dict[str, Any], str]:
    """Call stop_deployment on the shared deployment, check it still runs, and return the result."""
    result = await conn.call("stop_deployment", {"deployment_id": deployment_id, **extra}, within=30)
    assert await conn.status_of(deployment_id) == "DEPLOYED"
    assert result.structured_content is not None, text_of(result)
    return result.structured_content, text_of(result)


# Responses that act on nothing


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("forms", "outcome", "text"),
    [
        (FormResponses("decline"), "declined", f"The person declined to stop {TINY_MODEL}; nothing was done"),
        (
            FormResponses("cancel"),
            "cancelled",
            "The person closed the form without responding; nothing was done",
        ),
        (
            FormResponses("accept", typed="tiny"),
            "not_matched",
            f"Not confirmed: the person typed 'tiny', which is neither the model name {TINY_MODEL} nor the "
            "deployment id; nothing was done",
        ),
    ],
    ids=["decline", "cancel", "mismatch"],
)
async def test_unconfirmed_form_acts_on_nothing(
    platform_url: str,
    shared_deployment: dict[str, Any],
    mode: str,
    forms: FormResponses,
    outcome: str,
    text: str,
) -> None:
    forms.forms.clear()
    shared = shared_deployment["id"]

    async with connect(platform_url, mode, policy=SLOW_WAIT, forms=forms) as conn:
        view, message = await stop_shared(conn, shared)

    assert view["outcome"] == outcome
    assert view["done"] is False
    assert view["confirmation_token"] is None
    assert view["deployment"]["id"] == shared
    assert message.startswith(text)
    [form] = forms.forms
    assert form.message.startswith(f"Stop {TINY_MODEL}? This would end every replica and free its memory")
    assert f"deployment {shared} {TINY_MODEL} DEPLOYED, 2/2 replicas up" in form.message
    assert form.message.endswith(f"Type the model name {TINY_MODEL} (or the deployment id) to confirm.")
    assert form.requested_schema["required"] == ["typed"]
    assert form.requested_schema["properties"]["typed"]["type"] == "string"
    assert form.requested_schema["properties"]["typed"]["title"] == "Model name or deployment id"


async def test_unanswered_form_times_out(platform_url: str, shared_deployment: dict[str, Any]) -> None:
    """On the 2025-11-25 protocol the server waits for the response, at most the policy's timeout."""
    forms = FormResponses(respond=False)
    policy = form_policy(elicitation_timeout_seconds=0.3)

    async with connect(platform_url, "legacy", policy=policy, forms=forms) as conn:
        with anyio.fail_after(10):
            view, message = await stop_shared(conn, shared_deployment["id"])

    assert view["outcome"] == "timed_out"
    assert view["done"] is False
    assert message.startswith("The form timed out after 0.3 s without a response; nothing was done")
    assert len(forms.forms) == 1


async def test_late_response_acts_on_nothing(platform_url: str, shared_deployment: dict[str, Any]) -> None:
    """On the 2026-07-28 protocol the call returns the form at once; a response after the timeout is rejected."""
    shared = shared_deployment["id"]
    clock = FakeClock()
    policy = form_policy(elicitation_timeout_seconds=60)
    arguments = {"deployment_id": shared}

    async with connect(platform_url, "auto", policy=policy, forms=FormResponses(), clock=clock) as conn:
        assert conn.client.session.protocol_version == "2026-07-28"
        with anyio.fail_after(10):
            first = await conn.client.session.call_tool(
                "stop_deployment", arguments, allow_input_required=True
            )
        assert isinstance(first, InputRequiredResult)
        assert first.input_requests is not None
        [(key, request)] = first.input_requests.items()
        assert request.method == "elicitation/create"

        clock.now += 61
        answer = ElicitResult(action="accept", content={"typed": TINY_MODEL})
        with anyio.fail_after(10):
            late = await conn.client.session.call_tool(
                "stop_deployment",
                arguments,
                input_responses={key: answer},
                request_state=first.request_state,
                allow_input_required=True,
            )
        assert await conn.status_of(shared) == "DEPLOYED"

    assert not isinstance(late, InputRequiredResult)
    assert late.structured_content is not None
    assert late.structured_content["outcome"] == "timed_out"
    assert text_of(late).startswith("The form timed out after 60 s without a response; nothing was done")


# Policies and clients without forms


@pytest.mark.parametrize("mode", MODES)
async def test_client_without_forms_gets_token(
    platform_url: str, shared_deployment: dict[str, Any], mode: str
) -> None:
    async with connect(platform_url, mode, policy=SLOW_WAIT) as conn:
        view, message = await stop_shared(conn, shared_deployment["id"])

    assert view["outcome"] == "preview"
    assert isinstance(view["confirmation_token"], str)
    assert message.startswith("Preview, nothing was done. stop_deployment would ")


@pytest.mark.parametrize("mode", MODES)
async def test_token_policy_sends_no_form(
    platform_url: str, shared_deployment: dict[str, Any], mode: str
) -> None:
    forms = FormResponses(typed=TINY_MODEL)
    policy = form_policy(confirmation=ConfirmationMode.TOKEN)

    async with connect(platform_url, mode, policy=policy, forms=forms) as conn:
        view, _message = await stop_shared(conn, shared_deployment["id"])
        token = view["confirmation_token"]
        assert isinstance(token, str)
        # A wrong deployment id for the token proves it is checked; nothing stops.
        other = await conn.call(
            "unload_model", {"deployment_id": shared_deployment["id"], "confirmation_token": token}
        )
        assert other.is_error is True
        assert "issued for stop_deployment" in text_of(other)

    assert view["outcome"] == "preview"
    assert forms.forms == []


@pytest.mark.parametrize("mode", MODES)
async def test_deny_policy_rejects_destructive_tools(
    platform_url: str, shared_deployment: dict[str, Any], mode: str
) -> None:
    forms = FormResponses(typed=TINY_MODEL)
    policy = form_policy(confirmation=ConfirmationMode.DENY)

    async with connect(platform_url, mode, policy=policy, forms=forms) as conn:
        listed = {tool.name for tool in (await conn.client.list_tools()).tools}
        results = [
            await conn.call(tool, {"deployment_id": shared_deployment["id"]})
            for tool in ("stop_deployment", "unload_model")
        ]
        assert await conn.status_of(shared_deployment["id"]) == "DEPLOYED"

    assert {"stop_deployment", "unload_model"} <= listed
    for tool, result in zip(("stop_deployment", "unload_model"), results, strict=True):
        assert result.is_error is True
        assert text_of(result) == (
            f"PolicyError: {tool} is rejected: the confirmation policy --confirmation "
            "(KAMIWAZA_MCP_CONFIRMATION) is deny, so no deployment can be stopped or unloaded through this "
            "server; nothing was done; tell the user; only the server's operator can change this setting"
        )
    assert forms.forms == []


@pytest.mark.parametrize("mode", MODES)
async def test_token_rejected_when_forms_work(
    platform_url: str, shared_deployment: dict[str, Any], mode: str
) -> None:
    """With forms available, a token from the agent cannot stand in for the person's response."""
    forms = FormResponses(typed=TINY_MODEL)

    async with connect(platform_url, mode, policy=SLOW_WAIT, forms=forms) as conn:
        result = await conn.call(
            "stop_deployment", {"deployment_id": shared_deployment["id"], "confirmation_token": "x" * 32}
        )
        assert await conn.status_of(shared_deployment["id"]) == "DEPLOYED"

    assert result.is_error is True
    assert text_of(result) == (
        "ConfirmationError: this client supports forms, so the person confirms in a form and tokens are not "
        "accepted; call stop_deployment with deployment_id only, and the person confirms in the form"
    )
    assert forms.forms == []


# Confirmed forms act


async def test_confirmed_forms_act(platform_url: str) -> None:
    """Deploy with progress, unload after a confirmed form (2025-11-25), load with a wait that runs out,
    wait for the load with progress, then stop after a confirmed form (2026-07-28)."""
    deploy_progress = ProgressLog()
    by_name = FormResponses(typed=f"  {TINY_MODEL} ")

    async with connect(platform_url, "legacy", forms=by_name) as legacy:
        with anyio.fail_after(DEPLOY_TIMEOUT + 30):
            deployed = await legacy.client.call_tool(
                "deploy_model", {"model": TINY_MODEL}, progress_callback=deploy_progress
            )
        assert deployed.structured_content is not None, text_of(deployed)
        own = deployed.structured_content["id"]
        assert deployed.structured_content["status"] == "DEPLOYED"

        unloaded = await legacy.call_ok("unload_model", {"deployment_id": own})
        assert unloaded["outcome"] == "done"
        assert unloaded["done"] is True
        assert unloaded["deployment"]["status"] == "UNLOADED"
        assert await legacy.status_of(own) == "UNLOADED"

    assert deploy_progress.messages[-1] == "DEPLOYED"
    assert set(deploy_progress.messages) <= {"REQUESTED", "DEPLOYING", "DEPLOYED"}
    progress_values = [progress for progress, _total, _message in deploy_progress.notes]
    assert progress_values == list(range(1, len(progress_values) + 1))
    [form] = by_name.forms
    assert form.message.startswith(f"Unload {TINY_MODEL}? This would end every replica")

    load_progress = ProgressLog()
    by_id = FormResponses(typed=own.upper())
    async with connect(platform_url, "auto", forms=by_id) as modern:
        # With no time to wait, the result is the current status and the next step.
        started = await modern.call("load_model", {"deployment_id": own, "wait_timeout_seconds": 0})
        assert started.structured_content is not None, text_of(started)
        pending = started.structured_content["status"]
        assert pending in ("REQUESTED", "DEPLOYING")
        assert started.structured_content["id"] == own
        assert text_of(started).endswith(
            f". Still {pending} after 0 s; call get_deployment_status with deployment_id {own} until it is DEPLOYED"
        )

        # load_model leaves a starting deployment as it is and waits for it.
        with anyio.fail_after(DEPLOY_TIMEOUT + 30):
            loaded = await modern.client.call_tool(
                "load_model", {"deployment_id": own}, progress_callback=load_progress
            )
        assert loaded.structured_content is not None, text_of(loaded)
        assert loaded.structured_content["status"] == "DEPLOYED"

        stopped = await modern.call_ok("stop_deployment", {"deployment_id": own})
        assert stopped["outcome"] == "done"
        assert stopped["deployment"]["status"] == "STOPPED"
        assert await modern.status_of(own) == "STOPPED"

    assert load_progress.messages[-1] == "DEPLOYED"
    assert len(by_id.forms) == 1
