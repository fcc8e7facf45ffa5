"""The state the server's lifespan opens once and every tool call reads."""

from __future__ import annotations

from dataclasses import dataclass

from .client import KamiwazaClient
from .guard import ConfirmationGuard

__all__ = ["AppContext"]


@dataclass(frozen=True)
class AppContext:
    """Shared state of one server run, read by tools from `ctx.request_context.lifespan_context`."""

    client: KamiwazaClient
    guard: ConfirmationGuard
    poll_interval_seconds: float = 0.5
