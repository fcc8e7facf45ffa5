"""Property-based requests to the local platform's `/serving/*` routes, generated from the spec by schemathesis.

Each operation gets valid and invalid requests (schemathesis' positive and
negative modes). Every response must be free of 5xx, and its body must fit the
spec's schema for its status, with unlisted fields rejected. Undocumented 400,
404 and 409 answers must carry a string `detail`.

The platform has no models, so every deploy fails fast with 400, 404 or 422 and
no worker starts. Two deployments are written into its store directly, since
the API cannot create one without starting a worker. Each generated request
with an id is sent again with the id replaced by theirs, so the routes also
answer with real bodies.

Not fuzzed, with the reason:
- `POST /serving/start` starts a Ray head node when Ray is installed.
- Spec operations the local platform does not implement (`NOT_IMPLEMENTED`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from contract_platform import response_errors, spec_routes_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_contract import load_spec

from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.store import DeploymentRecord, InstanceRecord, utc_now

API = "http://kamiwaza.local/api"
MAX_EXAMPLES = 100
# Each example sends two requests in-process; 2 s is far above the few milliseconds one takes.
DEADLINE_MS = 2000

# NOTE: POST /serving/start is never fuzzed, because it starts a Ray head node when Ray is installed.
EXCLUDED = {"POST /serving/start"}
NOT_IMPLEMENTED = {
    "POST /serving/routes/greymatter",
    "DELETE /serving/routes/greymatter/{route_id}",
    "DELETE /serving/deployment/{deployment_id}/delete",
    "POST /serving/external-endpoints/discover",
}
# Without models, every deploy and estimate is rejected.
NEVER_SUCCEED = {"POST /serving/deploy_model", "POST /serving/estimate_model_vram"}
FUZZED = sorted(
    operation.label
    for operation in load_spec().operations("/serving/")
    if operation.label not in EXCLUDED | NOT_IMPLEMENTED
)

SCHEMA = schemathesis.openapi.from_dict(
    load_spec().document,
    config=schemathesis.Config.from_dict(
        {
            # Security headers would carry random text; the local platform takes no credentials.
            "generation": {"with-security-parameters": False},
            # Only the checks this run is about. Left out on purpose: status codes (the spec
            # documents only 200 and 422, but unknown ids get 404), authentication (the
            # local platform takes no credentials), and rejecting invalid or accepting valid
            # data (pydantic reads "true" as true, and the platform asks more than the spec,
            # such as min_copies >= 1).
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
            },
        }
    ),
)


@dataclass(frozen=True)
class Seeded:
    """Ids of the deployments put into the store: `kept` is never stopped, `stopped` may be."""

    model_id: str
    kept: str
    kept_instance: str
    stopped: str


@dataclass(frozen=True)
class HostedPlatform:
    """A LocalPlatform running in a portal's event loop, with an httpx client of that loop."""

    platform: LocalPlatform
    portal: BlockingPortal
    client: httpx.AsyncClient
    seeded: Seeded

    def send(self, case: schemathesis.Case[Any]) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url=API)
        assert "files" not in kwargs, f"unexpected multipart body for {case.operation.label}"
        assert not kwargs.get("cookies"), f"the spec declares no cookies, got {kwargs['cookies']}"
        # Negative cases send raw bytes, such as b"\x00", as the body of a JSON route.
        raw = kwargs.get("data")
        assert raw is None or isinstance(raw, bytes | str), f"unexpected form body {raw!r}"
        params = {name: value for name, value in (kwargs.get("params") or {}).items() if value is not None}
        request = functools.partial(
            self.client.request,
            kwargs["method"],
            kwargs["url"],
            params=params,
            headers=kwargs.get("headers"),
            json=kwargs.get("json"),
            content=raw,
        )
        return self.portal.call(request)


def seed_deployments(platform: LocalPlatform) -> Seeded:
    """Store an UNLOADED deployment with one stopped instance and a FAILED one; no worker starts."""
    model_id = "6f0c3d2e-2b7a-4f1e-9c1d-5a4b3c2d1e0f"
    now = utc_now()
    ids = {
        "kept": "2c9a1e7b-0d4f-4b8e-a6c5-3f2e1d0c9b8a",
        "stopped": "8e7d6c5b-4a39-4281-9f0e-d1c2b3a49586",
        "kept_instance": "4b3a2918-7c6d-4e5f-8a9b-0c1d2e3f4a5b",
    }
    for key, status, error in (
        ("kept", "UNLOADED", None),
        ("stopped", "FAILED", ("MODEL_LOADING_FAILURE", "the folder of model fuzz-llama is gone")),
    ):
        platform.store.insert_deployment(
            DeploymentRecord(
                id=ids[key],
                model_id=model_id,
                model_name="fuzz-llama",
                config_id="9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
                config_name="default",
                engine="transformers",
                served_model_name="fuzz-llama",
                context_length=2048,
                request={"m_id": model_id, "starting_copies": 1, "max_concurrent_requests": 4},
                status=status,
                last_error_code=error[0] if error else None,
                last_error_message=error[1] if error else None,
                last_error_at=now if error else None,
                requested_at=now,
                created_at=now,
                deployed_at=None,
                updated_at=now,
            )
        )
    platform.store.insert_instance(
        InstanceRecord(
            id=ids["kept_instance"],
            deployment_id=ids["kept"],
            replica=0,
            status="STOPPED",
            pid=None,
            host="127.0.0.1",
            port=None,
            log_file=str(platform.settings.logs_dir / ids["kept"] / "replica-0.log"),
            created_at=now,
            deployed_at=now,
            updated_at=now,
        )
    )
    return Seeded(model_id, ids["kept"], ids["kept_instance"], ids["stopped"])


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostedPlatform]:
    """A platform without models, in a portal thread so that hypothesis can drive it synchronously."""
    root: Path = tmp_path_factory.mktemp("fuzz-platform")
    settings = LocalPlatformSettings(state_dir=root / "state", models_dir=root / "models")
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(LocalPlatform(settings)) as platform,
    ):
        client = portal.call(functools.partial(_open_client, platform))
        try:
            seeded = portal.call(seed_deployments, platform)
            yield HostedPlatform(platform, portal, client, seeded)
        finally:
            portal.call(client.aclose)


async def _open_client(platform: LocalPlatform) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=platform.app), timeout=30)


def with_known_ids(case: schemathesis.Case[Any], seeded: Seeded) -> schemathesis.Case[Any] | None:
    """Return a copy of `case` whose id parameters name the seeded deployments, or None if it has none."""
    known = case.derive()
    path = known.path_parameters
    if "deployment_id" in path:
        path["deployment_id"] = seeded.stopped if case.method.upper() == "DELETE" else seeded.kept
    if "instance_id" in path:
        path["instance_id"] = seeded.kept_instance
    if "engine_type" in path:
        path["engine_type"] = "transformers"
    if "model_id" in known.query:
        known.query["model_id"] = seeded.model_id
    if "deployment_id" in known.query:
        known.query["deployment_id"] = seeded.kept
    if (path, known.query, known.body) == (case.path_parameters, case.query, case.body):
        return None
    return known


def check(case: schemathesis.Case[Any], response: httpx.Response) -> None:
    case.validate_response(response)
    label, errors = response_errors(load_spec(), response)
    assert errors == [], f"{label} answered HTTP {response.status_code} off the spec: {errors}"


def test_fuzzed_operations_are_platform_routes(hosted: HostedPlatform) -> None:
    in_spec, _ = spec_routes_of(hosted.platform.app, load_spec())
    serving = {label for label in in_spec if label.split(" ", 1)[1].startswith("/serving/")}

    assert set(FUZZED) == serving - EXCLUDED
    assert not (NOT_IMPLEMENTED & serving), "a route is implemented now; fuzz it"
    assert len(FUZZED) >= 10


@pytest.mark.parametrize("label", FUZZED)
def test_serving_route_fuzz(hosted: HostedPlatform, label: str) -> None:
    method, template = label.split(" ", 1)
    operation = SCHEMA[template][method]
    strategy = st.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )
    statuses: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=DEADLINE_MS,
        # The same requests every run, so a CI failure reproduces; no example database is written.
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: schemathesis.Case[Any]) -> None:
        response = hosted.send(case)
        check(case, response)
        statuses.append(response.status_code)
        known = with_known_ids(case, hosted.seeded)
        if known is not None:
            response = hosted.send(known)
            check(known, response)
            statuses.append(response.status_code)

    run()

    # Hypothesis stops early once it has tried every distinct request, as for a route without inputs.
    has_inputs = bool(operation.path_parameters or operation.query or operation.body)
    assert len(statuses) >= (MAX_EXAMPLES if has_inputs else 1), (
        f"only {len(statuses)} requests reached {label}"
    )
    if label not in NEVER_SUCCEED:
        assert any(status < 300 for status in statuses), f"no request to {label} succeeded: {statuses}"
