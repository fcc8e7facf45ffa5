"""Async client for the Kamiwaza REST API (serving, models and runtime routes)."""

from ._auth import BearerAuth, PasswordLoginAuth
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
from ._unloaded import UnloadedDeployments

__all__ = [
    "APIError",
    "AuthenticationError",
    "BearerAuth",
    "DeploymentError",
    "InvalidRequestError",
    "KamiwazaClient",
    "KamiwazaError",
    "NotFoundError",
    "PasswordLoginAuth",
    "PlatformConnectionError",
    "PlatformTimeoutError",
    "ResourceError",
    "Timeouts",
    "UnloadedDeployments",
]
