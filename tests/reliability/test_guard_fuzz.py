"""Confirmation fuzzing: stop_deployment and unload_model on a real DEPLOYED deployment, never confirmed.

One deployment of the tiny model runs with a real worker process. Each example
calls stop_deployment or unload_model on it with a confirmation that must not
be accepted. Tokens are random, of another type, real but cut or changed,
expired, already used, or issued for the other action, for another deployment
or by another server. Clients that support forms send a decline, a cancel, or a
typed answer that is neither the model name nor the id. After every call the
platform must have received no stop or unload request, the deployment must be
DEPLOYED, and its worker must be the same live process.
"""

from __future__ import annotations

import logging
import string
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp_types import ElicitRequestParams, ElicitResult
from reliability_support import (
    KNOWN_API_KEY,
    Connection,
    HostedPlatform,
    ManualClock,
    deployment_record,
    open_connection,
    profile,
    secret_hits,
    serve_platform,
    text_of,
)

from kamiwaza_mcp.config import ServerSettings
from kamiwaza_mcp.local import LocalPlatformSettings
from kamiwaza_mcp.server import build_server

pytest_plugins = ["reliability_fixtures"]
pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TINY_MODEL = "tiny-llama"
ACTIONS = ("stop_deployment", "unload_model")
# Seconds for the tiny model's worker to start; about 5 on 2 idle cores.
DEPLOY_TIMEOUT = 240.0
# Tokens are 32 characters of the URL-safe alphabet (secrets.token_urlsafe(24)).
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
# Ids of deployments written into the store beside the real one; neither has a worker.
SPARE = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
OTHER = "1f2e3d4c-5b6a-4978-8a7b-6c5d4e3f2a1b"


class FormScript:
    """An elicitation callback that returns the form result a test sets before each call."""

    def __init__(self) -> None:
        self.answer: tuple[str, str | None] = ("decline", None)
        self.forms = 0

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.forms += 1
        action, typed = self.answer
        content = {"typed": typed} if action == "accept" else None
        return ElicitResult(action=action, content=content)  # type: ignore[arg-type]


@dataclass
class Target:
    """The real deployment, its worker processes, and the connections that fuzz it."""

    hosted: HostedPlatform
    deployment_id: str
    pids: dict[str, int]
    tokens: Connection
    foreign: Connection
    forms: dict[str, tuple[Connection, FormScript]]
    used_tokens: dict[str, str] = field(default_factory=dict)
    # Requests the platform had received when the setup, which stops and unloads for real, ended.
    setup_requests: int = 0


def destructive_requests(hosted: HostedPlatform, since: int) -> list[tuple[str, str]]:
    """Return the stop and unload requests the platform received after the first `since` requests."""
    return [
        (method, path)
        for method, path in hosted.guard.requests[since:]
        if (method == "DELETE" and path.startswith("/api/serving/deployment/")) or path.endswith("/unload")
    ]


def worker_pids(portal: BlockingPortal, hosted: HostedPlatform, deployment_id: str) -> dict[str, int]:
    instances = portal.call(hosted.platform.store.list_instances, deployment_id)
    return {instance.id: instance.pid for instance in instances if instance.pid is not None}


def is_alive(pid: int) -> bool:
    """Return whether the process runs and is no zombie; an ended child stays a zombie until reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_deployed(connection: Connection, deployment_id: str) -> None:
    deadline = time.monotonic() + DEPLOY_TIMEOUT
    while time.monotonic() < deadline:
        result = connection.call("get_deployment_status", {"deployment_id": deployment_id})
        status = (result.structured_content or {}).get("status")
        if status == "DEPLOYED":
            return
        assert status in ("REQUESTED", "DEPLOYING"), (
            f"deployment {deployment_id} is {status}: {text_of(result)}"
        )
        time.sleep(0.5)
    raise AssertionError(f"deployment {deployment_id} is not DEPLOYED after {DEPLOY_TIMEOUT:g} s")


def confirm_with_token(connection: Connection, action: str, deployment_id: str) -> str:
    """Preview `action`, then act with the token; return the token, now used."""
    preview = connection.call(action, {"deployment_id": deployment_id})
    token = (preview.structured_content or {}).get("confirmation_token")
    assert token, f"{action} preview of {deployment_id} issued no token: {text_of(preview)}"
    done = connection.call(action, {"deployment_id": deployment_id, "confirmation_token": token})
    assert (done.structured_content or {}).get("done") is True, text_of(done)
    return str(token)


def open_form_connection(
    portal: BlockingPortal, settings: ServerSettings, mode: str, closers: list[Callable[[], None]]
) -> tuple[Connection, FormScript]:
    script = FormScript()
    clock = ManualClock()
    client_manager = Client(build_server(settings, clock=clock), mode=mode, elicitation_callback=script)  # type: ignore[arg-type]
    manager = portal.wrap_async_context_manager(client_manager)
    client = manager.__enter__()
    closers.append(lambda: manager.__exit__(None, None, None))
    return Connection(name=f"forms-{mode}", portal=portal, client=client, clock=clock), script


@pytest.fixture(scope="module")
def target(
    portal: BlockingPortal, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("guard-platform")
    models = root / "models"
    models.mkdir()
    (models / TINY_MODEL).symlink_to(tiny_model_dir, target_is_directory=True)
    platform_settings = LocalPlatformSettings(
        state_dir=root / "state", models_dir=models, scan_hf_cache=False
    )
    closers: list[Callable[[], None]] = []
    with portal.wrap_async_context_manager(serve_platform(platform_settings, KNOWN_API_KEY)) as hosted:
        portal.call(hosted.platform.store.insert_deployment, deployment_record(SPARE, "DEPLOYED"))
        portal.call(hosted.platform.store.insert_deployment, deployment_record(OTHER, "UNLOADED"))
        settings = ServerSettings.model_validate({"base_url": hosted.url, "api_key": KNOWN_API_KEY})
        try:
            tokens = open_connection(portal, settings, "tokens", "legacy", closers)
            foreign = open_connection(portal, settings, "foreign", "legacy", closers)
            forms = {
                mode: open_form_connection(portal, settings, mode, closers) for mode in ("legacy", "auto")
            }

            deployed = tokens.call("deploy_model", {"model": TINY_MODEL, "replicas": 1, "wait": False})
            assert deployed.is_error is False, text_of(deployed)
            deployment_id = deployed.structured_content["id"]
            wait_deployed(tokens, deployment_id)

            # A used unload token of this deployment: unload it for real once, then load it back.
            used = {"unload_model": confirm_with_token(tokens, "unload_model", deployment_id)}
            reloaded = tokens.call("load_model", {"deployment_id": deployment_id, "wait": False})
            assert reloaded.is_error is False, text_of(reloaded)
            wait_deployed(tokens, deployment_id)
            # A used stop token, spent on another deployment, which has no worker.
            used["stop_deployment"] = confirm_with_token(tokens, "stop_deployment", OTHER)

            # The check of every example below detects these two real actions, so it would detect others.
            acted = destructive_requests(hosted, 0)
            assert [method for method, _ in acted] == ["POST", "DELETE"], acted

            pids = worker_pids(portal, hosted, deployment_id)
            assert pids, "the deployment has no worker process"
            yield Target(
                hosted, deployment_id, pids, tokens, foreign, forms, used, len(hosted.guard.requests)
            )
        finally:
            for close in reversed(closers):
                close()


ID_SPELLINGS = ("canonical", "upper", "spaced", "braced", "urn")


def spelled(deployment_id: str, spelling: str) -> str:
    """Write the id as a caller might: every spelling names the same deployment."""
    forms = {
        "canonical": deployment_id,
        "upper": deployment_id.upper(),
        "spaced": f"  {deployment_id} ",
        "braced": "{" + deployment_id + "}",
        "urn": f"urn:uuid:{deployment_id}",
    }
    return forms[spelling]


def mutated(token: str, data: st.DataObject) -> str:
    """Change a real token in one way a caller might: one character, cut, extended, case or spaces."""
    kind = data.draw(st.sampled_from(["replace", "cut", "extend", "case", "spaces", "prefix"]))
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    if kind == "replace":
        options = [c for c in TOKEN_ALPHABET if c != token[index]]
        changed = token[:index] + data.draw(st.sampled_from(options)) + token[index + 1 :]
    elif kind == "cut":
        changed = token[:index]
    elif kind == "extend":
        changed = token + data.draw(st.sampled_from(TOKEN_ALPHABET))
    elif kind == "case":
        changed = token.swapcase() if token.swapcase() != token else token + "A"
    elif kind == "spaces":
        changed = f" {token} "
    else:
        changed = "Bearer " + token
    assert changed != token
    return changed


def token_for(target: Target, action: str, kind: str, data: st.DataObject) -> Any:
    """Build a confirmation_token value of `kind` for `action` on the real deployment."""
    deployment_id = target.deployment_id
    other_action = ACTIONS[1 - ACTIONS.index(action)]
    if kind == "random text":
        return data.draw(
            st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=256)
        )
    if kind == "random token-shaped":
        return data.draw(st.text(alphabet=TOKEN_ALPHABET, min_size=32, max_size=32))
    if kind == "not a string":
        return data.draw(
            st.one_of(
                st.booleans(),
                st.integers(),
                st.floats(allow_nan=False, allow_infinity=False),
                st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
            )
        )
    if kind == "empty or blank":
        return data.draw(st.sampled_from(["", " ", "\t", "\n"]))
    if kind == "reused":
        return target.used_tokens[action]
    if kind == "foreign server":
        return _preview_token(target.foreign, action, deployment_id)
    if kind == "other action":
        return _preview_token(target.tokens, other_action, deployment_id)
    if kind == "other deployment":
        return _preview_token(target.tokens, action, SPARE)
    if kind == "expired":
        preview = target.tokens.call(action, {"deployment_id": deployment_id})
        token = preview.structured_content["confirmation_token"]
        target.tokens.clock.now += preview.structured_content["expires_in_seconds"] + 1
        return token
    if kind == "changed":
        return mutated(_preview_token(target.tokens, action, deployment_id), data)
    raise AssertionError(f"unknown token kind {kind!r}")


def _preview_token(connection: Connection, action: str, deployment_id: str) -> str:
    preview = connection.call(action, {"deployment_id": deployment_id})
    token = (preview.structured_content or {}).get("confirmation_token")
    assert token, f"{action} preview of {deployment_id} issued no token: {text_of(preview)}"
    return str(token)


TOKEN_KINDS = (
    "random text",
    "random token-shaped",
    "not a string",
    "empty or blank",
    "reused",
    "foreign server",
    "other action",
    "other deployment",
    "expired",
    "changed",
)


def typed_answer(target: Target, data: st.DataObject) -> tuple[str, str | None]:
    """Draw a form answer that must not confirm: a decline, a cancel, or a typed near miss."""
    kind = data.draw(st.sampled_from(["decline", "cancel", "random", "near miss"]))
    if kind in ("decline", "cancel"):
        return kind, None
    if kind == "random":
        typed = data.draw(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80))
    else:
        typed = data.draw(
            st.sampled_from(
                [
                    TINY_MODEL.upper(),
                    TINY_MODEL.replace("-", "_"),
                    TINY_MODEL[:-1],
                    TINY_MODEL + "!",
                    f"{TINY_MODEL} {target.deployment_id}",
                    SPARE,
                    OTHER,
                    str(uuid.UUID(int=uuid.UUID(target.deployment_id).int ^ 1)),
                    "yes",
                    "confirm",
                    "true",
                ]
            )
        )
    if typed.strip() == TINY_MODEL or _names_target(typed.strip(), target.deployment_id):
        typed = typed + "x"
    return "accept", typed


def _names_target(typed: str, deployment_id: str) -> bool:
    try:
        return str(uuid.UUID(typed)) == deployment_id
    except ValueError:
        return False


def check_nothing_happened(target: Target, portal: BlockingPortal, since: int, description: str) -> None:
    assert destructive_requests(target.hosted, since) == [], f"{description} reached the platform"
    record = portal.call(target.hosted.platform.store.get_deployment, target.deployment_id)
    assert record is not None
    assert record.status == "DEPLOYED", f"{description} left the deployment {record.status}"
    assert worker_pids(portal, target.hosted, target.deployment_id) == target.pids, (
        f"{description} replaced a worker"
    )
    for pid in target.pids.values():
        assert is_alive(pid), f"{description}: worker {pid} is not running"


def attempt(
    target: Target,
    portal: BlockingPortal,
    connection: Connection,
    action: str,
    arguments: dict[str, Any],
    kind: str,
) -> None:
    """Call `action` on the real deployment and check that the call acted on nothing."""
    since = len(target.hosted.guard.requests)
    result = connection.call(action, arguments)
    description = f"{action} with {kind} ({arguments!r})"
    content = result.structured_content or {}
    assert result.is_error or content.get("done") is False, f"{description} returned {text_of(result)}"
    assert text_of(result).strip(), f"{description} returned no message"
    check_nothing_happened(target, portal, since, description)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        # No example database is written; a failure prints the blob that reproduces it.
        database=None,
        print_blob=True,
        derandomize=profile().derandomize,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check_no_secret(
    connections: list[Connection], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    out, err = capfd.readouterr()
    logged = [record.getMessage() for record in caplog.records]
    transcripts = [text for connection in connections for text in connection.transcript]
    hits = secret_hits([*transcripts, *logged, out, err])
    assert hits == [], f"the API key appeared in the output: {hits[:3]}"


@pytest.mark.parametrize("kind", TOKEN_KINDS)
@pytest.mark.parametrize("action", ACTIONS)
def test_token_does_not_confirm(
    target: Target,
    portal: BlockingPortal,
    action: str,
    kind: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    examples = max(2, profile().guard_examples // (len(ACTIONS) * len(TOKEN_KINDS)))
    calls = 0

    @given(data=st.data())
    @fuzz_settings(examples)
    def run(data: st.DataObject) -> None:
        nonlocal calls
        spelling = data.draw(st.sampled_from(ID_SPELLINGS))
        arguments = {
            "deployment_id": spelled(target.deployment_id, spelling),
            "confirmation_token": token_for(target, action, kind, data),
        }
        attempt(target, portal, target.tokens, action, arguments, kind)
        calls += 1

    run()

    assert calls >= min(examples, 2)
    check_no_secret([target.tokens, target.foreign], caplog, capfd)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("action", ACTIONS)
def test_form_answer_does_not_confirm(
    target: Target,
    portal: BlockingPortal,
    action: str,
    mode: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    connection, script = target.forms[mode]
    examples = max(4, profile().guard_examples // 8)
    forms_before = script.forms
    calls = 0

    @given(data=st.data())
    @fuzz_settings(examples)
    def run(data: st.DataObject) -> None:
        nonlocal calls
        spelling = data.draw(st.sampled_from(ID_SPELLINGS))
        arguments: dict[str, Any] = {"deployment_id": spelled(target.deployment_id, spelling)}
        script.answer = typed_answer(target, data)
        kind = f"form answer {script.answer}"
        if data.draw(st.booleans()):
            arguments["confirmation_token"] = token_for(target, action, "random token-shaped", data)
            kind += " and a token"
        attempt(target, portal, connection, action, arguments, kind)
        calls += 1

    run()

    assert calls >= min(examples, 4)
    assert script.forms > forms_before, "no confirmation form reached the client"
    check_no_secret([connection], caplog, capfd)


def test_deployment_serves_after_fuzzing(target: Target, portal: BlockingPortal) -> None:
    check_nothing_happened(target, portal, target.setup_requests, "the guard fuzzing")
    answer = target.tokens.call(
        # Greedy, so the tiny model cannot sample its end token before the 4th token.
        "generate",
        {"deployment_id": target.deployment_id, "prompt": "The", "max_tokens": 4, "temperature": 0},
    )
    assert answer.is_error is False, text_of(answer)
    assert answer.structured_content["usage"]["completion_tokens"] == 4
