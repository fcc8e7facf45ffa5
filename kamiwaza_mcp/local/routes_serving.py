"""Routes under `/api/serving`: deployments, their instances, health, logs and memory estimates."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._http import json_response, parse_body, path_uuid, platform_of, query_bool, query_int, query_uuid
from .errors import NotFoundError
from .health import collect_health
from .logs import DEFAULT_LOG_LINES, MAX_LOG_LINES
from .schemas import CreateModelDeployment

__all__ = ["routes"]

_DEPLOYMENTS = "GET /api/serving/deployments lists the deployments"
_INSTANCES = "GET /api/serving/model_instances lists the instances"


async def deploy_model(request: Request) -> JSONResponse:
    """Return 202 with the new deployment's id; the workers start in the background.

    The deployment's memory is estimated first (as estimate_model_vram does). When all
    replicas together need more than the free memory, the response is 507 with a detail
    object: `message`, then the estimate's fields (weights_bytes, kv_cache_bytes,
    overhead_bytes, per_replica_bytes, total_bytes, available_bytes, ...). To deploy
    anyway, send `runtime_env: {"KAMIWAZA_FORCE": "true"}` in the body.
    """
    body = await parse_body(request, CreateModelDeployment)
    deployment_id = await platform_of(request).deploy(body)
    return json_response(deployment_id, status_code=202)


async def estimate_model_vram(request: Request) -> JSONResponse:
    body = await parse_body(request, CreateModelDeployment)
    return json_response(await platform_of(request).estimate(body))


async def list_deployments(request: Request) -> JSONResponse:
    model_id = query_uuid(request, "model_id")
    platform = platform_of(request)
    records = platform.store.list_deployments(model_id=model_id)
    return json_response([platform.view_of(record) for record in records])


async def get_deployment(request: Request) -> JSONResponse:
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    return json_response(platform_of(request).deployment_view(deployment_id))


async def stop_deployment(request: Request) -> JSONResponse:
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    force = query_bool(request, "force")
    return json_response(await platform_of(request).stop_deployment(deployment_id, force=force))


async def get_deployment_status(request: Request) -> JSONResponse:
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    return json_response(platform_of(request).require_deployment(deployment_id).status)


async def unload_deployment(request: Request) -> JSONResponse:
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    return json_response(await platform_of(request).unload(deployment_id))


async def load_deployment(request: Request) -> JSONResponse:
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    return json_response(await platform_of(request).load(deployment_id))


async def list_model_instances(request: Request) -> JSONResponse:
    deployment_id = query_uuid(request, "deployment_id")
    platform = platform_of(request)
    records = platform.store.list_deployments()
    if deployment_id is not None:
        records = [platform.require_deployment(deployment_id)]
    views = [
        platform.instance_view_of(instance, record)
        for record in records
        for instance in platform.store.list_instances(record.id)
    ]
    return json_response(views)


async def get_model_instance(request: Request) -> JSONResponse:
    instance_id = path_uuid(request, "instance_id", "model instance", _INSTANCES)
    platform = platform_of(request)
    instance = platform.store.get_instance(instance_id)
    if instance is None:
        raise NotFoundError(f"model instance {instance_id} not found; {_INSTANCES}")
    record = platform.require_deployment(instance.deployment_id)
    return json_response(platform.instance_view_of(instance, record))


async def health(request: Request) -> JSONResponse:
    return json_response(await collect_health(platform_of(request)))


async def deployment_logs(request: Request) -> JSONResponse:
    """Return the newest lines of the deployment's worker logs, newest last.

    Query `lines` (1 to 5000, default 200) bounds the lines returned, and `instance_id`
    (a local extension) reads one replica's log. Without it, each replica gets an equal
    share of `lines`, each line tagged `[replica N]` when there are several.
    """
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    lines = query_int(request, "lines", default=DEFAULT_LOG_LINES, minimum=1, maximum=MAX_LOG_LINES)
    instance_id = query_uuid(request, "instance_id")
    return json_response(await platform_of(request).logs(deployment_id, lines=lines, instance_id=instance_id))


async def deployment_log_patterns(request: Request) -> JSONResponse:
    """Report which failure patterns (oom, cuda_error, model_loading_failure, crash, port_conflict) the logs show."""
    deployment_id = path_uuid(request, "deployment_id", "deployment", _DEPLOYMENTS)
    return json_response(await platform_of(request).log_patterns(deployment_id))


async def engine_logs(request: Request) -> JSONResponse:
    """List the worker log files of deployments on `engine_type`; an engine without deployments lists none."""
    engine_type = str(request.path_params["engine_type"])
    return json_response(await platform_of(request).engine_logs(engine_type))


routes = [
    Route("/api/serving/estimate_model_vram", estimate_model_vram, methods=["POST"]),
    Route("/api/serving/deploy_model", deploy_model, methods=["POST"]),
    Route("/api/serving/deployments", list_deployments, methods=["GET"]),
    Route("/api/serving/deployment/{deployment_id}", get_deployment, methods=["GET"]),
    Route("/api/serving/deployment/{deployment_id}", stop_deployment, methods=["DELETE"]),
    Route("/api/serving/deployment/{deployment_id}/status", get_deployment_status, methods=["GET"]),
    Route("/api/serving/deployment/{deployment_id}/unload", unload_deployment, methods=["POST"]),
    Route("/api/serving/deployment/{deployment_id}/load", load_deployment, methods=["POST"]),
    Route("/api/serving/model_instances", list_model_instances, methods=["GET"]),
    Route("/api/serving/model_instance/{instance_id}", get_model_instance, methods=["GET"]),
    Route("/api/serving/health", health, methods=["GET"]),
    Route("/api/serving/deployment/{deployment_id}/logs", deployment_logs, methods=["GET"]),
    Route("/api/serving/deployment/{deployment_id}/logs/patterns", deployment_log_patterns, methods=["GET"]),
    Route("/api/serving/logs/{engine_type}", engine_logs, methods=["GET"]),
]
