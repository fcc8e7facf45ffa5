"""Errors of the local platform's operations, each tied to the HTTP status the API returns for it."""

from __future__ import annotations

__all__ = ["ConflictError", "InvalidInputError", "NotFoundError", "PlatformError"]


class PlatformError(Exception):
    """An operation was rejected; the API returns `status_code` with `{"detail": detail}`."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInputError(PlatformError):
    """The request is well-formed but names something the platform cannot use."""

    status_code = 400


class NotFoundError(PlatformError):
    """The model, config, deployment or instance does not exist."""

    status_code = 404


class ConflictError(PlatformError):
    """The deployment is in a state that does not allow the operation."""

    status_code = 409
