"""The class Ray Serve runs as each replica of a deployment placed on Ray.

A replica loads the model with the same engine code as a worker process and serves the
worker's OpenAI-compatible app in memory, so both kinds of replica respond alike. Ray
imports this module in its worker processes, so it imports no more of the package than
the engine and the worker app.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from .engines import create_engine
from .worker import build_app

__all__ = ["EngineReplica"]

logger = logging.getLogger(__name__)

# Serve writes the replica's log file through the handlers of this logger.
_SERVE_LOGGER = "ray.serve"
_PACKAGE_LOGGER = "kamiwaza_mcp"


class EngineReplica:
    """One loaded model behind the worker's ASGI app, called through a Serve deployment handle.

    A ModelLoadError or EngineOutOfMemoryError raised while loading fails the replica's
    constructor, and Serve reports the traceback in the deployment's status message.
    """

    def __init__(self, engine: str, model_path: str, served_model_name: str, device: str) -> None:
        _log_to_replica_file()
        loaded = create_engine(engine, Path(model_path), device=device)
        loaded.load()
        app = build_app(loaded, served_model_name)
        # The base URL is never resolved: ASGITransport hands requests to the app in memory.
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica")
        logger.info("Replica of %s is ready with the %s engine on %s", model_path, engine, device)

    async def forward(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, str | None, bytes]:
        """Send one request to the app and return its status code, content type and body."""
        response = await self._client.request(
            method, path, content=body, headers={"content-type": content_type}
        )
        return response.status_code, response.headers.get("content-type"), response.content

    async def check_health(self) -> None:
        """Raise unless the app's `/health` returns 200; Serve calls this periodically."""
        response = await self._client.get("/health")
        if response.status_code != 200:
            raise RuntimeError(f"GET /health returned HTTP {response.status_code}")


def _log_to_replica_file() -> None:
    """Send the package's log records (model loading, one line per generation) to the replica's log file.

    Ray's workers log only warnings of other loggers, to a per-worker file, so without
    this the replica log that the platform reports would lack the engine's lines.
    """
    package_logger = logging.getLogger(_PACKAGE_LOGGER)
    package_logger.handlers = list(logging.getLogger(_SERVE_LOGGER).handlers)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False
