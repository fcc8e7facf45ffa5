"""Tests of model folder discovery: the models folder, single folders and the Hugging Face hub cache."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import anyio
import httpx
import pytest

from kamiwaza_mcp.client import KamiwazaClient
from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings
from kamiwaza_mcp.local.catalog import inspect_model_folder, model_id_for_path, scan_hf_cache, scan_models_dir


@pytest.fixture
def models_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A models folder with the tiny model, an org/name copy, a config-only model and two non-models."""
    root = tmp_path / "models"
    shutil.copytree(tiny_model_dir, root / "tiny")
    shutil.copytree(tiny_model_dir, root / "acme" / "tiny-chat")
    (root / "config-only").mkdir()
    shutil.copy(tiny_model_dir / "config.json", root / "config-only" / "config.json")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a model")
    (root / ".cache").mkdir()
    shutil.copy(tiny_model_dir / "config.json", root / ".cache" / "config.json")
    return root


def test_scan_finds_models(models_dir: Path) -> None:
    models = scan_models_dir(models_dir)

    assert [m.path for m in models] == sorted(
        [models_dir / "acme" / "tiny-chat", models_dir / "config-only", models_dir / "tiny"]
    )


def test_scan_skips_broken_folder(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kamiwaza_mcp.local.catalog"):
        models = scan_models_dir(models_dir)

    assert "broken" not in {m.name for m in models}
    assert any("broken" in record.getMessage() for record in caplog.records)


def test_scan_describes_tiny_model(models_dir: Path) -> None:
    tiny = next(m for m in scan_models_dir(models_dir) if m.name == "tiny")
    files = {f.name: f.size for f in tiny.files}

    assert tiny.id == model_id_for_path(models_dir / "tiny")
    assert tiny.repo_id == "tiny"
    assert tiny.family == "llama"
    assert tiny.architecture == "LlamaForCausalLM"
    assert tiny.context_length == 512
    assert tiny.has_safetensors
    assert files["model.safetensors"] == (models_dir / "tiny" / "model.safetensors").stat().st_size
    assert "config.json" in files


def test_scan_two_levels_gives_org_repo_id(models_dir: Path) -> None:
    nested = next(m for m in scan_models_dir(models_dir) if m.name == "tiny-chat")

    assert nested.repo_id == "acme/tiny-chat"


def test_config_only_folder_is_model(models_dir: Path) -> None:
    config_only = inspect_model_folder(models_dir / "config-only")

    assert not config_only.has_safetensors
    assert [f.name for f in config_only.files] == ["config.json"]


def test_model_id_stable_and_distinct(models_dir: Path) -> None:
    first = inspect_model_folder(models_dir / "tiny")
    again = inspect_model_folder(models_dir / "tiny" / ".." / "tiny")
    other = inspect_model_folder(models_dir / "config-only")

    assert first.id == again.id
    assert first.id != other.id


@pytest.mark.parametrize(
    ("name_or_path", "expected"),
    [("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B"), ("/home/me/models/x", "model"), ("", "model")],
    ids=["repo-id", "local-path", "empty"],
)
def test_repo_id_from_name_or_path(tmp_path: Path, name_or_path: str, expected: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": name_or_path, "model_type": "llama"}))

    assert inspect_model_folder(folder).repo_id == expected


def test_inspect_invalid_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")

    with pytest.raises(ValueError, match="not a JSON object"):
        inspect_model_folder(tmp_path)


def test_scan_missing_dir(tmp_path: Path) -> None:
    assert scan_models_dir(tmp_path / "absent") == []


# The Hugging Face hub cache


def _cache_repo(hub: Path, repo_id: str, revision: str, source: Path, *, main: bool = True) -> Path:
    """Lay out `source` as huggingface_hub caches a download: blobs, a snapshot of symlinks, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for number, file in enumerate(sorted(source.iterdir())):
        blob = repo / "blobs" / f"{revision}-{number}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(Path("../..") / "blobs" / blob.name)
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_hf_cache_finds_snapshots(tiny_model_dir: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    snapshot = _cache_repo(hub, "acme/tiny-llama", "abc123", tiny_model_dir)
    _cache_repo(hub, "solo", "def456", tiny_model_dir)
    (hub / "datasets--acme--corpus" / "snapshots" / "1").mkdir(parents=True)
    (hub / "models--acme--no-config" / "snapshots" / "2").mkdir(parents=True)

    models = scan_hf_cache(hub)

    assert [m.repo_id for m in models] == ["acme/tiny-llama", "solo"]
    tiny = models[0]
    assert tiny.name == "tiny-llama"
    assert tiny.path == snapshot.resolve()
    assert tiny.id == model_id_for_path(snapshot)
    assert tiny.has_safetensors
    sizes = {f.name: f.size for f in tiny.files}
    assert sizes["model.safetensors"] == (tiny_model_dir / "model.safetensors").stat().st_size


def test_hf_cache_prefers_refs_main(tiny_model_dir: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    main = _cache_repo(hub, "acme/tiny-llama", "aaa111", tiny_model_dir)
    _cache_repo(hub, "acme/tiny-llama", "bbb222", tiny_model_dir, main=False)

    assert [m.path for m in scan_hf_cache(hub)] == [main.resolve()]

    (hub / "models--acme--tiny-llama" / "refs" / "main").unlink()
    newest = max((hub / "models--acme--tiny-llama" / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime)
    assert [m.path for m in scan_hf_cache(hub)] == [newest.resolve()]


def test_hf_cache_missing(tmp_path: Path) -> None:
    assert scan_hf_cache(tmp_path / "absent") == []


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
async def test_platform_lists_cached_models(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    hub = tmp_path / "hf" / "hub"
    snapshot = _cache_repo(hub, "acme/tiny-llama", "abc123", tiny_model_dir)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(hub if variable == "HF_HUB_CACHE" else hub.parent))
    settings = LocalPlatformSettings(state_dir=tmp_path / "state", models_dir=tmp_path / "models")

    with anyio.fail_after(30):
        async with (
            LocalPlatform(settings) as platform,
            KamiwazaClient(
                "http://kamiwaza.local/api", transport=httpx.ASGITransport(app=platform.app)
            ) as client,
        ):
            models = await client.list_models()
            found = await client.resolve_model("acme/tiny-llama")

    assert [(m.repo_modelId, m.name) for m in models] == [("acme/tiny-llama", "tiny-llama")]
    assert found.id == model_id_for_path(snapshot)
    assert found.m_files[0].storage_location is not None
    assert found.m_files[0].storage_location.startswith(str(snapshot.resolve()))


async def test_hf_cache_scan_can_be_disabled(tiny_model_dir: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    _cache_repo(hub, "acme/tiny-llama", "abc123", tiny_model_dir)
    settings = LocalPlatformSettings(
        state_dir=tmp_path / "state", models_dir=tmp_path / "models", hf_cache_dir=hub, scan_hf_cache=False
    )

    with anyio.fail_after(30):
        async with (
            LocalPlatform(settings) as platform,
            KamiwazaClient(
                "http://kamiwaza.local/api", transport=httpx.ASGITransport(app=platform.app)
            ) as client,
        ):
            assert await client.list_models() == []
