"""Workers that fail to start: the FAILED deployment's error code and log lines, and the log routes.

Most cases run a stand-in for the worker: a shell script set as the platform's
`python_executable` that writes what a crashing engine writes and exits, so each
case takes well under a second. The out-of-memory case runs the real worker under
an address-space limit, loading a model whose weights cannot fit in it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.client.models import CreateModelDeployment, Deployment
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.catalog import model_id_for_path

API = "http://kamiwaza.local/api"
# The stand-in workers fail at once; the out-of-memory case imports torch first (about 3 s).
DEPLOY_TIMEOUT = 120
SPEC = Path(
    os.environ.get(
        "KAMIWAZA_OPENAPI_SPEC",
        Path(__file__).resolve().parents[3] / "shared" / "reference" / "kamiwaza-openapi-1.2.0.json",
    )
)


def fake_worker(folder: Path, body: str) -> Path:
    """Write an executable shell script that the platform runs in place of the Python interpreter."""
    script = folder / "fake-python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@asynccontextmanager
async def platform_client(
    settings: LocalPlatformSettings,
) -> AsyncIterator[tuple[KamiwazaClient, httpx.AsyncClient]]:
    async with LocalPlatform(settings) as platform:
        transport = httpx.ASGITransport(app=platform.app)
        async with (
            KamiwazaClient(API, transport=transport) as client,
            httpx.AsyncClient(transport=transport, base_url=API + "/") as api,
        ):
            yield client, api


async def deploy_and_wait(client: KamiwazaClient, model_dir: Path, **fields: Any) -> Deployment:
    model_id = model_id_for_path(model_dir)
    config = (await client.list_model_configs(model_id))[0]
    request = CreateModelDeployment(m_id=model_id, m_config_id=config.id, **fields)
    deployment_id = await client.deploy_model(request)
    with anyio.fail_after(DEPLOY_TIMEOUT):
        while True:
            if await client.get_deployment_status(deployment_id) not in ("REQUESTED", "DEPLOYING"):
                return await client.get_deployment(deployment_id)
            await anyio.sleep(0.1)


def check_schema(body: Any, name: str) -> None:
    """Validate a response body against a component schema of the Kamiwaza OpenAPI document."""
    jsonschema = pytest.importorskip("jsonschema")
    if not SPEC.is_file():
        pytest.skip(f"the Kamiwaza OpenAPI document is not at {SPEC}; set KAMIWAZA_OPENAPI_SPEC")
    schema = json.loads(SPEC.read_text(encoding="utf-8"))["components"]["schemas"][name]
    jsonschema.Draft202012Validator(schema).validate(body)


def settings_for(tmp_path: Path, model_dir: Path, **overrides: Any) -> LocalPlatformSettings:
    return LocalPlatformSettings(
        state_dir=tmp_path / "state", models_dir=tmp_path / "models", model_paths=[model_dir], **overrides
    )


@pytest.mark.parametrize(
    ("script", "code", "last_line", "patterns"),
    [
        (
            'echo "Loading weights" >&2\n'
            'echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" >&2\nexit 1',
            "OOM",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            {"oom", "crash"},
        ),
        (
            'echo "Loading weights" >&2\n'
            'echo "RuntimeError: CUDA error: an illegal memory access was encountered" >&2\nexit 1',
            "CONTAINER_EXITED",
            "RuntimeError: CUDA error: an illegal memory access was encountered",
            {"cuda_error", "crash"},
        ),
        (
            'echo "Traceback (most recent call last):" >&2\n'
            'echo "OSError: Error no file named model.safetensors found in directory" >&2\nexit 1',
            "MODEL_LOADING_FAILURE",
            "OSError: Error no file named model.safetensors found in directory",
            {"model_loading_failure", "crash"},
        ),
        (
            'echo "Segmentation fault (core dumped)" >&2\nexit 139',
            "CONTAINER_EXITED",
            "Segmentation fault (core dumped)",
            {"crash"},
        ),
    ],
    ids=["oom", "cuda-error", "load-failure", "segfault"],
)
async def test_failed_start_code_and_logs(
    tmp_path: Path, tiny_model_dir: Path, script: str, code: str, last_line: str, patterns: set[str]
) -> None:
    settings = settings_for(tmp_path, tiny_model_dir, python_executable=str(fake_worker(tmp_path, script)))

    async with platform_client(settings) as (client, api):
        failed = await deploy_and_wait(client, tiny_model_dir)
        logs = (await api.get(f"serving/deployment/{failed.id}/logs")).json()
        found = (await api.get(f"serving/deployment/{failed.id}/logs/patterns")).json()

    assert failed.status == "FAILED"
    assert failed.last_error_code == code
    assert failed.last_error_message is not None
    assert "Last log lines:" in failed.last_error_message
    assert failed.last_error_message.rstrip().endswith(last_line)
    assert [instance.status for instance in failed.instances] == ["FAILED"]

    check_schema(logs, "ContainerLogResponse")
    assert logs["deployment_id"] == failed.id
    assert logs["engine_type"] == "transformers"
    assert logs["capture_active"] is False
    assert last_line in logs["logs"]
    assert logs["logs"][-1].startswith("--- ")
    assert "worker exited with code" in logs["logs"][-1]
    assert logs["total_lines_seen"] == logs["current_lines_stored"] >= len(logs["logs"])

    check_schema(found, "ContainerLogPatternResponse")
    assert {name for name, seen in found["patterns_detected"].items() if seen} == patterns
    assert {"oom", "cuda_error", "model_loading_failure"} <= set(found["patterns_detected"])
    assert any(entry["line"] == last_line for entry in found["failure_lines"])


async def test_startup_timeout(tmp_path: Path, tiny_model_dir: Path) -> None:
    script = fake_worker(tmp_path, 'echo "Loading a very large model" >&2\nexec sleep 60')
    settings = settings_for(tmp_path, tiny_model_dir, python_executable=str(script), worker_start_timeout=1.0)

    async with platform_client(settings) as (client, _api):
        failed = await deploy_and_wait(client, tiny_model_dir)

    assert failed.status == "FAILED"
    assert failed.last_error_code == "STARTUP_TIMEOUT"
    assert failed.last_error_message is not None
    assert "Loading a very large model" in failed.last_error_message
    assert "worker_start_timeout" in failed.last_error_message


async def test_log_routes_bounds_and_listing(tmp_path: Path, tiny_model_dir: Path) -> None:
    lines = "\n".join(f"echo 'line {number}' >&2" for number in range(300))
    settings = settings_for(
        tmp_path, tiny_model_dir, python_executable=str(fake_worker(tmp_path, lines + "\nexit 3"))
    )

    async with platform_client(settings) as (client, api):
        failed = await deploy_and_wait(client, tiny_model_dir)
        default = (await api.get(f"serving/deployment/{failed.id}/logs")).json()
        ten = (await api.get(f"serving/deployment/{failed.id}/logs", params={"lines": 10})).json()
        one = await api.get(
            f"serving/deployment/{failed.id}/logs", params={"instance_id": failed.instances[0].id, "lines": 2}
        )
        too_many = await api.get(f"serving/deployment/{failed.id}/logs", params={"lines": 5001})
        other_instance = await api.get(
            f"serving/deployment/{failed.id}/logs",
            params={"instance_id": "00000000-0000-4000-8000-000000000000"},
        )
        unknown = await api.get("serving/deployment/00000000-0000-4000-8000-000000000000/logs")
        listing = (await api.get("serving/logs/transformers")).json()
        other_engine = (await api.get("serving/logs/llamacpp")).json()

    assert len(default["logs"]) == 200
    assert ten["logs"][:9] == [f"line {number}" for number in range(291, 300)]
    assert ten["logs"][-1].startswith("--- ")
    assert default["total_lines_seen"] == 300 + 2
    assert one.json()["logs"][0] == "line 299"
    assert one.json()["log_file_path"] == failed.instances[0].extra_details["log_file"]
    assert too_many.status_code == 422
    assert other_instance.status_code == 404
    assert unknown.status_code == 404

    check_schema(listing, "ContainerLogListResponse")
    assert listing["engine_type"] == "transformers"
    assert [entry["deployment_id"] for entry in listing["logs"]] == [failed.id]
    entry = listing["logs"][0]
    assert entry["instance_id"] == failed.instances[0].id
    assert int(entry["size_bytes"]) == (await anyio.Path(entry["log_file_path"]).stat()).st_size
    assert entry["deployment_status"] == "FAILED"
    assert other_engine == {"engine_type": "llamacpp", "logs": []}


def _large_llama_shapes(vocab: int, hidden: int, layers: int) -> dict[str, list[int]]:
    """Return the weight shapes of a Llama model with multi-head attention and a 4× MLP."""
    shapes = {
        "model.embed_tokens.weight": [vocab, hidden],
        "lm_head.weight": [vocab, hidden],
        "model.norm.weight": [hidden],
    }
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{prefix}self_attn.{name}.weight"] = [hidden, hidden]
        shapes[f"{prefix}mlp.gate_proj.weight"] = [4 * hidden, hidden]
        shapes[f"{prefix}mlp.up_proj.weight"] = [4 * hidden, hidden]
        shapes[f"{prefix}mlp.down_proj.weight"] = [hidden, 4 * hidden]
        shapes[f"{prefix}input_layernorm.weight"] = [hidden]
        shapes[f"{prefix}post_attention_layernorm.weight"] = [hidden]
    return shapes


def _write_sparse_safetensors(path: Path, shapes: dict[str, list[int]]) -> int:
    """Write float32 zeros of the given shapes as a sparse safetensors file; return the data bytes."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(raw)) + raw)
        # Truncating past the end leaves a hole: gigabytes of size on almost no disk.
        file.truncate(8 + len(raw) + offset)
    return offset


def _write_large_model(source: Path, target: Path, hidden: int, layers: int) -> int:
    """Copy the tiny model's tokenizer with a larger Llama config and zero weights; return the weight bytes."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    heads = hidden // 128
    config.update(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads)  # fmt: skip
    (target / "config.json").write_text(json.dumps(config))
    shapes = _large_llama_shapes(config["vocab_size"], hidden, layers)
    return _write_sparse_safetensors(target / "model.safetensors", shapes)


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the address-space limit (ulimit -v) is set for Linux"
)
async def test_real_worker_out_of_memory(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = tmp_path / "large-llama"
    weight_bytes = _write_large_model(tiny_model_dir, model, hidden=2048, layers=20)
    # The weights alone exceed the 3 GiB address space the worker gets.
    assert weight_bytes > 5 * 1024**3
    limited = fake_worker(tmp_path, f'ulimit -v {3 * 1024 * 1024}\nexec "{sys.executable}" "$@"')
    settings = settings_for(tmp_path, model, python_executable=str(limited))

    async with platform_client(settings) as (client, api):
        failed = await deploy_and_wait(client, model, force_cpu=True, runtime_env={"KAMIWAZA_FORCE": "true"})
        found = (await api.get(f"serving/deployment/{failed.id}/logs/patterns")).json()

    assert failed.status == "FAILED"
    assert failed.last_error_code == "OOM", failed.last_error_message
    assert failed.last_error_message is not None
    assert "OOM: loading" in failed.last_error_message
    assert found["patterns_detected"]["oom"] is True


async def test_deploy_refused_when_it_cannot_fit(tmp_path: Path, tiny_model_dir: Path) -> None:
    script = fake_worker(tmp_path, 'echo "stand-in worker" >&2\nexit 1')
    settings = settings_for(tmp_path, tiny_model_dir, python_executable=str(script))

    async with platform_client(settings) as (client, api):
        model_id = model_id_for_path(tiny_model_dir)
        config = (await client.list_model_configs(model_id))[0]
        # A KV cache for a billion concurrent sequences exceeds any machine's memory.
        body = {
            "m_id": model_id,
            "m_config_id": config.id,
            "max_concurrent_requests": 10**9,
            "starting_copies": 2,
        }
        refused = await api.post("serving/deploy_model", json=body)
        estimate = (await api.post("serving/estimate_model_vram", json=body)).json()
        listed_after_refusal = (await api.get("serving/deployments")).json()
        forced = await api.post(
            "serving/deploy_model", json={**body, "runtime_env": {"KAMIWAZA_FORCE": "true"}}
        )
        listed_after_force = (await api.get("serving/deployments")).json()

    assert refused.status_code == 507
    detail = refused.json()["detail"]
    assert detail["message"].startswith("model tiny-llama does not fit: 2 replica(s) need about ")
    assert "set runtime_env KAMIWAZA_FORCE=true to deploy anyway" in detail["message"]
    for key in (
        "weights_bytes",
        "kv_cache_bytes",
        "overhead_bytes",
        "per_replica_bytes",
        "total_bytes",
        "replicas",
    ):
        assert detail[key] == estimate[key], key
    assert detail["total_bytes"] == 2 * detail["per_replica_bytes"]
    assert detail["fits"] is False
    assert listed_after_refusal == []
    assert forced.status_code == 202
    assert [entry["id"] for entry in listed_after_force] == [forced.json()]
