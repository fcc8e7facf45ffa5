"""The per-deployment request limit and its bounded queue, driven by real concurrent tasks."""

from __future__ import annotations

import anyio
import pytest

from kamiwaza_mcp.local.admission import QUEUE_FACTOR, Admission, DeploymentBusyError


async def _hold(admission: Admission, release: anyio.Event, order: list[int], number: int) -> None:
    async with admission.slot():
        order.append(number)
        await release.wait()


async def test_limit_then_queue_then_busy() -> None:
    admission = Admission("d1", limit=2)
    release = anyio.Event()
    order: list[int] = []

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for number in range(2 + 2 * QUEUE_FACTOR):
                group.start_soon(_hold, admission, release, order, number)
                # Each task reaches the queue before the next starts, so the order is fixed.
                await anyio.wait_all_tasks_blocked()
            await anyio.wait_all_tasks_blocked()

            assert admission.in_flight == 2
            assert admission.queued == 2 * QUEUE_FACTOR
            with pytest.raises(DeploymentBusyError, match="busy"):
                async with admission.slot():
                    pass
            release.set()

    assert order == list(range(2 + 2 * QUEUE_FACTOR))
    assert admission.max_in_flight == 2
    assert admission.in_flight == 0
    assert admission.rejected == 1
    assert admission.admitted == 2 + 2 * QUEUE_FACTOR


async def test_cancelled_waiter_leaves_queue() -> None:
    admission = Admission("d1", limit=1)
    release = anyio.Event()
    order: list[int] = []

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(_hold, admission, release, order, 0)
            await anyio.wait_all_tasks_blocked()
            with anyio.CancelScope() as waiter:
                waiter.cancel()
                async with admission.slot():
                    order.append(99)
            assert admission.queued == 0
            release.set()

    assert order == [0]
    assert admission.in_flight == 0


async def test_unlimited_counts_only() -> None:
    admission = Admission("d1", limit=None)
    release = anyio.Event()
    order: list[int] = []

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for number in range(7):
                group.start_soon(_hold, admission, release, order, number)
            await anyio.wait_all_tasks_blocked()
            assert admission.in_flight == 7
            release.set()

    assert admission.max_in_flight == 7
    assert admission.stats()["max_queued_requests"] is None


def test_invalid_limit() -> None:
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        Admission("d1", limit=0)
