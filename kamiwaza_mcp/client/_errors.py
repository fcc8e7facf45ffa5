"""Exceptions raised by the Kamiwaza client.

    KamiwazaError
    ├── PlatformConnectionError    the platform could not be reached (refused, reset, TLS)
    │   └── PlatformTimeoutError   connect or read time ran out
    ├── InvalidRequestError        the request was rejected before it was sent (bad or ambiguous input)
    └── APIError                   the platform returned an error status or an unusable body
        ├── AuthenticationError    401 or 403
        ├── NotFoundError          404, or a 500 whose detail says the object was not found
        ├── ResourceError          429, 507, or a deployment that does not fit in memory
        └── DeploymentError        a deployment could not be created, loaded or served

Every error carries a `hint` with the next step for the caller. No error message
contains a credential: only the method and the URL path of the request are kept.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "DeploymentError",
    "InvalidRequestError",
    "KamiwazaError",
    "NotFoundError",
    "PlatformConnectionError",
    "PlatformTimeoutError",
    "ResourceError",
]


class KamiwazaError(Exception):
    """Base class of every error the client raises."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def kind(self) -> str:
        """The error's class name, as tools report it to the agent."""
        return type(self).__name__

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class PlatformConnectionError(KamiwazaError):
    """The platform could not be reached, or the connection broke mid-request.

    `request_sent` is False only when the request surely never reached the
    platform, because the connection or the TLS handshake failed. Otherwise the
    platform may have acted on it.
    """

    def __init__(self, message: str, *, hint: str | None = None, request_sent: bool = True) -> None:
        super().__init__(message, hint=hint)
        self.request_sent = request_sent


class PlatformTimeoutError(PlatformConnectionError):
    """The platform did not connect or respond within the configured timeout."""


class InvalidRequestError(KamiwazaError):
    """The caller's input cannot be turned into a valid platform request."""


class APIError(KamiwazaError):
    """The platform returned an error status or a body the client cannot use."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        detail: Any = None,
        method: str | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.path = path


class AuthenticationError(APIError):
    """The platform rejected the credentials (401) or the permission (403)."""


class NotFoundError(APIError):
    """The model, deployment or instance does not exist on the platform."""


class ResourceError(APIError):
    """The platform lacks the memory or capacity for the request, or is busy."""


class DeploymentError(APIError):
    """A deployment could not be created, loaded, or asked to generate."""
