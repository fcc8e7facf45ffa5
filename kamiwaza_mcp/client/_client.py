"""The async client for the Kamiwaza REST API.

One `httpx.AsyncClient` carries every request. Paths are relative to the base URL,
which ends in `/api` (for example `https://kamiwaza.example.com/api`); generation goes
to the deployment's OpenAI-compatible route on the same host.
"""

from __future__ import annotations

import json
import logging
import random
import re
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import anyio
import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from ._auth import BearerAuth, PasswordLoginAuth
from ._errors import (
    APIError,
    AuthenticationError,
    DeploymentError,
    InvalidRequestError,
    KamiwazaError,
    NotFoundError,
    PlatformConnectionError,
    PlatformTimeoutError,
    ResourceError,
)
from ._unloaded import UnloadedDeployments, load_by_deploying, unload_by_stopping
from .models import (
    ChatCompletion,
    Completion,
    ContainerLogPatternResponse,
    ContainerLogResponse,
    CreateModelDeployment,
    Deployment,
    Model,
    ModelConfig,
    ModelInstance,
    RayStatus,
)

__all__ = ["KamiwazaClient", "Timeouts"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_NOT_FOUND_DETAIL = re.compile(r"\bnot\s+found\b|\bdoes\s+not\s+exist\b|\bno\s+such\b", re.IGNORECASE)
_RETRY_STATUSES = frozenset({502, 503, 504})
# Names in the `extensions` list of the local platform's `GET /ping` body.
_LOAD_UNLOAD_EXTENSIONS = frozenset({"deployment_load", "deployment_unload"})
_BACKOFF_BASE_SECONDS = 0.25
_BACKOFF_CAP_SECONDS = 4.0
# Maximum length of a platform detail quoted in an error message, because a 500 may carry a whole traceback.
_MAX_DETAIL_CHARS = 500


class Timeouts(BaseModel):
    """Timeouts in seconds, by kind of operation.

    `connect` bounds opening the connection, TLS handshake included. `read` is for
    reads and other short calls, `deploy` for calls that start or stop replicas,
    and `generate` for text generation. Each of these three bounds every wait for
    data of a request of its kind. Added to `connect`, it also bounds the whole
    request, up to the last byte of the response.
    """

    VARIABLES: ClassVar[dict[str, str]] = {
        "connect": "KAMIWAZA_CONNECT_TIMEOUT",
        "read": "KAMIWAZA_READ_TIMEOUT",
        "deploy": "KAMIWAZA_DEPLOY_TIMEOUT",
        "generate": "KAMIWAZA_GENERATE_TIMEOUT",
    }
    """The environment variable that sets each timeout."""

    connect: float = 5.0
    read: float = 30.0
    deploy: float = 120.0
    generate: float = 300.0


class KamiwazaClient:
    """Async client for the serving, models and runtime routes of a Kamiwaza platform.

    Use it as an async context manager, or call `aclose()` when done. `transport`
    lets the embedded local platform be reached in-process (`httpx.ASGITransport`).
    `unloaded` keeps the deployments unloaded on a platform without an unload
    route; it defaults to a store in memory only.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeouts: Timeouts | None = None,
        verify: bool | str | ssl.SSLContext = True,
        max_retries: int = 2,
        unloaded: UnloadedDeployments | None = None,
    ) -> None:
        self._base_url = _normalize_base_url(base_url)
        self._timeouts = timeouts or Timeouts()
        self._max_retries = max_retries
        self._has_load_unload: bool | None = None
        self._unloaded = unloaded if unloaded is not None else UnloadedDeployments()
        if auth is None and api_key:
            auth = BearerAuth(api_key)
        self._auth_hints = _auth_hints(auth)
        self._http = httpx.AsyncClient(
            base_url=self._base_url + "/",
            headers={"Accept": "application/json", "User-Agent": "kamiwaza-mcp"},
            auth=auth,
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(self._timeouts.read, connect=self._timeouts.connect),
        )

    @property
    def base_url(self) -> str:
        """The API base URL, ending in `/api`, without a trailing slash."""
        return self._base_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # Cluster

    async def start_ray(self, address: str | None = None) -> dict[str, Any]:
        """Start the Ray cluster the platform schedules on, or join the one at `address`."""
        params = {"address": address} if address else None
        body = await self._request("POST", "serving/start", params=params, json={}, kind="deploy")
        return body if isinstance(body, dict) else {"result": body}

    async def get_status(self) -> RayStatus:
        body = await self._request("GET", "serving/status")
        if isinstance(body, str):
            return RayStatus(status=body)
        return self._parse(RayStatus, body, "serving/status")

    # Models

    async def list_models(self) -> list[Model]:
        body = await self._request("GET", "models/")
        return self._parse(list[Model], body, "models/")

    async def get_model(self, model_id: str) -> Model:
        path = f"models/{_uuid(model_id, 'model')}"
        return self._parse(Model, await self._request("GET", path), path)

    async def list_model_configs(self, model_id: str) -> list[ModelConfig]:
        path = f"models/{_uuid(model_id, 'model')}/configs"
        return self._parse(list[ModelConfig], await self._request("GET", path), path)

    async def resolve_model(self, reference: str) -> Model:
        """Find a model by UUID, repo id (`Qwen/Qwen3-4B`) or name, case-insensitively.

        Raises NotFoundError when nothing matches and InvalidRequestError, listing the
        candidates, when a name matches more than one model.
        """
        reference = reference.strip()
        if _is_uuid(reference):
            return await self.get_model(reference)

        models = await self.list_models()
        wanted = reference.casefold()
        for field in ("repo_modelId", "name"):
            matches = [m for m in models if (getattr(m, field) or "").casefold() == wanted]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                candidates = ", ".join(f"{m.repo_modelId or m.name} (id {m.id})" for m in matches)
                raise InvalidRequestError(
                    f"model {reference!r} is ambiguous: {candidates}",
                    hint="pass the repo id or the id of the model you mean",
                )
        raise NotFoundError(
            f"no model {reference!r}",
            status_code=404,
            hint="call list_models to see the models the platform has",
        )

    async def select_config(self, model_id: str, config_id: str | None = None) -> ModelConfig:
        """Return the model's configuration `config_id`, or when it is None the default one, else the first.

        Raises NotFoundError, listing the model's configurations, when it has no `config_id`.
        """
        configs = await self.list_model_configs(model_id)
        if not configs:
            raise DeploymentError(
                f"model {model_id} has no deployment configuration",
                hint="create a model configuration on the platform first",
            )
        if config_id is None:
            return next((c for c in configs if c.default), configs[0])

        wanted = _uuid(config_id, "config")
        for config in configs:
            if _is_uuid(config.id) and UUID(config.id) == UUID(wanted):
                return config
        listed = ", ".join(
            f"{c.name or 'unnamed'} ({c.id}{', default' if c.default else ''})" for c in configs
        )
        raise NotFoundError(
            f"model {model_id} has no configuration {wanted}; its configurations: {listed}",
            hint="pass one of the listed ids as config_id, or omit config_id for the default",
        )

    async def deployment_request(
        self,
        model: Model,
        *,
        config_id: str | None = None,
        replicas: int = 1,
        max_concurrent_requests: int | None = None,
        engine_name: str | None = None,
    ) -> CreateModelDeployment:
        """Build the CreateModelDeployment that deploys `model` with the configuration `select_config` picks.

        The estimate and the deploy tools both send the request built here, so an
        estimate describes exactly the deployment that the same arguments create.
        """
        if model.id is None:
            raise APIError(
                f"the platform listed model {model.name!r} without an id",
                hint="deploy it by its id from the platform's dashboard",
            )
        config = await self.select_config(model.id, config_id)
        return CreateModelDeployment(
            m_id=model.id,
            m_config_id=config.id,
            m_file_id=config.m_file_id,
            min_copies=replicas,
            starting_copies=replicas,
            max_concurrent_requests=max_concurrent_requests,
            engine_name=engine_name,
        )

    # Serving

    async def estimate_model_vram(self, request: CreateModelDeployment) -> dict[str, Any]:
        body = await self._request(
            "POST", "serving/estimate_model_vram", json=request.model_dump(mode="json"), kind="deploy"
        )
        if not isinstance(body, dict):
            raise self._shape_error("serving/estimate_model_vram", body)
        return body

    async def deploy_model(self, request: CreateModelDeployment) -> str:
        """Create a deployment and return its id.

        The platform returns the new id, or `false` on legacy releases when the
        deployment could not be created.
        """
        # A deploy is never repeated blindly. The ids that exist before the request
        # let an ambiguous failure (the connection broke after the request went out)
        # be reconciled with the deployment it may have created.
        known = {d.id for d in await self.list_deployments(model_id=request.m_id)}
        try:
            body = await self._request(
                "POST",
                "serving/deploy_model",
                json=request.model_dump(mode="json"),
                kind="deploy",
                retry=False,
            )
        except PlatformConnectionError as exc:
            if not exc.request_sent:
                raise
            return await self._reconcile_deploy(request, known, exc)
        if body is False:
            raise await self._rejected_deploy_error(request, known)
        if isinstance(body, str) and _is_uuid(body):
            return body
        raise self._shape_error("serving/deploy_model", body)

    async def _rejected_deploy_error(
        self, request: CreateModelDeployment, known: set[str]
    ) -> DeploymentError:
        """Build the error for a deploy that returned `false`.

        Legacy releases give no reason in the response, but may have recorded the
        failed deployment with its `last_error_code` and `last_error_message`.
        """
        try:
            created = [d for d in await self.list_deployments(model_id=request.m_id) if d.id not in known]
        except KamiwazaError as exc:
            logger.warning("Could not list deployments to find why deploy failed: %s", exc.message)
            created = []
        reasons = [
            ": ".join(part for part in (d.last_error_code, d.last_error_message) if part)
            for d in created
            if d.last_error_code or d.last_error_message
        ]
        message = f"the platform rejected the deployment of model {request.m_id}"
        if reasons:
            message += f": {reasons[0]}"
        return DeploymentError(
            message,
            detail=reasons[0] if reasons else None,
            path=f"{urlsplit(self._base_url).path}/serving/deploy_model",
            method="POST",
            hint="check the model's files and the cluster's free memory with estimate_model_vram",
        )

    async def _reconcile_deploy(
        self, request: CreateModelDeployment, known: set[str], error: PlatformConnectionError
    ) -> str:
        """Return the deployment an unanswered deploy request created, found by listing the model's deployments.

        Raises DeploymentError when none or several are new, or when the listing fails too.
        """
        unanswered = f"no response arrived after the deploy request for model {request.m_id} was sent ({error.message})"
        check = "call list_deployments before deploying again, so that no duplicate is created"
        try:
            listed = await self.list_deployments(model_id=request.m_id)
        except KamiwazaError as exc:
            raise DeploymentError(
                f"{unanswered}, and listing the model's deployments to find it failed too ({exc.message})",
                hint=check,
            ) from error
        # NOTE: this assumes the platform records a deployment before it responds to the deploy
        # request, as the local platform does. That is unverified on a Kamiwaza cluster, and a
        # record written later would be missed here and reported as none.
        created = [d for d in listed if d.id not in known and d.m_config_id == request.m_config_id]
        if len(created) == 1:
            logger.warning(
                "Deploy request got no response (%s); found the deployment it created: %s",
                error.kind,
                created[0].id,
            )
            return created[0].id
        found = ", ".join(d.id for d in created) if created else "none"
        raise DeploymentError(f"{unanswered}; new deployments of this model: {found}", hint=check) from error

    async def list_deployments(self, model_id: str | None = None) -> list[Deployment]:
        params = {"model_id": _uuid(model_id, "model")} if model_id else None
        body = await self._request("GET", "serving/deployments", params=params)
        return self._parse(list[Deployment], body, "serving/deployments")

    async def get_deployment(self, deployment_id: str) -> Deployment:
        path = f"serving/deployment/{_uuid(deployment_id, 'deployment')}"
        return self._parse(Deployment, await self._request("GET", path), path)

    async def get_deployment_status(self, deployment_id: str) -> str:
        path = f"serving/deployment/{_uuid(deployment_id, 'deployment')}/status"
        body = await self._request("GET", path)
        if not isinstance(body, str):
            raise self._shape_error(path, body)
        return body

    async def stop_deployment(self, deployment_id: str, *, force: bool = False) -> bool:
        path = f"serving/deployment/{_uuid(deployment_id, 'deployment')}"
        # Stopping twice leaves the same state, so the call is retried like a GET.
        body = await self._request("DELETE", path, params={"force": _bool(force)}, kind="deploy", retry=True)
        return bool(body)

    async def list_model_instances(self, deployment_id: str | None = None) -> list[ModelInstance]:
        params = {"deployment_id": _uuid(deployment_id, "deployment")} if deployment_id else None
        body = await self._request("GET", "serving/model_instances", params=params)
        return self._parse(list[ModelInstance], body, "serving/model_instances")

    async def get_model_instance(self, instance_id: str) -> ModelInstance:
        path = f"serving/model_instance/{_uuid(instance_id, 'instance')}"
        return self._parse(ModelInstance, await self._request("GET", path), path)

    async def get_health(self) -> list[dict[str, str]]:
        body = await self._request("GET", "serving/health")
        return self._parse(list[dict[str, str]], body, "serving/health")

    async def get_deployment_logs(
        self, deployment_id: str, *, lines: int | None = None, instance_id: str | None = None
    ) -> ContainerLogResponse:
        """Return the newest lines of the deployment's logs, newest last.

        `lines` and `instance_id` are query parameters of the local platform only, sent
        when given. The Kamiwaza 1.2.0 spec declares neither, so a platform that ignores
        them returns every stored line of every replica; callers trim to `lines` themselves.
        """
        path = f"serving/deployment/{_uuid(deployment_id, 'deployment')}/logs"
        params: dict[str, str] = {}
        if lines is not None:
            params["lines"] = str(lines)
        if instance_id is not None:
            params["instance_id"] = _uuid(instance_id, "instance")
        body = await self._request("GET", path, params=params or None)
        return self._parse(ContainerLogResponse, body, path)

    async def get_deployment_log_patterns(self, deployment_id: str) -> ContainerLogPatternResponse:
        """Return which failure patterns (out of memory, CUDA errors, crashes, ...) the deployment's logs show."""
        path = f"serving/deployment/{_uuid(deployment_id, 'deployment')}/logs/patterns"
        return self._parse(ContainerLogPatternResponse, await self._request("GET", path), path)

    async def supports_load_unload(self) -> bool:
        """Return whether the platform has the deployment load and unload routes.

        Kamiwaza 1.2.0 has none; the embedded local platform lists them in the
        `extensions` of its `GET /ping` body. A platform without `/ping` has none
        either. The result is fetched once and cached.
        """
        if self._has_load_unload is None:
            try:
                body = await self._request("GET", "ping")
            except NotFoundError:
                body = None
            self._has_load_unload = _LOAD_UNLOAD_EXTENSIONS.issubset(_extension_names(body))
        return self._has_load_unload

    async def unload_model(self, deployment_id: str) -> Deployment:
        """Free the deployment's model from memory.

        With the platform's unload route (the local platform), the deployment
        stays, as UNLOADED. Without it (Kamiwaza 1.2.0), the deployment is stopped
        and its creation request kept, so that `load_model` can deploy it again.
        """
        target = _uuid(deployment_id, "deployment")
        if not await self.supports_load_unload():
            return await unload_by_stopping(self, self._unloaded, target)
        path = f"serving/deployment/{target}/unload"
        return self._parse(Deployment, await self._request("POST", path, kind="deploy"), path)

    async def load_model(self, deployment_id: str) -> Deployment:
        """Load an unloaded deployment's model back and return the deployment that serves it.

        With the platform's load route, that is the same deployment. Without it,
        the kept creation request is deployed again, which creates a deployment
        with a new id. A deployment that is already loaded is returned unchanged.
        """
        target = _uuid(deployment_id, "deployment")
        if not await self.supports_load_unload():
            return await load_by_deploying(self, self._unloaded, target)
        path = f"serving/deployment/{target}/load"
        return self._parse(Deployment, await self._request("POST", path, kind="deploy"), path)

    # Runtime (OpenAI-compatible)

    def endpoint_url(self, deployment: Deployment) -> str:
        """Return the deployment's OpenAI-compatible base URL, ending in `/v1`.

        The platform routes in this order. `access_path` wins when it is set.
        Next comes the load-balancer port, when it is neither 0 nor 443.
        Otherwise the URL is the path `/runtime/models/{id}/v1` on the API's host.
        """
        parts = urlsplit(self._base_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if deployment.access_path:
            access = deployment.access_path
            url = access if "://" in access else origin + "/" + access.lstrip("/")
            return url.rstrip("/") if url.rstrip("/").endswith("/v1") else url.rstrip("/") + "/v1"
        if deployment.lb_port not in (0, 443):
            return f"{parts.scheme}://{parts.hostname}:{deployment.lb_port}/v1"
        return f"{origin}/runtime/models/{deployment.id}/v1"

    async def chat_completion(self, deployment: Deployment, body: Mapping[str, Any]) -> ChatCompletion:
        url = self.endpoint_url(deployment) + "/chat/completions"
        data = await self._request("POST", url, json=dict(body), kind="generate", retry=False)
        return self._parse(ChatCompletion, data, _path_of(url))

    async def completion(self, deployment: Deployment, body: Mapping[str, Any]) -> Completion:
        url = self.endpoint_url(deployment) + "/completions"
        data = await self._request("POST", url, json=dict(body), kind="generate", retry=False)
        return self._parse(Completion, data, _path_of(url))

    # Transport

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        kind: str = "read",
        retry: bool | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON body.

        Retries only requests that are safe to repeat (GET by default, or
        `retry=True`), and only after a connection error or a 502/503/504.
        Timeouts are not retried: each attempt already waited the full timeout,
        and repeating it would keep the caller waiting a multiple of it.
        """
        if retry is None:
            retry = method == "GET"
        attempts = 1 + (self._max_retries if retry else 0)
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await anyio.sleep(_backoff_seconds(attempt))
            try:
                response = await self._send(method, path, params=params, json=json, kind=kind)
            except httpx.HTTPError as exc:
                error = _map_transport_error(exc, method, _request_path(exc, path), self._timeouts, kind)
                if attempt < attempts and _is_retryable(exc):
                    logger.warning(
                        "Retrying %s %s after %s (attempt %d)", method, _path_of(path), error.kind, attempt
                    )
                    continue
                raise error from exc
            if response.status_code in _RETRY_STATUSES and attempt < attempts:
                logger.warning("Retrying %s %s after HTTP %d", method, _path_of(path), response.status_code)
                continue
            if _is_html(response) and await self._adopt_api_suffix():
                return await self._request(method, path, params=params, json=json, kind=kind, retry=retry)
            return self._decode(response)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _send(
        self, method: str, path: str, *, params: Mapping[str, str] | None, json: Any, kind: str
    ) -> httpx.Response:
        """Send one attempt, bounded as a whole by the connect timeout plus the timeout of `kind`.

        httpx's read timeout bounds each read on its own, so a body that keeps
        trickling in would never time out. The deadline also covers a login that
        PasswordLoginAuth sends first. Past it, httpx.ReadTimeout is raised.
        """
        seconds = getattr(self._timeouts, kind)
        timeout = httpx.Timeout(seconds, connect=self._timeouts.connect)
        request = self._http.build_request(method, path, params=params, json=json, timeout=timeout)
        with anyio.move_on_after(self._timeouts.connect + seconds):
            return await self._http.send(request)
        raise httpx.ReadTimeout(
            f"no complete response within {self._timeouts.connect + seconds:g} s", request=request
        )

    async def _adopt_api_suffix(self) -> bool:
        """Append `/api` to a base URL that serves the web dashboard, when `/api/ping` returns JSON.

        Returns True when the base URL was changed and the request can be sent again.
        """
        if self._base_url.endswith("/api"):
            return False
        candidate = self._base_url + "/api"
        try:
            probe = await self._http.get(candidate + "/ping")
        except httpx.HTTPError:
            return False
        if probe.is_error or _is_html(probe):
            return False
        logger.warning(
            "The base URL serves HTML; using %s instead. Add /api to KAMIWAZA_BASE_URL.", candidate
        )
        self._base_url = candidate
        self._http.base_url = httpx.URL(candidate + "/")
        return True

    def _decode(self, response: httpx.Response) -> Any:
        request = response.request
        path = request.url.path
        if response.is_error:
            raise _map_status_error(response, self._auth_hints)
        if response.status_code == 204 or not response.content:
            return None
        content_type = response.headers.get("content-type", "")
        if "html" in content_type:
            raise APIError(
                f"{request.method} {path} returned an HTML page instead of JSON",
                status_code=response.status_code,
                method=request.method,
                path=path,
                hint="the base URL must end in /api; add /api to KAMIWAZA_BASE_URL",
            )
        try:
            return response.json()
        except ValueError as exc:
            raise APIError(
                f"{request.method} {path} returned a body that is not valid JSON",
                status_code=response.status_code,
                method=request.method,
                path=path,
                hint="check that KAMIWAZA_BASE_URL points at the Kamiwaza API",
            ) from exc

    def _parse(self, shape: type[_T], body: Any, path: str) -> _T:
        try:
            return TypeAdapter(shape).validate_python(body)
        except ValidationError as exc:
            raise self._shape_error(path, body) from exc

    @staticmethod
    def _shape_error(path: str, body: Any) -> APIError:
        return APIError(
            f"unexpected response from {path}: {type(body).__name__}",
            path=path,
            hint="the platform may run an API version this client does not support (it targets 1.2.0)",
        )


def _normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError(
            f"invalid base URL {base_url!r}",
            hint="set KAMIWAZA_BASE_URL to an http(s) URL ending in /api, such as https://kamiwaza.example.com/api",
        )
    return url


def _extension_names(ping_body: Any) -> set[str]:
    """Return the names in the `extensions` list of a `GET /ping` body; other bodies have none."""
    extensions = ping_body.get("extensions") if isinstance(ping_body, dict) else None
    if not isinstance(extensions, list):
        return set()
    return {name for name in extensions if isinstance(name, str)}


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _uuid(value: str, what: str) -> str:
    """Check that `value` is a UUID before it is put into a URL path."""
    value = value.strip()
    if not _is_uuid(value):
        hints = {
            "model": "call list_models to find the id",
            "deployment": "call list_deployments to find the id",
            "instance": "call list_model_instances to find the id",
            "config": "omit config_id to use the model's default configuration",
        }
        raise InvalidRequestError(
            f"invalid {what} id {value!r}: expected a UUID",
            hint=hints.get(what, "call the matching list tool to find the id"),
        )
    return value


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _path_of(url: str) -> str:
    return urlsplit(url).path or url


def _backoff_seconds(attempt: int) -> float:
    """Return a capped exponential delay with jitter before retry number `attempt` - 1."""
    base = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 2))
    return base * random.uniform(0.5, 1.0)


def _is_html(response: httpx.Response) -> bool:
    return "html" in response.headers.get("content-type", "")


def _request_path(exc: httpx.HTTPError, fallback: str) -> str:
    try:
        return exc.request.url.path
    except RuntimeError:
        return fallback


def _detail_of(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] if "html" not in response.headers.get("content-type", "") else None
    if isinstance(body, dict) and "detail" in body:
        return body["detail"]
    return body


def _detail_text(detail: Any) -> str:
    """Render a platform detail for a message.

    A validation detail becomes `body.m_id: Field required`. An object detail with a
    `message` text, such as the local platform's 507, becomes that message, and any
    other object becomes JSON, never a Python repr.
    """
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        text = str(detail["message"])
    elif isinstance(detail, dict):
        text = json.dumps(detail, default=str)
    elif (
        isinstance(detail, list)
        and detail
        and all(isinstance(item, dict) and "msg" in item for item in detail)
    ):
        parts = []
        for item in detail:
            location = item.get("loc")
            where = ".".join(str(part) for part in location) if isinstance(location, list) else ""
            parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
        text = "; ".join(parts)
    else:
        text = str(detail)
    if len(text) > _MAX_DETAIL_CHARS:
        return text[:_MAX_DETAIL_CHARS] + "…"
    return text


def _redacted(text: str, request: httpx.Request) -> str:
    """Return `text` with the request's bearer token replaced, for a platform that echoes it in a detail."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return text
    return text.replace(token, "[secure]")


def _auth_hints(auth: httpx.Auth | None) -> dict[int, str]:
    """Return the next step after a 401 and after a 403, naming the variables behind `auth`."""
    if isinstance(auth, PasswordLoginAuth):
        return {
            401: "check KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD: the platform rejected the login or its token",
            403: "the user in KAMIWAZA_USERNAME lacks access to this route; use an account that has it",
        }
    if isinstance(auth, BearerAuth):
        return {
            401: "set KAMIWAZA_API_KEY (or KAMIWAZA_API_TOKEN) to a valid, unexpired token",
            403: "the token in KAMIWAZA_API_KEY lacks access to this route; use a token of an account that has it",
        }
    if auth is None:
        login = (
            "the platform requires a login: set KAMIWAZA_API_KEY, or KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD"
        )
        return {401: login, 403: login}
    return {
        401: "the platform rejected the client's credentials; check them",
        403: "the client's credentials lack access to this route",
    }


def _map_status_error(response: httpx.Response, auth_hints: Mapping[int, str]) -> APIError:
    """Translate an HTTP error status into the client's exception tree."""
    method, path, status = response.request.method, response.request.url.path, response.status_code
    detail = _detail_of(response)
    text = f"{method} {path} failed with HTTP {status}"
    if detail:
        text += f": {_redacted(_detail_text(detail), response.request)}"
    common: dict[str, Any] = {"status_code": status, "detail": detail, "method": method, "path": path}

    if status in (401, 403):
        return AuthenticationError(text, hint=auth_hints[status], **common)
    if status == 404 and _is_html(response):
        # The API reports a missing object with a JSON detail. An HTML page comes from
        # a web server or proxy in front of it, so the path is not an API route there.
        return APIError(
            f"{text} (an HTML page, not the API's JSON)",
            hint="check that KAMIWAZA_BASE_URL is the platform's API base URL, ending in /api",
            **common,
        )
    if status == 404 or (status == 500 and isinstance(detail, str) and _NOT_FOUND_DETAIL.search(detail)):
        return NotFoundError(text, hint=_listing_hint(path), **common)
    if status == 409:
        return DeploymentError(
            text, hint="check the deployment's status with get_deployment_status", **common
        )
    if status == 507 and path.endswith("/serving/deploy_model"):
        return ResourceError(
            text,
            hint="lower replicas or max_concurrent_requests, choose a smaller model, "
            "or deploy with force to skip the memory check",
            **common,
        )
    if status in (429, 507):
        return ResourceError(text, hint="the deployment is busy or out of memory; retry later", **common)
    if status == 422:
        return APIError(text, hint="fix the fields named in the detail and call again", **common)
    return APIError(text, hint="check the platform's logs, then retry", **common)


def _listing_hint(path: str) -> str:
    if "/model_instance" in path:
        return "call list_model_instances to see the instances"
    if "/deployment" in path or "/runtime/" in path:
        return "call list_deployments to see the deployments"
    if "/models" in path:
        return "call list_models to see the models"
    return "check the id and call the matching list tool"


def _is_tls_failure(exc: BaseException) -> bool:
    """Return whether `exc`, or an exception it was raised from, is a TLS error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_retryable(exc: httpx.HTTPError) -> bool:
    """Return whether a safe request may be sent again after `exc`.

    Connection failures and connections that broke are retried. Timeouts are
    not (see `_request`), nor TLS failures, which fail the same way again.
    """
    if not isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return False
    return not _is_tls_failure(exc)


def _map_transport_error(
    exc: httpx.HTTPError, method: str, path: str, timeouts: Timeouts, kind: str
) -> KamiwazaError:
    """Translate an httpx exception; the message names the path, never a header."""
    where = f"{method} {_path_of(path)}"
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return PlatformTimeoutError(
            f"{where} timed out connecting (connect timeout {timeouts.connect:g} s)",
            hint=f"check that the platform is reachable, or raise {Timeouts.VARIABLES['connect']}",
            request_sent=False,
        )
    if isinstance(exc, httpx.TimeoutException):
        return PlatformTimeoutError(
            f"{where} timed out waiting for the response ({kind} timeout {getattr(timeouts, kind):g} s)",
            hint=f"the platform is slow or stuck; retry, or raise {Timeouts.VARIABLES[kind]}",
        )
    text = str(exc) or type(exc).__name__
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and _is_tls_failure(exc):
        return PlatformConnectionError(
            f"{where} failed the TLS handshake: {text}",
            request_sent=False,
            hint="give the CA bundle in KAMIWAZA_CA_BUNDLE, or set KAMIWAZA_VERIFY_SSL=false for a test cluster",
        )
    if isinstance(exc, httpx.ConnectError):
        return PlatformConnectionError(
            f"{where} could not connect: {text}",
            request_sent=False,
            hint="check KAMIWAZA_BASE_URL and that the platform is running",
        )
    if isinstance(exc, httpx.NetworkError | httpx.ProtocolError):
        return PlatformConnectionError(
            f"{where} failed: the connection broke before the response was complete ({cause})",
            hint="check the platform, then retry",
        )
    return PlatformConnectionError(f"{where} failed: {cause}", hint="check the platform, then retry")
