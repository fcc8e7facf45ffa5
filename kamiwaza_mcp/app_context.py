"""The state the server's lifespan opens once and every tool call reads."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from .client import KamiwazaClient
from .guard import ConfirmationGuard
from .policy import Policy

__all__ = ["AppContext", "current_app", "request_app"]


@dataclass(frozen=True)
class AppContext:
    """Shared state of one server run, read by tools from `ctx.request_context.lifespan_context`."""

    client: KamiwazaClient
    guard: ConfirmationGuard
    policy: Policy = field(default_factory=Policy)
    poll_interval_seconds: float = 0.5


# Set for the duration of each request by the server's middleware. Static
# resources and completion handlers get no Context from the SDK, so they read
# the lifespan state from here.
request_app: ContextVar[AppContext] = ContextVar("request_app")


def current_app() -> AppContext:
    """Return the state of the server run that handles the current request.

    Raises LookupError outside a request.
    """
    return request_app.get()
