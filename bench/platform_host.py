"""Serve an embedded local platform on 127.0.0.1 for the benchmarks, in a process of its own.

Run as `python bench/platform_host.py --state-dir DIR [--seed-deployments N]`. The
script prints the API base URL on one stdout line once uvicorn accepts
connections, and serves until its stdin closes.

`--latency-ms MS` delays every response by MS milliseconds, to stand in for
the network round trip to a remote cluster.

`--seed-deployments N` writes N DEPLOYED deployments, each with one replica,
straight into the platform's store, so listing them costs no worker process.
The records name a model the platform does not have and replicas without a
process, so they must never be loaded, stopped or generated on.
"""

from __future__ import annotations

import argparse
import socket
import sys
import uuid
from pathlib import Path

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.store import DeploymentRecord, InstanceRecord, utc_now

SEEDED_MODEL_NAME = "bench-llama-3b-instruct"
# A made-up model id: the platform has no such model, which keeps the records inert.
SEEDED_MODEL_ID = "0b5e1c2d-3f4a-4b6c-8d7e-9f0a1b2c3d4e"
# Ports of the made-up replicas start here; nothing listens on them.
SEEDED_FIRST_PORT = 41000


def seed_deployments(platform: LocalPlatform, count: int) -> None:
    """Write `count` DEPLOYED deployments with one DEPLOYED replica each into the platform's store."""
    now = utc_now()
    for index in range(count):
        deployment_id = str(uuid.UUID(int=0x5EED_0000_0000_4000_8000_0000_0000_0000 + index))
        platform.store.insert_deployment(
            DeploymentRecord(
                id=deployment_id,
                model_id=SEEDED_MODEL_ID,
                model_name=SEEDED_MODEL_NAME,
                config_id="7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
                config_name="default",
                engine="transformers",
                served_model_name=SEEDED_MODEL_NAME,
                context_length=8192,
                request={"m_id": SEEDED_MODEL_ID, "starting_copies": 1, "max_concurrent_requests": 4},
                status="DEPLOYED",
                last_error_code=None,
                last_error_message=None,
                last_error_at=None,
                requested_at=now,
                created_at=now,
                deployed_at=now,
                updated_at=now,
            )
        )
        platform.store.insert_instance(
            InstanceRecord(
                id=str(uuid.uuid4()),
                deployment_id=deployment_id,
                replica=0,
                status="DEPLOYED",
                pid=None,
                host="127.0.0.1",
                port=SEEDED_FIRST_PORT + index,
                log_file=str(platform.settings.logs_dir / deployment_id / "replica-0.log"),
                created_at=now,
                deployed_at=now,
                updated_at=now,
            )
        )


class DelayedApp:
    """An ASGI app that passes every HTTP request to `app` after a delay of `delay` seconds."""

    def __init__(self, app: ASGIApp, delay: float) -> None:
        self.app = app
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await anyio.sleep(self.delay)
        await self.app(scope, receive, send)


async def serve(settings: LocalPlatformSettings, seed_count: int, latency_ms: float) -> None:
    async with LocalPlatform(settings) as platform:
        seed_deployments(platform, seed_count)
        # IPPROTO_TCP is passed explicitly because asyncio sets TCP_NODELAY only on sockets
        # whose proto is IPPROTO_TCP. Without it, a response that uvicorn writes in two parts
        # waits for the client's delayed ACK (40 ms on Linux) on a kept-alive connection.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        app: ASGIApp = DelayedApp(platform.app, latency_ms / 1000) if latency_ms > 0 else platform.app
        config = uvicorn.Config(app, lifespan="off", ws="none", log_config=None, access_log=False)
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(server.serve, [listener])
            with anyio.fail_after(30):
                while not server.started:  # noqa: ASYNC110 - uvicorn reports readiness only through this flag
                    await anyio.sleep(0.02)
            print(f"http://127.0.0.1:{port}/api", flush=True)
            # The benchmark closes stdin to stop the platform.
            await anyio.to_thread.run_sync(sys.stdin.read)
            server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local platform on 127.0.0.1 until stdin closes.")
    parser.add_argument("--state-dir", type=Path, required=True, help="folder of the platform's state")
    parser.add_argument("--models-dir", type=Path, help="folder of its models (default: <state-dir>/models)")
    parser.add_argument(
        "--seed-deployments", type=int, default=0, help="DEPLOYED deployments to write into the store"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="milliseconds added before every response (default: 0)"
    )
    args = parser.parse_args()
    settings = LocalPlatformSettings(
        state_dir=args.state_dir, models_dir=args.models_dir or args.state_dir / "models", scan_hf_cache=False
    )
    anyio.run(serve, settings, args.seed_deployments, args.latency_ms)


if __name__ == "__main__":
    main()
