"""Request and response bodies of the local platform, in the shapes of Kamiwaza REST API 1.2.0.

The names and fields follow the OpenAPI schemas `CreateModelDeployment`,
`UIModelDeployment`, `ModelInstance`, `Model`, `ModelFile`, `ModelConfig`,
`ModelSearchRequest` and `ModelSearchResponse`. Fields the local platform has no
value for are left at the spec's default. Request bodies ignore unknown fields,
as the platform's own server does.
"""

from __future__ import annotations

from typing import Any, Self
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

__all__ = [
    "ContainerLogListResponse",
    "ContainerLogPatternResponse",
    "ContainerLogResponse",
    "CreateModelDeployment",
    "Model",
    "ModelConfig",
    "ModelFile",
    "ModelInstance",
    "ModelSearchRequest",
    "ModelSearchResponse",
    "ModelSearchResult",
    "RegisterModelRequest",
    "StartServingRequest",
    "UIModelDeployment",
]


class CreateModelDeployment(BaseModel):
    """Body of `POST /serving/deploy_model` and `POST /serving/estimate_model_vram`.

    The local platform starts `starting_copies` workers, so both copy counts must be
    at least 1: it has no scale-to-zero for `min_copies` 0 to ask for.
    """

    m_id: UUID
    m_config_id: UUID
    m_file_id: UUID | None = None
    engine_name: str | None = None
    duration: int | None = None
    min_copies: int = Field(default=1, ge=1)
    starting_copies: int = Field(default=1, ge=1)
    max_copies: int | None = Field(default=None, ge=1)
    location: str | None = None
    lb_port: int = 0
    autoscaling: bool = False
    force_cpu: bool = False
    node_resource_type: str | None = None
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    vram_allocation: float | None = Field(default=None, ge=0)
    gpu_allocation: float | None = Field(default=None, ge=0)
    active_req_per_replica: int = 20
    m_version: str | None = None
    engine: str = "vllm"
    container: str = "kamiwaza"
    deployment_target: str | None = None
    runtime_env: dict[str, str | None] | None = None

    @model_validator(mode="after")
    def _check_copies(self) -> Self:
        if self.min_copies > self.starting_copies:
            raise ValueError(
                f"min_copies ({self.min_copies}) is more than starting_copies ({self.starting_copies}); "
                "raise starting_copies or lower min_copies"
            )
        if self.max_copies is not None and self.max_copies < self.starting_copies:
            raise ValueError(
                f"max_copies ({self.max_copies}) is less than starting_copies ({self.starting_copies}); "
                "raise max_copies or lower starting_copies"
            )
        return self


class ModelInstance(BaseModel):
    """One replica of a deployment: a worker process on 127.0.0.1."""

    id: str
    deployment_id: str
    deployed_at: str
    container_id: str | None = None
    node_id: str | None = None
    host_name: str | None = None
    files_synced: bool | None = None
    listen_port: int | None = None
    status: str | None = "UNINITIALIZED"
    extra_details: dict[str, Any] | None = None


class UIModelDeployment(BaseModel):
    """A deployment with its instances, as `GET /serving/deployment/{id}` returns it."""

    id: str
    m_id: str
    m_file_id: str | None = None
    m_config_id: str
    engine_name: str | None = None
    duration: int | None = None
    min_copies: int = 1
    starting_copies: int = 1
    max_copies: int | None = None
    location: str | None = None
    lb_port: int = 0
    autoscaling: bool = False
    force_cpu: bool = False
    node_resource_type: str | None = None
    max_concurrent_requests: int | None = None
    vram_allocation: float | None = None
    gpu_allocation: float | None = None
    active_req_per_replica: int = 20
    m_version: str | None = None
    engine: str = "vllm"
    container: str = "kamiwaza"
    deployment_target: str | None = None
    runtime_env: dict[str, str | None] | None = None
    requested_at: str
    deployed_at: str | None = None
    serve_path: str | None = None
    access_path_prefix: str | None = None
    access_path: str | None = None
    single_node_mode: bool | None = True
    status: str = "UNINITIALIZED"
    last_error_code: str | None = None
    last_error_message: str | None = None
    last_error_at: str | None = None
    health_details: dict[str, Any] | None = None
    features: list[str] = Field(default_factory=list)
    instances: list[ModelInstance] = Field(default_factory=list)
    created_at: str
    m_name: str | None = None
    m_config_name: str | None = None
    canonical_model_id: str | None = None
    context_window: int | None = None
    capabilities: list[str] = Field(default_factory=list)
    host_ip: str | None = None


class ModelFile(BaseModel):
    """One file of a model folder."""

    name: str
    size: int | None = None
    storage_type: str | None = "file"
    storage_host: str | None = "localhost"
    storage_location: str | None = None
    id: str | None = None
    hub: str | None = None
    model_id: str | None = None
    download: bool | None = None
    is_downloading: bool | None = False
    download_percentage: int | None = None


class Model(BaseModel):
    """A model the platform can deploy. Locally, a Hugging Face folder on disk."""

    id: str | None = None
    name: str
    repo_modelId: str | None = None
    modelfamily: str | None = None
    purpose: str | None = None
    version: str | None = None
    author: str | None = None
    source_repository: str | None = None
    sha_repository: str | None = None
    hub: str | None = None
    description: str | None = None
    quantization_details: str | None = None
    private: bool | None = None
    m_files: list[ModelFile] = Field(default_factory=list)
    modelcard: str | None = None
    default_config: dict[str, Any] | None = None
    hosted: str = "local"
    created_timestamp: str | None = None
    modified_timestamp: str | None = None
    files_being_downloaded: list[Any] = Field(default_factory=list)


class ModelConfig(BaseModel):
    """A deployment configuration of a model. Each local model has one, named "default"."""

    id: str
    m_id: str
    m_file_id: str | None = None
    name: str | None = None
    default: bool
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    system_config: dict[str, Any] = Field(default_factory=dict)
    kamiwaza_version: str | None = None
    created_at: str
    modified_at: str | None = None


class ModelSearchRequest(BaseModel):
    """Body of `POST /models/search/`. The local platform searches only its own models."""

    query: str
    hubs_to_search: list[str] | None = None
    exact: bool | None = False
    limit: int | None = Field(default=100, ge=1)


class ModelSearchResult(BaseModel):
    id: str | None = None
    model: Model


class ModelSearchResponse(BaseModel):
    results: list[ModelSearchResult]
    total_results: int
    hub_error: str | None = None
    hub_results_partial: bool = False
    local_results_only: bool = True


class RegisterModelRequest(BaseModel):
    """Body of `POST /models/register`, a route only the local platform has."""

    path: str = Field(min_length=1, description="absolute path of a Hugging Face model folder")


class StartServingRequest(BaseModel):
    """Body of `POST /serving/start`."""

    runtime_env: dict[str, Any] | None = None
    options: dict[str, Any] | None = None


class ContainerLogResponse(BaseModel):
    """Body of `GET /serving/deployment/{id}/logs`: the newest lines of the deployment's worker logs."""

    deployment_id: str
    engine_type: str | None = None
    container_id: str | None = None
    log_file_path: str
    logs: list[str]
    total_lines_seen: int
    current_lines_stored: int
    compressed: bool = False
    capture_active: bool


class ContainerLogPatternResponse(BaseModel):
    """Body of `GET /serving/deployment/{id}/logs/patterns`: which failure patterns the logs show."""

    deployment_id: str
    patterns_detected: dict[str, bool]
    failure_lines: list[dict[str, str]] = Field(default_factory=list)
    analysis_timestamp: str


class ContainerLogListResponse(BaseModel):
    """Body of `GET /serving/logs/{engine_type}`: the log files of that engine's workers."""

    engine_type: str
    logs: list[dict[str, str]]
