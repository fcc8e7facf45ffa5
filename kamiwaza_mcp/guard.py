"""The confirmation guard of the destructive tools.

A destructive tool called without a token acts on nothing: it returns a preview
and a token from `ConfirmationGuard.issue`. Only a second call that carries
that token acts, after `ConfirmationGuard.redeem` accepts it. A token is bound
to one action on one target, is single-use and expires after `ttl_seconds`.
Tokens live in this process's memory, so a server restart invalidates them.

The guard also records when a confirmation form was sent on the 2026-07-28
protocol, where the person's response arrives in a later request, so that a
response that comes after the form's timeout acts on nothing. Those records
live in memory too, so a response that comes after a restart acts on nothing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .client import InvalidRequestError

__all__ = ["DEFAULT_TTL_SECONDS", "ConfirmationError", "ConfirmationGuard"]

DEFAULT_TTL_SECONDS = 300.0

# Expired and used tokens are kept this long after they expire, so a late
# caller learns why its token failed instead of reading "unknown token".
_FORGET_AFTER_SECONDS = 3600.0
# Bounds memory when a caller asks for previews in a loop; the oldest go first.
_MAX_TOKENS = 1024


class ConfirmationError(InvalidRequestError):
    """A destructive call carried a confirmation token that the guard rejects."""


@dataclass
class _Grant:
    action: str
    target: str
    expires_at: float
    used: bool = False


class ConfirmationGuard:
    """Issues and redeems single-use tokens bound to (action, target).

    `clock` returns seconds on a monotonic scale; tests pass a fake one.
    """

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self._ttl = ttl_seconds
        self._clock = clock
        self._grants: dict[str, _Grant] = {}
        self._questions: dict[tuple[str, str], float] = {}

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def issue(self, action: str, target: str) -> str:
        """Return a new token that lets `action` run once on `target`."""
        now = self._clock()
        self._forget_old(now)
        token = secrets.token_urlsafe(24)
        self._grants[token] = _Grant(action=action, target=target, expires_at=now + self._ttl)
        return token

    def redeem(self, token: object, action: str, target: str) -> None:
        """Spend `token` for `action` on `target`, or raise ConfirmationError saying why not.

        A token rejected for another action or target stays valid for its own.
        """
        retry = f"call {action} on {target} without confirmation_token to get a preview and a new token"
        if not isinstance(token, str):
            raise ConfirmationError(
                f"confirmation_token must be the token string a preview call returned, "
                f"not {type(token).__name__} {token!r}",
                hint=retry,
            )
        grant = self._grants.get(token)
        if grant is None:
            raise ConfirmationError(
                "unknown confirmation token: this server never issued it, or it was issued before a restart",
                hint=retry,
            )
        if grant.action != action or grant.target != target:
            raise ConfirmationError(
                f"the confirmation token was issued for {grant.action} on {grant.target}, "
                f"not for {action} on {target}",
                hint=retry,
            )
        if grant.used:
            raise ConfirmationError(
                "the confirmation token was already used; tokens are single-use", hint=retry
            )
        if self._clock() >= grant.expires_at:
            raise ConfirmationError(
                f"the confirmation token expired; tokens are valid for {self._ttl:g} seconds",
                hint=retry,
            )
        grant.used = True

    def record_question(self, action: str, target: str) -> None:
        """Note that a confirmation form for `action` on `target` was sent now."""
        now = self._clock()
        self._questions = {
            key: asked for key, asked in self._questions.items() if now - asked <= _FORGET_AFTER_SECONDS
        }
        while len(self._questions) >= _MAX_TOKENS:
            del self._questions[next(iter(self._questions))]
        self._questions[(action, target)] = now

    def take_question_age(self, action: str, target: str) -> float | None:
        """Return the seconds since the form for `action` on `target` was sent, and forget it.

        Returns None when no form was recorded, or a response already used it,
        so each form counts for one response.
        """
        asked = self._questions.pop((action, target), None)
        return None if asked is None else self._clock() - asked

    def _forget_old(self, now: float) -> None:
        stale = [t for t, g in self._grants.items() if now - g.expires_at > _FORGET_AFTER_SECONDS]
        for token in stale:
            del self._grants[token]
        while len(self._grants) >= _MAX_TOKENS:
            del self._grants[next(iter(self._grants))]
