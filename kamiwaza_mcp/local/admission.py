"""Admission of proxied requests to a deployment: a limit on requests in flight and a bounded queue.

A deployment with `max_concurrent_requests` N lets N requests run at once. Further
requests wait in first-in, first-out order, up to QUEUE_FACTOR × N of them, and a
request beyond that is rejected at once with DeploymentBusyError (HTTP 429). A
deployment without `max_concurrent_requests` admits every request and only counts them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

__all__ = ["QUEUE_FACTOR", "Admission", "DeploymentBusyError"]

logger = logging.getLogger(__name__)

# Requests that may wait per allowed concurrent request. Four rounds of waiting keep a
# short burst from failing while bounding how long a queued request can wait.
QUEUE_FACTOR = 4


class DeploymentBusyError(Exception):
    """The deployment has `limit` requests in flight and a full queue."""


class Admission:
    """The in-flight count and wait queue of one deployment's proxied requests.

    `max_in_flight` is the highest number of requests that ran at once since the
    platform started, so a caller can check that the limit held.
    """

    def __init__(self, deployment_id: str, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"max_concurrent_requests is {limit}; it must be at least 1, or unset")
        self.deployment_id = deployment_id
        self.limit = limit
        self.max_queued = QUEUE_FACTOR * limit if limit is not None else 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.admitted = 0
        self.rejected = 0
        self._waiters: deque[anyio.Event] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the deployment's request slots for the duration of the block.

        Waits while the deployment is at its limit. Raises DeploymentBusyError when
        the queue is full as well.
        """
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    def stats(self) -> dict[str, Any]:
        """Return the counters shown in the deployment's `health_details`."""
        return {
            "max_concurrent_requests": self.limit,
            "max_queued_requests": self.max_queued if self.limit is not None else None,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "max_in_flight": self.max_in_flight,
            "admitted": self.admitted,
            "rejected_busy": self.rejected,
        }

    async def _acquire(self) -> None:
        if self.limit is None or (self.in_flight < self.limit and not self._waiters):
            self._admit()
            return
        if len(self._waiters) >= self.max_queued:
            self.rejected += 1
            logger.warning(
                "Deployment %s is busy: %d requests in flight and %d queued; rejecting a request",
                self.deployment_id,
                self.in_flight,
                len(self._waiters),
            )
            raise DeploymentBusyError(
                f"deployment {self.deployment_id} is busy: {self.in_flight} requests in flight "
                f"(max_concurrent_requests {self.limit}) and {len(self._waiters)} waiting "
                f"(at most {self.max_queued}); retry later, or deploy with more replicas or a higher "
                "max_concurrent_requests"
            )
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                # The slot was handed over just as this request was cancelled, so pass it on.
                self._release()
            else:
                self._waiters.remove(turn)
            raise

    def _admit(self) -> None:
        self.in_flight += 1
        self.admitted += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _release(self) -> None:
        """Hand the slot to the first waiting request, or free it."""
        if self._waiters:
            self.admitted += 1
            self._waiters.popleft().set()
            return
        self.in_flight -= 1
