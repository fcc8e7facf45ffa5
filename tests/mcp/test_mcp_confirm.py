"""The confirmation flow of stop_deployment and unload_model, on a deployment of the test's own.

Every rejected call must act on nothing, so each one is followed by a check
that the deployment (and the shared one) is still DEPLOYED.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp_support import DEPLOY_TIMEOUT, TINY_MODEL, Connection, text_of

pytest_plugins = ["mcp_fixtures"]
pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]


async def deploy_one(conn: Connection) -> dict[str, Any]:
    arguments = {"model": TINY_MODEL, "replicas": 1, "wait_timeout_seconds": DEPLOY_TIMEOUT}
    view = await conn.call_ok("deploy_model", arguments, within=DEPLOY_TIMEOUT + 30)
    assert view["status"] == "DEPLOYED"
    return view


async def preview(conn: Connection, tool: str, deployment_id: str) -> str:
    """Call `tool` without a token, check that it is a preview, and return its token."""
    result = await conn.call(tool, {"deployment_id": deployment_id})
    assert result.is_error is False, text_of(result)
    view = result.structured_content
    assert view is not None
    assert view["action"] == tool
    assert view["outcome"] == "preview"
    assert view["done"] is False
    assert view["deployment"]["id"] == deployment_id
    assert view["deployment"]["status"] == "DEPLOYED"
    assert view["expires_in_seconds"] == 300
    token = view["confirmation_token"]
    assert isinstance(token, str)
    assert len(token) >= 32
    assert text_of(result).startswith(f"Preview, nothing was done. {tool} would ")
    assert f"confirmation_token {token}" in text_of(result)
    return token


async def instance_statuses(conn: Connection, deployment_id: str) -> set[str]:
    listing = await conn.call_ok("list_model_instances", {"deployment_id": deployment_id})
    return {instance["status"] for instance in listing["instances"]}


async def assert_rejected(conn: Connection, tool: str, arguments: dict[str, Any], *fragments: str) -> None:
    """Call `tool`, expect an error whose text contains `fragments`, and check nothing changed."""
    result = await conn.call(tool, arguments)

    assert result.is_error is True, text_of(result)
    for fragment in fragments:
        assert fragment in text_of(result)
    assert await conn.status_of(arguments["deployment_id"]) == "DEPLOYED"


async def test_confirmation_flow(conn: Connection, shared_deployment: dict[str, Any]) -> None:
    own = (await deploy_one(conn))["id"]
    shared = shared_deployment["id"]
    retry = "without confirmation_token to get a preview and a new token"

    # A boolean, under any name, confirms nothing.
    for tool in ("stop_deployment", "unload_model"):
        await assert_rejected(
            conn,
            tool,
            {"deployment_id": own, "confirm": True},
            f"InvalidRequestError: {tool} does not accept the argument confirm; nothing was done",
            "only these arguments: deployment_id, confirmation_token",
        )
        await assert_rejected(
            conn,
            tool,
            {"deployment_id": own, "confirmation_token": True},
            "confirmation_token must be the token string a preview call returned, not true",
        )
        await assert_rejected(
            conn,
            tool,
            {"deployment_id": own, "confirmation_token": "yes, stop it"},
            "ConfirmationError: unknown confirmation token",
            f"call {tool} on {own} {retry}",
        )

    # A token for another deployment, or for another action, is rejected.
    shared_token = await preview(conn, "stop_deployment", shared)
    await assert_rejected(
        conn,
        "stop_deployment",
        {"deployment_id": own, "confirmation_token": shared_token},
        f"ConfirmationError: the confirmation token was issued for stop_deployment on {shared}, "
        f"not for stop_deployment on {own}",
    )
    assert await conn.status_of(shared) == "DEPLOYED"
    unload_token = await preview(conn, "unload_model", own)
    await assert_rejected(
        conn,
        "stop_deployment",
        {"deployment_id": own, "confirmation_token": unload_token},
        f"issued for unload_model on {own}, not for stop_deployment on {own}",
    )

    # An expired token is rejected.
    expiring = await preview(conn, "stop_deployment", own)
    conn.clock.now += 301
    await assert_rejected(
        conn,
        "stop_deployment",
        {"deployment_id": own, "confirmation_token": expiring},
        "ConfirmationError: the confirmation token expired; tokens are valid for 300 seconds",
    )

    # A fresh token for this action and deployment acts: unload, then load back.
    unload_token = await preview(conn, "unload_model", own)
    unloaded = await conn.call_ok("unload_model", {"deployment_id": own, "confirmation_token": unload_token})
    assert unloaded["done"] is True
    assert unloaded["confirmation_token"] is None
    assert unloaded["outcome"] == "done"
    assert unloaded["deployment"]["status"] == "UNLOADED"
    assert unloaded["deployment"]["replicas_up"] == 0
    assert await instance_statuses(conn, own) == {"STOPPED"}
    refused = await conn.call("generate", {"deployment_id": own, "prompt": "hello"})
    assert refused.is_error is True
    assert text_of(refused) == (
        f"DeploymentError: deployment {own} is UNLOADED, not DEPLOYED; call load_model to load it back"
    )

    loaded = await conn.call_ok(
        "load_model",
        {"deployment_id": own, "wait_timeout_seconds": DEPLOY_TIMEOUT},
        within=DEPLOY_TIMEOUT + 30,
    )
    assert loaded["id"] == own
    assert loaded["status"] == "DEPLOYED"
    assert loaded["replicas_up"] == 1
    generated = await conn.call_ok(
        "simple_generate", {"deployment_id": own, "prompt": "hello", "max_tokens": 4}
    )
    assert generated["deployment_id"] == own

    # The spent token cannot unload the reloaded deployment again.
    await assert_rejected(
        conn,
        "unload_model",
        {"deployment_id": own, "confirmation_token": unload_token},
        "ConfirmationError: the confirmation token was already used; tokens are single-use",
    )

    # Stop with a fresh token; after that, a preview has nothing left to do.
    stop_token = await preview(conn, "stop_deployment", own)
    stopped = await conn.call_ok("stop_deployment", {"deployment_id": own, "confirmation_token": stop_token})
    assert stopped["done"] is True
    assert stopped["deployment"]["status"] == "STOPPED"
    assert await instance_statuses(conn, own) == {"STOPPED"}
    assert await conn.status_of(own) == "STOPPED"

    again = await conn.call_ok("stop_deployment", {"deployment_id": own})
    assert again["outcome"] == "nothing_to_do"
    assert again["done"] is False
    assert again["confirmation_token"] is None
    assert await conn.status_of(shared) == "DEPLOYED"
