"""OpenAI-compatible routes under `/runtime/models/{deployment_id}/v1`, proxied to the workers.

Each request goes to the DEPLOYED deployment's ready worker with the fewest requests
in flight; ties rotate, so sequential requests also spread over the replicas. The
worker's status code and JSON body are passed through unchanged.

Generation requests first take one of the deployment's `max_concurrent_requests`
slots (see admission.py): they wait in a bounded queue while all slots are taken,
and get 429 when the queue is full too. `GET .../v1/models` takes no slot.
"""

from __future__ import annotations

import itertools
import logging
import time

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._http import http_error, path_uuid, platform_of
from .admission import DeploymentBusyError
from .store import DeploymentRecord
from .supervisor import Worker

__all__ = ["pick_worker", "routes"]

logger = logging.getLogger(__name__)

_DEPLOYMENTS = "GET /api/serving/deployments lists the deployments"
# Seconds a client should wait after a 429, sent in the Retry-After header.
_RETRY_AFTER_SECONDS = 1
_turns = itertools.count()


def pick_worker(workers: list[Worker]) -> Worker:
    """Return the worker with the fewest requests in flight, rotating among equals."""
    fewest = min(worker.in_flight for worker in workers)
    candidates = [worker for worker in workers if worker.in_flight == fewest]
    return candidates[next(_turns) % len(candidates)]


async def chat_completions(request: Request) -> Response:
    return await _admit_and_proxy(request, "chat/completions")


async def completions(request: Request) -> Response:
    return await _admit_and_proxy(request, "completions")


async def models(request: Request) -> Response:
    return await _proxy(request, "models")


async def _admit_and_proxy(request: Request, endpoint: str) -> Response:
    """Proxy a generation request once it has taken one of the deployment's request slots."""
    platform = platform_of(request)
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    record = _require_deployed(request, deployment_id)
    # Read before the wait, so no queued request leaves its body half-read on the connection.
    # Starlette keeps the body, so _proxy reads it again for free.
    await request.body()
    try:
        async with platform.admission_of(record).slot():
            return await _proxy(request, endpoint)
    except DeploymentBusyError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(_RETRY_AFTER_SECONDS)}) from exc


def _require_deployed(request: Request, deployment_id: str) -> DeploymentRecord:
    record = platform_of(request).require_deployment(deployment_id)
    if record.status != "DEPLOYED":
        raise http_error(
            409, f"deployment {deployment_id} is {record.status}; {_next_step(deployment_id, record.status)}"
        )
    return record


async def _proxy(request: Request, endpoint: str) -> Response:
    platform = platform_of(request)
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    # Checked again after a wait in the queue, during which the deployment may have stopped.
    record = _require_deployed(request, deployment_id)
    if record.backend == "ray":
        return await _forward_to_ray(request, deployment_id, endpoint)
    workers = platform.launcher.ready_workers(deployment_id)
    if not workers:
        raise http_error(
            503, f"deployment {deployment_id} has no running worker; check GET /api/serving/health"
        )

    worker = pick_worker(workers)
    body = await request.body()
    headers = {"content-type": request.headers.get("content-type", "application/json")}
    url = f"{worker.base_url}/v1/{endpoint}"
    started = time.monotonic()
    worker.in_flight += 1
    try:
        upstream = await platform.http.request(request.method, url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        logger.warning(
            "Worker %s of deployment %s failed on %s: %r",
            worker.spec.instance_id,
            deployment_id,
            endpoint,
            exc,
        )
        raise http_error(
            502,
            f"worker {worker.spec.instance_id} of deployment {deployment_id} failed: {type(exc).__name__}: {exc}; "
            "GET /api/serving/health shows the state of its workers",
        ) from exc
    finally:
        worker.in_flight -= 1
    worker.requests_served += 1
    logger.debug(
        "%s %s of deployment %s went to worker %s: HTTP %d in %.2f s",
        request.method,
        endpoint,
        deployment_id,
        worker.spec.instance_id,
        upstream.status_code,
        time.monotonic() - started,
    )
    return Response(
        upstream.content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type")
    )


async def _forward_to_ray(request: Request, deployment_id: str, endpoint: str) -> Response:
    """Send the request to a Ray Serve replica of the deployment; Serve picks the replica."""
    content_type = request.headers.get("content-type", "application/json")
    status_code, media_type, content = await platform_of(request).ray_backend.forward(
        deployment_id, request.method, endpoint, await request.body(), content_type
    )
    return Response(content, status_code=status_code, media_type=media_type)


def _next_step(deployment_id: str, status: str) -> str:
    if status in ("REQUESTED", "DEPLOYING"):
        return f"wait until GET /api/serving/deployment/{deployment_id}/status returns DEPLOYED"
    if status in ("UNLOADED", "FAILED"):
        return f"load it with POST /api/serving/deployment/{deployment_id}/load"
    return "deploy the model again with POST /api/serving/deploy_model"


_PREFIX = "/runtime/models/{deployment_id}/v1"

routes = [
    Route(f"{_PREFIX}/chat/completions", chat_completions, methods=["POST"]),
    Route(f"{_PREFIX}/completions", completions, methods=["POST"]),
    Route(f"{_PREFIX}/models", models, methods=["GET"]),
]
