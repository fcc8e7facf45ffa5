"""The local platform on a real Ray head: start, status, replicas on Ray Serve, unload/load, stop, shutdown.

One platform and one Ray session (a CPU-only head on 127.0.0.1 with 2 CPUs) are
shared by the module, and the tests run in file order. A process deployment is made
before Ray starts, then Ray starts and deployments go to Ray Serve. The platform then
shuts down and restarts on the same state folder. Last, a second platform joins a head
started with `ray start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import pytest_asyncio

pytest.importorskip("ray", reason="Ray is not installed; install it with pip install 'kamiwaza-mcp[ray]'")

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.catalog import model_id_for_path
from kamiwaza_mcp.local.ray_cluster import ray_node_uuid

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

API = "http://kamiwaza.local/api"
# Two tiny-model replicas reached RUNNING on Serve in 6 to 10 s on a 2-core CPU machine
# shared with other test runs; the bound leaves room for a slower CI run.
DEPLOY_TIMEOUT = 120
START_TIMEOUT = 90
STOP_TIMEOUT = 60
HEAD_OPTIONS = {"num_cpus": 2, "object_store_memory": 100 * 1024**2}


class PlatformHost:
    """Run a LocalPlatform in an asyncio task of its own, so a module fixture can share it.

    pytest-asyncio sets a fixture up and tears it down in different tasks, and the
    platform's task group must be exited in the task that entered it. `stop` may be
    called by a test before the fixture's teardown calls it again.
    """

    def __init__(self, settings: LocalPlatformSettings) -> None:
        self._settings = settings
        self._stop = asyncio.Event()
        self._started: asyncio.Future[LocalPlatform] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> LocalPlatform:
        self._task = asyncio.create_task(self._run())
        with anyio.fail_after(START_TIMEOUT):
            return await self._started

    @property
    def platform(self) -> LocalPlatform:
        return self._started.result()

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        with anyio.fail_after(STOP_TIMEOUT):
            await self._task

    async def _run(self) -> None:
        try:
            async with LocalPlatform(self._settings) as platform:
                self._started.set_result(platform)
                await self._stop.wait()
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, broken_model_dir: Path
) -> LocalPlatformSettings:
    root = tmp_path_factory.mktemp("ray-platform")
    return LocalPlatformSettings(
        state_dir=root / "state",
        models_dir=root / "models",
        model_paths=[tiny_model_dir, broken_model_dir],
        worker_start_timeout=DEPLOY_TIMEOUT,
        worker_stop_grace=2.0,
        ray_replica_cpus=0.5,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host(settings: LocalPlatformSettings) -> AsyncIterator[PlatformHost]:
    host = PlatformHost(settings)
    await host.start()
    yield host
    await host.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(host: PlatformHost) -> LocalPlatform:
    return host.platform


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(platform: LocalPlatform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url=API + "/") as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(platform: LocalPlatform) -> AsyncIterator[KamiwazaClient]:
    async with KamiwazaClient(API, transport=httpx.ASGITransport(app=platform.app)) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def process_deployment(client: KamiwazaClient, tiny_model_dir: Path) -> Deployment:
    """A one-replica deployment made before Ray starts, so it runs as a local worker process."""
    deployment_id = await deploy(client, tiny_model_dir)
    return await wait_for_status(client, deployment_id, "DEPLOYED")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def started(api: httpx.AsyncClient, process_deployment: Deployment) -> dict[str, Any]:
    """The body of the first `POST /serving/start`, which starts the shared Ray head."""
    with anyio.fail_after(START_TIMEOUT):
        response = await api.post("serving/start", json={"options": HEAD_OPTIONS})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(client: KamiwazaClient, started: dict[str, Any], tiny_model_dir: Path) -> Deployment:
    """A two-replica deployment of the tiny model on Ray Serve, DEPLOYED."""
    deployment_id = await deploy(client, tiny_model_dir, starting_copies=2, max_concurrent_requests=4)
    return await wait_for_status(client, deployment_id, "DEPLOYED")


async def deploy(client: KamiwazaClient, model_dir: Path, **fields: Any) -> str:
    model_id = model_id_for_path(model_dir)
    config = await client.select_config(model_id)
    return await client.deploy_model(CreateModelDeployment(m_id=model_id, m_config_id=config.id, **fields))


async def wait_for_status(client: KamiwazaClient, deployment_id: str, expected: str) -> Deployment:
    """Poll until the deployment leaves REQUESTED and DEPLOYING, then check it reached `expected`."""
    with anyio.fail_after(DEPLOY_TIMEOUT):
        while True:
            status = await client.get_deployment_status(deployment_id)
            if status not in ("REQUESTED", "DEPLOYING"):
                break
            await anyio.sleep(0.2)
    found = await client.get_deployment(deployment_id)
    assert status == expected, (
        f"{deployment_id} is {status}: {found.last_error_code} {found.last_error_message}"
    )
    return found


async def serve_apps() -> set[str]:
    """Return the names of the Serve applications on the cluster, as Serve itself reports them."""
    from ray import serve

    with anyio.fail_after(30):
        status = await anyio.to_thread.run_sync(serve.status)
    return set(status.applications)


def chat_body(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0, **fields}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def is_file(path: str) -> bool:
    return Path(path).is_file()


def temp_links(ray_dir: Path) -> list[Path]:
    """Return the links in /tmp that point at `ray_dir`, Ray's temp dir as the platform passes it."""
    return [link for link in Path("/tmp").glob("kamiwaza-ray-*") if link.resolve() == ray_dir.resolve()]


def ray_processes(ray_dir: Path) -> list[str]:
    """Describe the live processes of the Ray session kept in `ray_dir` (the real folder).

    A process counts when its command line names the folder or a link to it, or when
    it has a file in it open: Ray's workers and agents rename themselves `ray::<Class>`,
    and they keep the session's log files open.
    """
    markers = [str(ray_dir.resolve()), *(str(link) for link in temp_links(ray_dir))]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            files = [os.readlink(descriptor) for descriptor in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(marker in command for marker in markers) or any(
            path.startswith(marker) for path in files for marker in markers
        ):
            found.append(f"{entry.name}: {command[:120]}")
    return found


# Before Ray


async def test_status_not_running_before_start(client: KamiwazaClient) -> None:
    status = await client.get_status()
    assert status.status == "not running"
    assert status.address is None
    assert [node.node_id for node in status.nodes] == ["local"]


async def test_process_deployment_has_worker(process_deployment: Deployment, platform: LocalPlatform) -> None:
    record = platform.store.get_deployment(process_deployment.id)
    assert record is not None
    assert record.backend == "process"
    assert [instance.node_id for instance in process_deployment.instances] == [None]
    details = process_deployment.instances[0].extra_details or {}
    assert pid_alive(details["pid"])
    assert "ray_node_id" not in details


# Cluster operations


async def test_start_local_head(started: dict[str, Any], settings: LocalPlatformSettings) -> None:
    assert started["status"] == "running"
    assert started["already_running"] is False
    assert started["address"].startswith("127.0.0.1:")
    assert str(settings.state_path / "ray") in started["message"]


async def test_start_again_changes_nothing(
    client: KamiwazaClient, api: httpx.AsyncClient, started: dict[str, Any]
) -> None:
    before = (await api.get("serving/status")).json()

    with anyio.fail_after(START_TIMEOUT):
        again = await client.start_ray()

    after = (await api.get("serving/status")).json()
    assert again["status"] == "running"
    assert again["already_running"] is True
    assert again["address"] == started["address"]
    assert "already running" in again["message"]
    assert [node["node_id"] for node in after["nodes"]] == [node["node_id"] for node in before["nodes"]]


async def test_start_join_option_rejected(api: httpx.AsyncClient, started: dict[str, Any]) -> None:
    response = await api.post(
        "serving/start", params={"address": "127.0.0.1:1"}, json={"options": {"num_cpus": 1}}
    )
    assert response.status_code == 400
    assert "omit them when joining" in response.json()["detail"]


async def test_status_one_node(client: KamiwazaClient, started: dict[str, Any]) -> None:
    status = await client.get_status()
    assert status.status == "running"
    assert status.address == started["address"]
    assert len(status.nodes) == 1
    node = status.nodes[0]
    assert node.alive is True
    assert node.address == "127.0.0.1"
    assert node.cpus == 2
    assert node.gpus == 0
    assert node.memory_bytes > 0
    assert len(node.node_id) == 56
    assert status.resources["CPU"] == 2
    assert status.resources["GPU"] == 0


async def test_ray_files_in_state_dir(started: dict[str, Any], settings: LocalPlatformSettings) -> None:
    ray_dir = settings.state_path / "ray"
    sessions = [path for path in ray_dir.iterdir() if path.name.startswith("session_2")]
    assert len(sessions) == 1
    assert (sessions[0] / "logs").is_dir()
    assert (ray_dir / "auth_token").stat().st_mode & 0o777 == 0o600
    links = temp_links(ray_dir)
    assert len(links) == 1
    # Ray's socket paths must stay below the 107-byte limit of unix socket paths.
    assert len(str(links[0] / sessions[0].name / "sockets" / "plasma_store")) < 107


# Replicas on Ray Serve


async def test_deploy_two_replicas_on_ray(deployment: Deployment, platform: LocalPlatform) -> None:
    record = platform.store.get_deployment(deployment.id)
    assert record is not None
    assert record.backend == "ray"
    assert deployment.status == "DEPLOYED"
    assert deployment.starting_copies == 2
    assert len(deployment.instances) == 2
    assert all(instance.status == "DEPLOYED" for instance in deployment.instances)
    assert f"kamiwaza-{deployment.id}" in await serve_apps()


async def test_instances_carry_node_ids(client: KamiwazaClient, deployment: Deployment) -> None:
    status = await client.get_status()
    ray_node_id = status.nodes[0].node_id
    instances = await client.list_model_instances(deployment.id)
    details = [instance.extra_details or {} for instance in instances]

    assert [instance.node_id for instance in instances] == [ray_node_uuid(ray_node_id)] * 2
    assert [entry["ray_node_id"] for entry in details] == [ray_node_id] * 2
    assert all(instance.host_name == "127.0.0.1" for instance in instances)
    assert len({entry["serve_replica_id"] for entry in details}) == 2
    assert len({entry["pid"] for entry in details}) == 2
    assert all(pid_alive(entry["pid"]) for entry in details)
    assert all(is_file(entry["log_file"]) for entry in details)


async def test_chat_completion_on_ray(client: KamiwazaClient, deployment: Deployment) -> None:
    completion = await client.chat_completion(deployment, chat_body("Say hello."))
    assert completion.model == "tiny-llama"
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 8


async def test_runtime_route_passes_errors(api: httpx.AsyncClient, deployment: Deployment) -> None:
    base = f"http://kamiwaza.local/runtime/models/{deployment.id}/v1"
    models = await api.get(f"{base}/models")
    streaming = await api.post(f"{base}/chat/completions", json=chat_body("hi", stream=True))
    completion = await api.post(
        f"{base}/completions", json={"prompt": "The river", "max_tokens": 3, "temperature": 0}
    )

    assert models.status_code == 200
    assert [entry["id"] for entry in models.json()["data"]] == ["tiny-llama"]
    assert streaming.status_code == 400
    assert "streaming" in streaming.json()["detail"]
    assert completion.status_code == 200
    assert completion.json()["usage"]["completion_tokens"] == 3


async def test_concurrent_requests_reach_both_replicas(
    client: KamiwazaClient, deployment: Deployment
) -> None:
    logs = [Path((instance.extra_details or {})["log_file"]) for instance in deployment.instances]
    before = [log.read_text().count("Generated ") for log in logs]

    with anyio.fail_after(DEPLOY_TIMEOUT):
        results = await asyncio.gather(
            *(client.chat_completion(deployment, chat_body(f"Request {n}", max_tokens=16)) for n in range(6))
        )

    after = [log.read_text().count("Generated ") for log in logs]
    served = [done - start for start, done in zip(before, after, strict=True)]
    assert len(results) == 6
    assert sum(served) == 6
    assert all(count >= 1 for count in served), served


async def test_health_from_serve(client: KamiwazaClient, deployment: Deployment) -> None:
    entries = [entry for entry in await client.get_health() if entry["deployment_id"] == deployment.id]
    assert sorted(entry["instance_id"] for entry in entries) == sorted(i.id for i in deployment.instances)
    for entry in entries:
        assert entry["health"] == "healthy"
        assert entry["instance_status"] == "DEPLOYED"
        assert entry["detail"].startswith("Serve replica ")
        assert "RUNNING" in entry["detail"]


async def test_replicas_reserve_cpus(api: httpx.AsyncClient, deployment: Deployment) -> None:
    status = (await api.get("serving/status")).json()
    assert status["available_resources"]["CPU"] == 1.0


async def test_process_deployment_keeps_worker(
    client: KamiwazaClient, process_deployment: Deployment
) -> None:
    found = await client.get_deployment(process_deployment.id)
    completion = await client.chat_completion(found, chat_body("still local"))
    assert found.status == "DEPLOYED"
    assert found.instances[0].node_id is None
    assert (found.instances[0].extra_details or {})["pid"] == (
        process_deployment.instances[0].extra_details or {}
    )["pid"]
    assert completion.usage.completion_tokens > 0


async def test_unload_load_on_ray(
    client: KamiwazaClient, api: httpx.AsyncClient, deployment: Deployment
) -> None:
    app_name = f"kamiwaza-{deployment.id}"
    first = {(i.extra_details or {})["serve_replica_id"] for i in deployment.instances}

    with anyio.fail_after(STOP_TIMEOUT):
        unloaded = await client.unload_model(deployment.id)
    assert unloaded.status == "UNLOADED"
    assert [instance.status for instance in unloaded.instances] == ["STOPPED", "STOPPED"]
    assert [instance.node_id for instance in unloaded.instances] == [None, None]
    assert app_name not in await serve_apps()
    response = await api.post(f"http://kamiwaza.local/runtime/models/{deployment.id}/v1/completions", json={})
    assert response.status_code == 409

    loading = await client.load_model(deployment.id)
    assert loading.status == "DEPLOYING"
    reloaded = await wait_for_status(client, deployment.id, "DEPLOYED")
    again = {(i.extra_details or {})["serve_replica_id"] for i in reloaded.instances}
    assert [i.id for i in reloaded.instances] == [i.id for i in deployment.instances]
    assert len(again) == 2
    assert again.isdisjoint(first)
    assert app_name in await serve_apps()
    assert (await client.chat_completion(reloaded, chat_body("again"))).usage.completion_tokens > 0


async def test_stop_frees_replicas(
    client: KamiwazaClient, api: httpx.AsyncClient, deployment: Deployment, tiny_model_dir: Path
) -> None:
    deployment_id = await deploy(client, tiny_model_dir)
    deployed = await wait_for_status(client, deployment_id, "DEPLOYED")
    pids = [(i.extra_details or {})["pid"] for i in deployed.instances]
    assert (await api.get("serving/status")).json()["available_resources"]["CPU"] == 0.5

    with anyio.fail_after(STOP_TIMEOUT):
        assert await client.stop_deployment(deployment_id) is True

    stopped = await client.get_deployment(deployment_id)
    assert stopped.status == "STOPPED"
    assert [instance.status for instance in stopped.instances] == ["STOPPED"]
    assert f"kamiwaza-{deployment_id}" not in await serve_apps()
    assert (await api.get("serving/status")).json()["available_resources"]["CPU"] == 1.0
    with anyio.fail_after(STOP_TIMEOUT):
        while True:
            if not any(pid_alive(pid) for pid in pids):
                break
            await anyio.sleep(0.2)


async def test_broken_model_fails_on_ray(
    client: KamiwazaClient, deployment: Deployment, broken_model_dir: Path
) -> None:
    deployment_id = await deploy(client, broken_model_dir)
    failed = await wait_for_status(client, deployment_id, "FAILED")

    assert failed.last_error_code == "MODEL_LOADING_FAILURE"
    assert failed.last_error_message is not None
    assert "ModelLoadError" in failed.last_error_message
    assert [instance.status for instance in failed.instances] == ["FAILED"]
    assert f"kamiwaza-{deployment_id}" not in await serve_apps()


# Shutdown and restart


async def test_shutdown_leaves_no_ray_process(
    host: PlatformHost,
    deployment: Deployment,
    settings: LocalPlatformSettings,
    capfd: pytest.CaptureFixture[str],
) -> None:
    ray_dir = settings.state_path / "ray"
    replica_pids = [(i.extra_details or {})["pid"] for i in (deployment.instances)]
    assert ray_processes(ray_dir)

    await host.stop()

    assert ray_processes(ray_dir) == []
    assert not any(pid_alive(pid) for pid in replica_pids)
    # The stdio MCP server's stdout carries JSON-RPC only, so Ray must print nothing there.
    assert capfd.readouterr().out == ""


async def test_restart_keeps_backend_choice(
    settings: LocalPlatformSettings, deployment: Deployment, process_deployment: Deployment
) -> None:
    async with (
        LocalPlatform(settings) as platform,
        KamiwazaClient(API, transport=httpx.ASGITransport(app=platform.app)) as client,
    ):
        on_ray = await client.get_deployment(deployment.id)
        restored = await wait_for_status(client, process_deployment.id, "DEPLOYED")
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url=API + "/") as api:
            load = await api.post(f"serving/deployment/{deployment.id}/load")
        ray_record = platform.store.get_deployment(deployment.id)
        process_record = platform.store.get_deployment(process_deployment.id)

    assert on_ray.status == "UNLOADED"
    assert ray_record is not None
    assert ray_record.backend == "ray"
    assert load.status_code == 409
    assert "start Ray" in load.json()["detail"]
    assert process_record is not None
    assert process_record.backend == "process"
    assert restored.instances[0].node_id is None


# Joining a cluster the platform did not start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def session_pids(root: Path) -> list[int]:
    """Return the pids of the processes that `ray_processes` finds for `root`."""
    return [int(line.split(":", 1)[0]) for line in ray_processes(root)]


async def stop_external_head(root: Path) -> None:
    """Stop the processes of the head started with `ray start` in `root`: SIGTERM, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        with anyio.move_on_after(5):
            while True:
                if not session_pids(root):
                    break
                await anyio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="module")
async def external_head(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Path]]:
    """A Ray head on 127.0.0.1 started with `ray start`, with token auth; yields its address and temp dir.

    Its temp dir is a short folder in /tmp, because Ray's unix socket paths have at
    most 107 bytes and pytest's tmp_path is deep.
    """
    root = Path(tempfile.mkdtemp(prefix="kmcp-join-", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
        "--node-ip-address=127.0.0.1", "--num-cpus=1", "--include-dashboard=false",
        f"--temp-dir={root / 'ray'}", "--disable-usage-stats",
    ]  # fmt: skip
    try:
        with anyio.fail_after(START_TIMEOUT):
            started = await anyio.run_process(command, env=env, check=False)
        assert started.returncode == 0, started.stderr.decode()[-2000:]
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        yield f"127.0.0.1:{port}", root / "ray"
    finally:
        await stop_external_head(root / "ray")
        shutil.rmtree(root, ignore_errors=True)


async def test_join_external_cluster(
    external_head: tuple[str, Path], settings: LocalPlatformSettings, tiny_model_dir: Path
) -> None:
    address, ray_dir = external_head
    joined_settings = settings.model_copy(update={"state_dir": settings.state_path.parent / "joined"})
    async with (
        LocalPlatform(joined_settings) as platform,
        KamiwazaClient(API, transport=httpx.ASGITransport(app=platform.app)) as client,
    ):
        with anyio.fail_after(START_TIMEOUT):
            joined = await client.start_ray(address)
        status = await client.get_status()
        deployment_id = await deploy(client, tiny_model_dir)
        deployed = await wait_for_status(client, deployment_id, "DEPLOYED")
        completion = await client.chat_completion(deployed, chat_body("joined"))
        app_name = f"kamiwaza-{deployment_id}"
        running_apps = await serve_apps()

    assert joined["status"] == "running"
    assert "Joined the Ray cluster" in joined["message"]
    assert [node.cpus for node in status.nodes] == [1]
    assert deployed.instances[0].node_id == ray_node_uuid(status.nodes[0].node_id)
    assert completion.usage.completion_tokens > 0
    assert app_name in running_apps
    # Leaving a joined cluster deletes the platform's application and keeps the cluster.
    with anyio.fail_after(STOP_TIMEOUT):
        while True:
            processes = ray_processes(ray_dir)
            if not any("ServeReplica" in line for line in processes):
                break
            await anyio.sleep(0.2)
    assert any("gcs_server" in line for line in processes)
