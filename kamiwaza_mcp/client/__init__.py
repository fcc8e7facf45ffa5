"""Async client for the Kamiwaza REST API (serving, models and runtime routes)."""

from ._client import KamiwazaClient, Timeouts
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

__all__ = [
    "APIError",
    "AuthenticationError",
    "DeploymentError",
    "InvalidRequestError",
    "KamiwazaClient",
    "KamiwazaError",
    "NotFoundError",
    "PlatformConnectionError",
    "PlatformTimeoutError",
    "ResourceError",
    "Timeouts",
]
