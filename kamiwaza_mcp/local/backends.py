"""The seam between the platform and where a deployment's replicas run.

A deployment records its backend when it is created: "process" runs each replica as a
local worker process (Launcher), and "ray" runs them as Ray Serve replicas (RayBackend).
The choice stays with the deployment across unloads, loads and restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

__all__ = ["BackendName", "ReplicaBackend"]

BackendName = Literal["process", "ray"]


class ReplicaBackend(Protocol):
    """A runner of deployments' replicas: it starts and stops them and records their state in the store."""

    def schedule(self, deployment_id: str, model_path: Path | None) -> None:
        """Start the deployment's replicas in the background; `model_path` None fails the launch."""
        ...

    async def stop(self, deployment_id: str, *, grace: float | None = None) -> None:
        """Cancel a launch in progress and stop the deployment's replicas."""
        ...

    async def shutdown(self) -> None:
        """Stop every replica this backend runs, leaving the stored statuses as they are."""
        ...
