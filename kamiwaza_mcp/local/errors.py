"""Errors of the local platform's operations, each tied to the HTTP status the API returns for it."""

from __future__ import annotations

from typing import Any

__all__ = ["ConflictError", "InsufficientMemoryError", "InvalidInputError", "NotFoundError", "PlatformError"]


class PlatformError(Exception):
    """An operation was rejected; the API returns `status_code` with `{"detail": detail}`."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail: str | dict[str, Any] = detail


class InvalidInputError(PlatformError):
    """The request is well-formed but names something the platform cannot use."""

    status_code = 400


class NotFoundError(PlatformError):
    """The model, config, deployment or instance does not exist."""

    status_code = 404


class ConflictError(PlatformError):
    """The deployment is in a state that does not allow the operation."""

    status_code = 409


class InsufficientMemoryError(PlatformError):
    """The deployment's memory estimate exceeds the free memory.

    The detail is an object: `message`, then every field of the estimate, so a caller
    can show the numbers.
    """

    status_code = 507

    def __init__(self, message: str, estimate: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = {"message": message, **estimate}
