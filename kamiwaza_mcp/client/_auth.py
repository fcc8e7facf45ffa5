"""Authentication for the Kamiwaza API: a fixed bearer token, or the OAuth2 password login."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator

import anyio
import httpx

logger = logging.getLogger(__name__)

__all__ = ["BearerAuth", "PasswordLoginAuth"]


class BearerAuth(httpx.Auth):
    """Send a fixed token (a personal access token or JWT) as `Authorization: Bearer`."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerAuth(token=[secure])"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class PasswordLoginAuth(httpx.Auth):
    """Log in at `POST {base}/auth/token` with a username and password, and renew once on a 401.

    The access token is kept in memory only. A 401 on a request means the token
    expired or was revoked: the flow logs in again and resends the request once.
    A second 401, or a 401 right after the first login, is returned to the
    caller, which reports it as an AuthenticationError.
    """

    requires_response_body = True

    def __init__(self, token_url: str, username: str, password: str) -> None:
        self._token_url = token_url
        self._username = username
        self._password = password
        self._token: str | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"PasswordLoginAuth(username={self._username!r}, password=[secure])"

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        logged_in_now = False
        if self._token is None:
            async with self._lock:
                if self._token is None:
                    self._token = await self._log_in((yield self._login_request(request)))
                    logged_in_now = True
        self._sign(request)
        response = yield request
        # A 401 right after a login means the account itself is rejected, so a
        # second login would fail the same way.
        if response.status_code != 401 or logged_in_now:
            return

        logger.info("Access token rejected with HTTP 401; logging in again")
        self._token = await self._log_in((yield self._login_request(request)))
        self._sign(request)
        yield request

    def _sign(self, request: httpx.Request) -> None:
        if self._token is not None:
            request.headers["Authorization"] = f"Bearer {self._token}"

    def _login_request(self, request: httpx.Request) -> httpx.Request:
        """Build the login request, bounded by the same timeouts as `request`.

        httpx sets timeouts only on the requests it builds itself, and without
        them a login to a platform that never responds would wait forever.
        """
        form = {"username": self._username, "password": self._password, "grant_type": "password"}
        timeout = request.extensions.get("timeout")
        return httpx.Request(
            "POST",
            self._token_url,
            data=form,
            headers={"Accept": "application/json"},
            extensions={"timeout": timeout} if timeout is not None else None,
        )

    async def _log_in(self, response: httpx.Response) -> str | None:
        """Return the access token from a login response, or None when the login failed.

        A failed login leaves no token, so the request goes out unauthenticated and
        its 401 reaches the caller with the platform's own detail.
        """
        await response.aread()
        if response.status_code != 200:
            logger.warning("Login at %s failed with HTTP %d", response.request.url.path, response.status_code)
            return None
        try:
            token = response.json().get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            logger.warning("Login at %s returned no access_token", response.request.url.path)
            return None
        return token
