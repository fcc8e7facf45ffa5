"""Tests of model folder discovery."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from kamiwaza_mcp.local.catalog import inspect_model_folder, model_id_for_path, scan_models_dir


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
