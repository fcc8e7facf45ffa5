"""OpenAI-compatible routes under `/runtime/models/{deployment_id}/v1`, proxied to the workers.

Each request goes to the DEPLOYED deployment's ready worker with the fewest requests
in flight; ties rotate, so sequential requests also spread over the replicas. The
worker's status code and JSON body are passed through unchanged.
"""

from __future__ import annotations

import itertools
import logging
import time

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._http import http_error, path_uuid, platform_of
from .supervisor import Worker

__all__ = ["pick_worker", "routes"]

logger = logging.getLogger(__name__)

_DEPLOYMENTS = "GET /api/serving/deployments lists the deployments"
_turns = itertools.count()


def pick_worker(workers: list[Worker]) -> Worker:
    """Return the worker with the fewest requests in flight, rotating among equals."""
    fewest = min(worker.in_flight for worker in workers)
    candidates = [worker for worker in workers if worker.in_flight == fewest]
    return candidates[next(_turns) % len(candidates)]


async def chat_completions(request: Request) -> Response:
    return await _proxy(request, "chat/completions")


async def completions(request: Request) -> Response:
    return await _proxy(request, "completions")


async def models(request: Request) -> Response:
    return await _proxy(request, "models")


async def _proxy(request: Request, endpoint: str) -> Response:
    platform = platform_of(request)
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    record = platform.require_deployment(deployment_id)
    if record.status != "DEPLOYED":
        raise http_error(
            409, f"deployment {deployment_id} is {record.status}; {_next_step(deployment_id, record.status)}"
        )
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
