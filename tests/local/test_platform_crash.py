"""A platform process killed with SIGKILL in the middle of a deploy, started again on the same state.

The first run serves one deployment, stops another and is killed while a third is
starting its worker. The second run must find all three records as they were,
bring back the two that were meant to serve (no duplicates, no adopted workers of
the killed run), and free a worker's memory on unload.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from local_platform_process import (
    pid_alive,
    resident_bytes,
    run_platform,
    stop_platform,
    tree_resident_bytes,
    worker_pids,
)

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment
from kamiwaza_mcp.local.catalog import model_id_for_path

pytestmark = pytest.mark.slow

DEPLOY_TIMEOUT = 120
# Orphaned workers notice their parent is gone within 1 s and shut down within 10 s.
ORPHAN_TIMEOUT = 30


async def deploy(client: KamiwazaClient, model_dir: Path) -> str:
    model_id = model_id_for_path(model_dir)
    config = (await client.list_model_configs(model_id))[0]
    return await client.deploy_model(CreateModelDeployment(m_id=model_id, m_config_id=config.id))


async def wait_until(client: KamiwazaClient, deployment_id: str, check: Any) -> Deployment:
    with anyio.fail_after(DEPLOY_TIMEOUT):
        while True:
            found = await client.get_deployment(deployment_id)
            if check(found):
                return found
            await anyio.sleep(0.1)


def pid_of(deployment: Deployment) -> int | None:
    details = deployment.instances[0].extra_details if deployment.instances else None
    return details.get("pid") if details else None


def chat(content: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0}


def stored_rows(database: Path) -> tuple[dict[str, str], list[tuple[str, str, int | None]]]:
    """Read the deployment statuses and the instances straight from the killed platform's database."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        statuses = dict(connection.execute("SELECT id, status FROM deployments").fetchall())
        instances = connection.execute("SELECT deployment_id, status, pid FROM instances").fetchall()
    return statuses, instances


async def wait_gone(pids: list[int]) -> None:
    with anyio.fail_after(ORPHAN_TIMEOUT):
        while True:
            if not any(pid_alive(pid) for pid in pids):
                return
            await anyio.sleep(0.2)


async def test_sigkill_mid_deploy_then_restart(tmp_path: Path, tiny_model_dir: Path) -> None:
    state, log, token = tmp_path / "state", tmp_path / "platform.log", secrets.token_urlsafe(16)

    # First run: one deployment serving, one stopped, one starting when the process is killed.
    async with run_platform(state, [tiny_model_dir], token, log) as first:
        async with KamiwazaClient(first.base_url, api_key=token) as client:
            serving = await deploy(client, tiny_model_dir)
            old_serving = await wait_until(client, serving, lambda d: d.status == "DEPLOYED")
            stopped = await deploy(client, tiny_model_dir)
            with anyio.fail_after(30):
                await client.stop_deployment(stopped, force=True)
            starting = await deploy(client, tiny_model_dir)
            old_starting = await wait_until(client, starting, lambda d: pid_of(d) is not None)
            assert old_starting.status == "DEPLOYING"
        first.process.kill()
        with anyio.fail_after(30):
            assert await first.process.wait() == -9

    statuses, instances = stored_rows(state / "platform.db")
    assert statuses == {serving: "DEPLOYED", stopped: "STOPPED", starting: "DEPLOYING"}
    # The pid of the starting worker was committed as soon as it was spawned.
    assert (starting, "DEPLOYING", pid_of(old_starting)) in instances
    old_pids = [pid for pid in (pid_of(old_serving), pid_of(old_starting)) if pid is not None]

    # Second run on the same state folder.
    async with run_platform(state, [tiny_model_dir], token, log) as second:
        async with KamiwazaClient(second.base_url, api_key=token) as client:
            listed = {found.id: found for found in await client.list_deployments()}
            assert set(listed) == {serving, stopped, starting}
            assert listed[stopped].status == "STOPPED"
            for deployment_id in (serving, starting):
                assert listed[deployment_id].status in ("DEPLOYING", "DEPLOYED")
                assert len(listed[deployment_id].instances) == 1
            assert listed[serving].instances[0].id == old_serving.instances[0].id
            assert listed[starting].instances[0].id == old_starting.instances[0].id

            back = {
                deployment_id: await wait_until(client, deployment_id, lambda d: d.status == "DEPLOYED")
                for deployment_id in (serving, starting)
            }
            await wait_gone(old_pids)
            for deployment in back.values():
                new_pid = pid_of(deployment)
                assert new_pid is not None
                assert new_pid not in old_pids
                # Exactly one worker process serves the replica: no orphan of the killed run, no duplicate.
                assert worker_pids(deployment.instances[0].id) == [new_pid]
                assert (await client.chat_completion(deployment, chat("back"))).usage.completion_tokens > 0
            assert len(await client.list_deployments()) == 3

            # Unloading ends the worker process and gives its memory back. The platform's
            # process tree is measured rather than MemAvailable, which other processes on a
            # shared machine move by hundreds of MiB, and in which the worker's file-backed
            # pages (shared libraries) stay cached after it exits.
            pid = pid_of(back[serving])
            assert pid is not None
            private = resident_bytes(pid, "RssAnon")
            tree_before = tree_resident_bytes(second.process.pid)
            with anyio.fail_after(30):
                unloaded = await client.unload_model(serving)
            tree_after = tree_resident_bytes(second.process.pid)
            assert unloaded.status == "UNLOADED"
            assert not pid_alive(pid)
            assert not await anyio.Path(f"/proc/{pid}").exists()
            # The tiny model's worker keeps the Python runtime, torch and transformers in memory.
            assert private > 100 * 1024**2
            freed = tree_before - tree_after
            assert freed > private // 2, f"worker RssAnon {private} bytes; the tree shrank by {freed} bytes"

        last_pid = pid_of(back[starting])
        assert await stop_platform(second.process) == 0
        assert last_pid is not None
        assert not pid_alive(last_pid)
