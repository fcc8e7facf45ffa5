"""Wire shapes of the Kamiwaza REST API 1.2.0 that the client reads and sends.

Field names and defaults follow the platform's OpenAPI document (schemas
`CreateModelDeployment`, `UIModelDeployment`, `ModelInstance`, `Model`,
`ModelConfig`). Response models allow extra fields, because newer platform
releases add fields and the client must keep working with them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletion",
    "ChatMessage",
    "Completion",
    "ContainerLogPatternResponse",
    "ContainerLogResponse",
    "CreateModelDeployment",
    "Deployment",
    "DeploymentStatus",
    "Model",
    "ModelConfig",
    "ModelFile",
    "ModelInstance",
    "RayNode",
    "RayStatus",
    "Usage",
]


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class DeploymentStatus:
    """Deployment status words used by the platform."""

    UNINITIALIZED = "UNINITIALIZED"
    REQUESTED = "REQUESTED"
    DEPLOYING = "DEPLOYING"
    INITIALIZING = "INITIALIZING"
    DEPLOYED = "DEPLOYED"
    UNLOADED = "UNLOADED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    ERROR = "ERROR"
    FAILED = "FAILED"
    MUST_REDOWNLOAD = "MUST_REDOWNLOAD"

    PENDING = frozenset({UNINITIALIZED, REQUESTED, DEPLOYING, INITIALIZING})
    TERMINAL = frozenset({DEPLOYED, UNLOADED, STOPPED, ERROR, FAILED, MUST_REDOWNLOAD})
    FAILURES = frozenset({ERROR, FAILED, MUST_REDOWNLOAD})


def _canonical_uuid(value: str) -> str:
    """Return `value` as a lowercase hyphenated UUID; raise ValueError when it is not a UUID."""
    try:
        return str(UUID(value))
    except ValueError:
        raise ValueError(f"expected a UUID, got {value!r}") from None


UUIDString = Annotated[str, AfterValidator(_canonical_uuid)]
"""A UUID kept as its canonical string, as the platform's `format: uuid` fields require."""


class CreateModelDeployment(BaseModel):
    """Body of `POST /serving/deploy_model` and `POST /serving/estimate_model_vram`."""

    model_config = ConfigDict(extra="forbid")

    m_id: UUIDString
    m_config_id: UUIDString
    m_file_id: UUIDString | None = None
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
    vram_allocation: float | None = Field(default=None, ge=0)
    gpu_allocation: float | None = Field(default=None, ge=0)
    active_req_per_replica: int = 20
    m_version: str | None = None
    engine: str = "vllm"
    container: str = "kamiwaza"
    deployment_target: str | None = None
    runtime_env: dict[str, str | None] | None = None


class ModelInstance(_Response):
    """One replica of a deployment (`ModelInstance`)."""

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


class Deployment(_Response):
    """A model deployment with its instances (`UIModelDeployment`)."""

    id: str
    m_id: str
    m_config_id: str
    requested_at: str
    created_at: str
    m_name: str | None = None
    m_config_name: str | None = None
    engine_name: str | None = None
    engine: str = "vllm"
    min_copies: int = 1
    starting_copies: int = 1
    max_copies: int | None = None
    lb_port: int = 0
    max_concurrent_requests: int | None = None
    active_req_per_replica: int = 20
    force_cpu: bool = False
    deployed_at: datetime | None = None
    serve_path: str | None = None
    access_path_prefix: str | None = None
    access_path: str | None = None
    status: str = "UNINITIALIZED"
    last_error_code: str | None = None
    last_error_message: str | None = None
    last_error_at: datetime | None = None
    health_details: dict[str, Any] | None = None
    instances: list[ModelInstance] = Field(default_factory=list)
    context_window: int | None = None
    host_ip: str | None = None


class ModelFile(_Response):
    """One file of a model (`ModelFile`)."""

    name: str
    size: int | None = None
    id: str | None = None
    storage_location: str | None = None


class Model(_Response):
    """A model registered on the platform (`Model`)."""

    name: str
    id: str | None = None
    repo_modelId: str | None = None  # the platform's field name
    modelfamily: str | None = None
    purpose: str | None = None
    version: str | None = None
    author: str | None = None
    hub: str | None = None
    description: str | None = None
    quantization_details: str | None = None
    m_files: list[ModelFile] = Field(default_factory=list)
    default_config: dict[str, Any] | None = None
    hosted: str = "local"
    created_timestamp: datetime | None = None


class ModelConfig(_Response):
    """A deployment configuration of a model (`ModelConfig`)."""

    id: str
    m_id: str
    default: bool
    name: str | None = None
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    system_config: dict[str, Any] = Field(default_factory=dict)
    m_file_id: str | None = None


class RayNode(_Response):
    """One node of the Ray cluster as `GET /serving/status` reports it."""

    node_id: str
    alive: bool = True
    host_name: str | None = None
    address: str | None = None
    cpus: float = 0
    gpus: float = 0
    memory_bytes: int = 0


class RayStatus(_Response):
    """Body of `GET /serving/status`: `running` or `not running`, and the nodes when running."""

    status: str
    address: str | None = None
    nodes: list[RayNode] = Field(default_factory=list)
    resources: dict[str, float] = Field(default_factory=dict)
    message: str | None = None


class ContainerLogResponse(_Response):
    """Response of `GET /serving/deployment/{id}/logs`: the newest lines of the deployment's logs."""

    deployment_id: str
    log_file_path: str
    logs: list[str]
    total_lines_seen: int
    current_lines_stored: int
    compressed: bool
    capture_active: bool
    engine_type: str | None = None
    container_id: str | None = None


class ContainerLogPatternResponse(_Response):
    """Response of `GET /serving/deployment/{id}/logs/patterns`: the failure patterns found in the logs."""

    deployment_id: str
    patterns_detected: dict[str, bool]
    analysis_timestamp: str
    failure_lines: list[dict[str, str]] = Field(default_factory=list)


class ChatMessage(BaseModel):
    """One message of an OpenAI-compatible chat request."""

    role: Literal["system", "user", "assistant"]
    content: str


class Usage(_Response):
    """Token counts of an OpenAI-compatible completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Choice(_Response):
    index: int = 0
    finish_reason: str | None = None


class _ChatChoice(_Choice):
    message: ChatMessage


class _TextChoice(_Choice):
    text: str


class ChatCompletion(_Response):
    """Response of `POST .../v1/chat/completions`."""

    id: str
    model: str
    choices: list[_ChatChoice]
    usage: Usage = Field(default_factory=Usage)


class Completion(_Response):
    """Response of `POST .../v1/completions`."""

    id: str
    model: str
    choices: list[_TextChoice]
    usage: Usage = Field(default_factory=Usage)
