"""Settings of the embedded local platform."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Self

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LocalPlatformSettings"]

STATE_DIR_ENV = "KAMIWAZA_MCP_STATE_DIR"
MODELS_DIR_ENV = "KAMIWAZA_MCP_MODELS_DIR"


def default_hf_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder as huggingface_hub resolves it.

    `$HF_HUB_CACHE` when set, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    """
    hub_cache = os.environ.get("HF_HUB_CACHE")
    if hub_cache:
        return Path(hub_cache).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _default_state_dir() -> Path:
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_state_dir("kamiwaza-mcp"))


class LocalPlatformSettings(BaseModel):
    """Folders, timeouts and interpreter of the local platform and its workers.

    `state_dir` left as None becomes `$KAMIWAZA_MCP_STATE_DIR` when that is set, else
    the platform's user state folder. `models_dir` left as None becomes
    `$KAMIWAZA_MCP_MODELS_DIR` when that is set, else `<state_dir>/models`.
    `hf_cache_dir` left as None becomes the Hugging Face hub cache (`default_hf_cache_dir`);
    `scan_hf_cache` False leaves the cache out of discovery. The folders are filled in at
    construction, and `state_path` and `models_path` return them typed.
    """

    model_config = ConfigDict(frozen=True)

    state_dir: Path | None = None
    models_dir: Path | None = None
    model_paths: list[Path] = Field(default_factory=list)
    hf_cache_dir: Path | None = None
    scan_hf_cache: bool = True
    worker_start_timeout: float = Field(
        default=180.0, gt=0, description="seconds for a worker to become healthy"
    )
    worker_stop_grace: float = Field(default=10.0, ge=0, description="seconds between SIGTERM and SIGKILL")
    request_timeout: float = Field(default=600.0, gt=0, description="seconds for one proxied generation")
    ray_replica_cpus: float = Field(
        default=1.0, gt=0, description="CPUs that Ray reserves for each replica placed on Ray Serve"
    )
    python_executable: str = Field(default_factory=lambda: sys.executable)
    health_check_interval: float = Field(
        default=2.0, gt=0, description="seconds between /health probes of each running worker"
    )
    health_check_failures: int = Field(
        default=3, ge=1, description="failed /health probes in a row before a worker is killed and replaced"
    )
    restart_limit: int = Field(
        default=3, ge=0, description="restarts of one replica within restart_window before it stays FAILED"
    )
    restart_window: float = Field(default=600.0, gt=0, description="seconds over which restarts are counted")
    restart_delay: float = Field(
        default=1.0, ge=0, description="seconds before a replica's first restart; doubles with each restart"
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Self:
        # The model is frozen, so the defaults are written past __setattr__.
        state_dir = self.state_dir if self.state_dir is not None else _default_state_dir()
        object.__setattr__(self, "state_dir", state_dir)
        if self.models_dir is None:
            override = os.environ.get(MODELS_DIR_ENV)
            models_dir = Path(override).expanduser() if override else state_dir / "models"
            object.__setattr__(self, "models_dir", models_dir)
        if self.hf_cache_dir is None:
            object.__setattr__(self, "hf_cache_dir", default_hf_cache_dir())
        return self

    @property
    def state_path(self) -> Path:
        if self.state_dir is None:
            raise AssertionError("state_dir is filled in by the validator")
        return self.state_dir

    @property
    def models_path(self) -> Path:
        if self.models_dir is None:
            raise AssertionError("models_dir is filled in by the validator")
        return self.models_dir

    @property
    def database_path(self) -> Path:
        return self.state_path / "platform.db"

    @property
    def logs_dir(self) -> Path:
        return self.state_path / "logs"

    @property
    def run_dir(self) -> Path:
        """Folder of the workers' port files, which last only as long as their worker."""
        return self.state_path / "run"
