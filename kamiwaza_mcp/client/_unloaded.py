"""Unload and load on a platform without those routes: stop the deployment, keep its request, deploy it again.

Kamiwaza 1.2.0 has no route that frees a deployment's memory and keeps the
deployment. There, `unload_by_stopping` stops the deployment and keeps the
CreateModelDeployment that recreates it, and `load_by_deploying` deploys that
request again, which creates a deployment with a new id.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
from pydantic import BaseModel, Field, ValidationError

from ._errors import InvalidRequestError, NotFoundError
from .models import CreateModelDeployment, Deployment, DeploymentStatus

if TYPE_CHECKING:
    from ._client import KamiwazaClient

__all__ = ["UnloadedDeployments", "creation_request_of", "load_by_deploying", "unload_by_stopping"]

logger = logging.getLogger(__name__)

# Statuses in which a deployment has or is starting replicas, so loading it changes nothing.
_RUNNING_STATUSES = DeploymentStatus.PENDING | {DeploymentStatus.DEPLOYED}


class UnloadedEntry(BaseModel):
    """One deployment unloaded by stopping it."""

    request: CreateModelDeployment = Field(description="the request that deploys it again")
    reloaded_as: str | None = Field(default=None, description="id of the deployment that load created")


class _StoreFile(BaseModel):
    version: Literal[1] = 1
    # Base URL of the platform, then id of the unloaded deployment.
    platforms: dict[str, dict[str, UnloadedEntry]] = Field(default_factory=dict)


class UnloadedDeployments:
    """The creation requests of deployments unloaded by stopping them, per platform base URL.

    The entries are kept in memory for the server's run and, when `path` is
    given, also written to that JSON file (the server puts it in its state
    folder), so that a restarted server can still load them. An entry stays
    after its load and names the new deployment, so a second load of the same
    deployment creates nothing.
    """

    # NOTE: the file is read once, at construction, and not locked. Two servers that
    # share a state folder each write their own view, and the last write wins.
    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = anyio.Lock()
        self._file = self._read() if path is not None else _StoreFile()

    @property
    def lock(self) -> anyio.Lock:
        """Held while a deployment is loaded, so two concurrent loads deploy it once."""
        return self._lock

    def get(self, platform: str, deployment_id: str) -> UnloadedEntry | None:
        return self._file.platforms.get(platform, {}).get(deployment_id)

    async def keep(self, platform: str, deployment_id: str, request: CreateModelDeployment) -> None:
        """Store the request that deploys `deployment_id` again."""
        self._file.platforms.setdefault(platform, {})[deployment_id] = UnloadedEntry(request=request)
        await self._save()

    async def mark_reloaded(self, platform: str, deployment_id: str, new_id: str) -> None:
        entry = self.get(platform, deployment_id)
        if entry is None:
            return
        entry.reloaded_as = new_id
        await self._save()

    def _read(self) -> _StoreFile:
        assert self._path is not None
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _StoreFile()
        except OSError as exc:
            logger.warning("Cannot read the unloaded-deployments file %s: %s", self._path, exc)
            return _StoreFile()
        try:
            return _StoreFile.model_validate_json(text)
        except ValidationError as exc:
            # The next unload overwrites the unreadable file, so its entries are lost.
            logger.warning("Ignoring unreadable unloaded-deployments file %s: %s", self._path, exc)
            return _StoreFile()

    async def _save(self) -> None:
        if self._path is None:
            return
        try:
            await anyio.to_thread.run_sync(self._write, self._path, self._file.model_dump_json(indent=2))
        except OSError as exc:
            logger.warning(
                "Cannot write the unloaded-deployments file %s (%s); the entries are kept in memory "
                "only, so a restarted server cannot load these deployments",
                self._path,
                exc,
            )

    @staticmethod
    def _write(path: Path, text: str) -> None:
        """Replace the file in one step, so a crash mid-write leaves the old content."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)


def creation_request_of(deployment: Deployment) -> CreateModelDeployment:
    """Rebuild the CreateModelDeployment of `deployment` from the platform's record of it.

    In API 1.2.0 the deployment record (UIModelDeployment) carries every field
    of CreateModelDeployment. Fields the platform left null take their defaults.
    """
    record = deployment.model_dump(mode="json")
    fields = {
        name: record[name]
        for name in CreateModelDeployment.model_fields
        if name in record and record[name] is not None
    }
    # NOTE: the record's lb_port is the port the platform assigned, not the one the request
    # named, so the new deployment requests 0 and the platform picks again. A port that
    # the original request chose is not kept.
    fields["lb_port"] = 0
    return CreateModelDeployment.model_validate(fields)


async def unload_by_stopping(
    client: KamiwazaClient, store: UnloadedDeployments, deployment_id: str
) -> Deployment:
    """Keep the request that recreates the deployment, then stop it; return the stopped deployment."""
    deployment = await client.get_deployment(deployment_id)
    # Kept before the stop, so a stop that succeeds is never left without its request.
    # A kept request of a deployment that is still running does no harm, because
    # load_by_deploying returns a running deployment unchanged.
    await store.keep(client.base_url, deployment_id, creation_request_of(deployment))
    if deployment.status != DeploymentStatus.STOPPED:
        await client.stop_deployment(deployment_id)
    logger.info("Unloaded deployment %s by stopping it; kept its creation request", deployment_id)
    return await client.get_deployment(deployment_id)


async def load_by_deploying(
    client: KamiwazaClient, store: UnloadedDeployments, deployment_id: str
) -> Deployment:
    """Deploy the kept request of an unloaded deployment again and return the new deployment.

    Returns the deployment unchanged when it is running, and the deployment a
    previous load created when there was one. Raises InvalidRequestError when
    the deployment is not running and no request was kept for it.
    """
    async with store.lock:
        entry = store.get(client.base_url, deployment_id)
        if entry is not None and entry.reloaded_as is not None:
            return await client.get_deployment(entry.reloaded_as)

        current = await _deployment_or_none(client, deployment_id)
        if current is not None and current.status in _RUNNING_STATUSES:
            return current
        if entry is None:
            status = current.status if current is not None else "gone"
            raise InvalidRequestError(
                f"cannot load deployment {deployment_id}: it is {status}, and the platform at "
                f"{client.base_url} has no load route (Kamiwaza 1.2.0 has none), so only a deployment "
                "that this server's unload_model stopped can be loaded again",
                hint="call deploy_model to serve the model again",
            )

        new_id = await client.deploy_model(entry.request)
        await store.mark_reloaded(client.base_url, deployment_id, new_id)
    logger.info("Loaded unloaded deployment %s again as the new deployment %s", deployment_id, new_id)
    return await client.get_deployment(new_id)


async def _deployment_or_none(client: KamiwazaClient, deployment_id: str) -> Deployment | None:
    """Return the deployment, or None when the platform no longer has a record of it."""
    try:
        return await client.get_deployment(deployment_id)
    except NotFoundError:
        return None
