"""Conversion of stored records into the API's response bodies."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from .ray_cluster import ray_node_uuid
from .registry import DEFAULT_CONFIG_NAME, DEFAULT_ENGINE, config_id_of
from .schemas import Model, ModelConfig, ModelFile, ModelInstance, UIModelDeployment
from .store import DeploymentRecord, InstanceRecord, ModelRecord

__all__ = [
    "default_config_of",
    "deployment_view",
    "file_ids_of",
    "file_name_of",
    "instance_view",
    "model_view",
]


def default_config_of(record: ModelRecord) -> ModelConfig:
    """Build the one config each local model has, named "default"."""
    return ModelConfig(
        id=config_id_of(record.id),
        m_id=record.id,
        name=DEFAULT_CONFIG_NAME,
        default=True,
        description="Serve the folder with the transformers engine at the model's full context length",
        config=_config_values(record),
        system_config={},
        created_at=record.created_at,
        modified_at=record.updated_at,
    )


def model_view(record: ModelRecord) -> Model:
    info = record.info
    repo_id: str = info.get("repo_id") or info["name"]
    files = [_file_view(record, entry) for entry in info.get("files", [])]
    return Model(
        id=record.id,
        name=info["name"],
        repo_modelId=repo_id,
        modelfamily=info.get("family"),
        purpose="text-generation",
        author=repo_id.split("/", 1)[0] if "/" in repo_id else None,
        description=f"Hugging Face model folder {record.path} ({record.source})",
        m_files=files,
        default_config=_config_values(record),
        hosted="local",
        created_timestamp=record.created_at,
        modified_timestamp=record.updated_at,
    )


def instance_view(record: InstanceRecord, engine: str, live: dict[str, Any] | None = None) -> ModelInstance:
    """Build a ModelInstance; `live` adds the running worker's counters to `extra_details`."""
    return ModelInstance(
        id=record.id,
        deployment_id=record.deployment_id,
        deployed_at=record.deployed_at or record.created_at,
        host_name=record.host,
        listen_port=record.port,
        status=record.status,
        container_id=None,
        # The spec types node_id as a UUID. Worker processes have no node, and Ray's hex node ids map to UUIDs.
        node_id=ray_node_uuid(record.node_id) if record.node_id else None,
        extra_details={
            "pid": record.pid,
            "engine": engine,
            "log_file": record.log_file,
            "replica": record.replica,
            **_ray_details(record),
            **(live or {}),
        },
    )


def _ray_details(record: InstanceRecord) -> dict[str, Any]:
    """Return Ray's own ids of a replica on Ray Serve: the node's hex id and Serve's replica id."""
    if record.replica_name is None:
        return {}
    return {"ray_node_id": record.node_id, "serve_replica_id": record.replica_name}


def deployment_view(
    record: DeploymentRecord,
    instances: list[InstanceRecord],
    *,
    health_details: dict[str, Any] | None = None,
    live: dict[str, dict[str, Any]] | None = None,
) -> UIModelDeployment:
    """Merge the stored request with the platform's state; the platform's values win.

    `health_details` is the deployment's request counters, and `live` maps instance
    ids to their running worker's counters.
    """
    live = live or {}
    fields = set(UIModelDeployment.model_fields)
    requested = {key: value for key, value in record.request.items() if key in fields}
    return UIModelDeployment(
        **{
            **requested,
            "id": record.id,
            "m_id": record.model_id,
            "m_config_id": record.config_id,
            "engine_name": record.engine,
            "engine": record.engine,
            "lb_port": 0,
            "requested_at": record.requested_at,
            "created_at": record.created_at,
            "deployed_at": record.deployed_at,
            "access_path": None,
            "status": record.status,
            "last_error_code": record.last_error_code,
            "last_error_message": record.last_error_message,
            "last_error_at": record.last_error_at,
            "health_details": health_details,
            "instances": [
                instance_view(instance, record.engine, live.get(instance.id)) for instance in instances
            ],
            "m_name": record.model_name,
            "m_config_name": record.config_name,
            "canonical_model_id": record.served_model_name,
            "context_window": record.context_length,
            "host_ip": "127.0.0.1",
        }
    )


def file_ids_of(record: ModelRecord) -> set[str]:
    return {_file_id(record, entry["name"]) for entry in record.info.get("files", [])}


def file_name_of(record: ModelRecord, file_id: str) -> str | None:
    """Return the relative path of the model's file with id `file_id`, or None."""
    for entry in record.info.get("files", []):
        if _file_id(record, entry["name"]) == file_id:
            return str(entry["name"])
    return None


def _file_id(record: ModelRecord, name: str) -> str:
    """Return a file's id, derived from the model id and the file's relative path so it survives restarts."""
    return str(uuid.uuid5(uuid.UUID(record.id), name))


def _config_values(record: ModelRecord) -> dict[str, Any]:
    return {"context_length": record.info.get("context_length"), "engine": DEFAULT_ENGINE}


def _file_view(record: ModelRecord, entry: dict[str, Any]) -> ModelFile:
    return ModelFile(
        name=entry["name"],
        size=entry.get("size"),
        storage_location=str(Path(record.path) / entry["name"]),
        id=_file_id(record, entry["name"]),
        model_id=record.id,
        download=True,
    )
