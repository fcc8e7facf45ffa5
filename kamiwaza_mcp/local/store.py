"""SQLite persistence of the local platform's models, deployments and instances.

One connection, in WAL mode. Every write commits before its method returns, so
the platform acts on a change only after it is on disk. The calls run inline on
the event loop instead of in a worker thread, because each statement touches a
few rows of a small local database. With `synchronous=NORMAL` in WAL mode a
commit appends to the WAL file without an fsync. The trade-off of NORMAL is that
a power loss or OS crash may lose the last commits, while a crash of this
process loses none. The connection keeps sqlite3's same-thread check, so a call from
another thread raises instead of racing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

__all__ = ["DeploymentRecord", "InstanceRecord", "ModelRecord", "Store", "utc_now"]

_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    info TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    config_id TEXT NOT NULL,
    config_name TEXT NOT NULL,
    engine TEXT NOT NULL,
    served_model_name TEXT NOT NULL,
    context_length INTEGER,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    last_error_code TEXT,
    last_error_message TEXT,
    last_error_at TEXT,
    requested_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    deployed_at TEXT,
    updated_at TEXT NOT NULL,
    backend TEXT NOT NULL DEFAULT 'process'
);
CREATE INDEX IF NOT EXISTS deployments_model ON deployments (model_id);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    replica INTEGER NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    host TEXT NOT NULL,
    port INTEGER,
    log_file TEXT NOT NULL,
    created_at TEXT NOT NULL,
    deployed_at TEXT,
    updated_at TEXT NOT NULL,
    node_id TEXT,
    replica_name TEXT,
    UNIQUE (deployment_id, replica)
);
"""
# Columns added in schema version 2, as (table, column, definition), for databases of version 1.
_ADDED_COLUMNS = (
    ("deployments", "backend", "TEXT NOT NULL DEFAULT 'process'"),
    ("instances", "node_id", "TEXT"),
    ("instances", "replica_name", "TEXT"),
)


def utc_now() -> str:
    """Return the current time as an ISO 8601 string in UTC, the format of every stored timestamp."""
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class ModelRecord:
    """A model folder the platform serves, discovered in the models folder or registered by path."""

    id: str
    path: str
    source: str
    info: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment: the CreateModelDeployment request as sent, plus what the platform resolved."""

    id: str
    model_id: str
    model_name: str
    config_id: str
    config_name: str
    engine: str
    served_model_name: str
    context_length: int | None
    request: dict[str, Any]
    status: str
    last_error_code: str | None
    last_error_message: str | None
    last_error_at: str | None
    requested_at: str
    created_at: str
    deployed_at: str | None
    updated_at: str
    # Where the replicas run: "process" (local worker processes) or "ray" (Ray Serve).
    backend: str = "process"


@dataclass(frozen=True)
class InstanceRecord:
    """One replica slot of a deployment. A relaunch reuses the slot with a new pid and port.

    On Ray, `node_id` is the hex id of the Ray node that runs the replica, and
    `replica_name` is Serve's replica id. Both are None for worker processes.
    """

    id: str
    deployment_id: str
    replica: int
    status: str
    pid: int | None
    host: str
    port: int | None
    log_file: str
    created_at: str
    deployed_at: str | None
    updated_at: str
    node_id: str | None = None
    replica_name: str | None = None


class Store:
    """The platform's database at one path. Use `Store.open(path)` and `close()`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection

    @classmethod
    def open(cls, path: Path) -> Self:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        store = cls(connection)
        store._migrate(path)
        return store

    def close(self) -> None:
        self._conn.close()

    def _migrate(self, path: Path) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise RuntimeError(
                f"database {path} has schema version {version}, newer than {_SCHEMA_VERSION}; "
                "upgrade kamiwaza-mcp or point KAMIWAZA_MCP_STATE_DIR at another folder"
            )
        with self._transaction():
            self._conn.executescript(_SCHEMA)
            self._add_missing_columns()
            self._conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _add_missing_columns(self) -> None:
        for table, column, definition in _ADDED_COLUMNS:
            names = {row["name"] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in names:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Commit the statements of the block together, or roll all of them back."""
        with self._conn:
            yield self._conn

    # Models

    def upsert_model(self, model_id: str, path: str, source: str, info: dict[str, Any]) -> ModelRecord:
        """Insert a model, or refresh its info; a model registered by path keeps source "registered"."""
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(
                """
                INSERT INTO models (id, path, source, info, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET
                    info = excluded.info,
                    updated_at = excluded.updated_at,
                    source = CASE WHEN models.source = 'registered' THEN models.source ELSE excluded.source END
                """,
                (model_id, path, source, json.dumps(info), now, now),
            )
        record = self.get_model(model_id)
        if record is None:
            raise AssertionError(f"model {model_id} is missing right after its insert")
        return record

    def get_model(self, model_id: str) -> ModelRecord | None:
        row = self._conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        return _model(row) if row else None

    def list_models(self) -> list[ModelRecord]:
        rows = self._conn.execute("SELECT * FROM models ORDER BY created_at, id").fetchall()
        return [_model(row) for row in rows]

    def delete_model(self, model_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))

    # Deployments

    def insert_deployment(self, record: DeploymentRecord) -> None:
        with self._transaction() as conn:
            conn.execute(
                """
                INSERT INTO deployments (
                    id, model_id, model_name, config_id, config_name, engine, served_model_name,
                    context_length, request, status, last_error_code, last_error_message,
                    last_error_at, requested_at, created_at, deployed_at, updated_at, backend)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    record.id,
                    record.model_id,
                    record.model_name,
                    record.config_id,
                    record.config_name,
                    record.engine,
                    record.served_model_name,
                    record.context_length,
                    json.dumps(record.request),
                    record.status,
                    record.last_error_code,
                    record.last_error_message,
                    record.last_error_at,
                    record.requested_at,
                    record.created_at,
                    record.deployed_at,
                    record.updated_at,
                    record.backend,
                ),
            )

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        row = self._conn.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
        return _deployment(row) if row else None

    def list_deployments(
        self, *, model_id: str | None = None, statuses: Collection[str] | None = None
    ) -> list[DeploymentRecord]:
        query = "SELECT * FROM deployments WHERE 1 = 1"
        params: list[Any] = []
        if model_id is not None:
            query += " AND model_id = ?"
            params.append(model_id)
        if statuses is not None:
            query += f" AND status IN ({', '.join('?' for _ in statuses)})"
            params.extend(statuses)
        rows = self._conn.execute(query + " ORDER BY created_at, id", params).fetchall()
        return [_deployment(row) for row in rows]

    def set_deployment_status(
        self,
        deployment_id: str,
        status: str,
        *,
        expected: Collection[str] | None = None,
        error: tuple[str, str] | None = None,
        clear_error: bool = False,
    ) -> bool:
        """Set a deployment's status, only while it is one of `expected` when that is given.

        `error` is a (code, message) pair stored as the last error. Returns whether the
        row changed, so a background launch cannot overwrite a stop that came first.
        """
        now = utc_now()
        sets = ["status = ?", "updated_at = ?"]
        params: list[Any] = [status, now]
        if status == "DEPLOYED":
            sets.append("deployed_at = ?")
            params.append(now)
        if error is not None:
            sets += ["last_error_code = ?", "last_error_message = ?", "last_error_at = ?"]
            params += [error[0], error[1], now]
        elif clear_error:
            sets += ["last_error_code = NULL", "last_error_message = NULL", "last_error_at = NULL"]
        query = f"UPDATE deployments SET {', '.join(sets)} WHERE id = ?"
        params.append(deployment_id)
        if expected is not None:
            query += f" AND status IN ({', '.join('?' for _ in expected)})"
            params.extend(expected)
        with self._transaction() as conn:
            changed = conn.execute(query, params).rowcount
        return changed > 0

    def set_deployment_error(self, deployment_id: str, error: tuple[str, str]) -> None:
        """Store a (code, message) pair as the deployment's last error, leaving its status as it is."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE deployments SET last_error_code = ?, last_error_message = ?, last_error_at = ?, "
                "updated_at = ? WHERE id = ?",
                (error[0], error[1], utc_now(), utc_now(), deployment_id),
            )

    # Instances

    def insert_instance(self, record: InstanceRecord) -> None:
        with self._transaction() as conn:
            conn.execute(
                """
                INSERT INTO instances (
                    id, deployment_id, replica, status, pid, host, port, log_file,
                    created_at, deployed_at, updated_at, node_id, replica_name)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    record.id,
                    record.deployment_id,
                    record.replica,
                    record.status,
                    record.pid,
                    record.host,
                    record.port,
                    record.log_file,
                    record.created_at,
                    record.deployed_at,
                    record.updated_at,
                    record.node_id,
                    record.replica_name,
                ),
            )

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        row = self._conn.execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return _instance(row) if row else None

    def list_instances(self, deployment_id: str | None = None) -> list[InstanceRecord]:
        if deployment_id is None:
            rows = self._conn.execute("SELECT * FROM instances ORDER BY created_at, replica").fetchall()
        else:
            rows = self._conn.execute(
                "SELECT * FROM instances WHERE deployment_id = ? ORDER BY replica", (deployment_id,)
            ).fetchall()
        return [_instance(row) for row in rows]

    def set_instance_starting(self, instance_id: str) -> None:
        """Mark a replica DEPLOYING and forget where its previous worker or Ray replica ran."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE instances SET status = 'DEPLOYING', pid = NULL, port = NULL, node_id = NULL, "
                "replica_name = NULL, updated_at = ? WHERE id = ?",
                (utc_now(), instance_id),
            )

    def set_instance_pid(self, instance_id: str, pid: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE instances SET pid = ?, updated_at = ? WHERE id = ?", (pid, utc_now(), instance_id)
            )

    def set_instance_deployed(self, instance_id: str, port: int) -> None:
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE instances SET status = 'DEPLOYED', port = ?, deployed_at = ?, updated_at = ? WHERE id = ?",
                (port, now, now, instance_id),
            )

    def set_instance_on_ray(
        self,
        instance_id: str,
        *,
        node_id: str | None,
        replica_name: str,
        host: str,
        pid: int | None,
        log_file: str,
    ) -> None:
        """Mark a replica DEPLOYED as the Ray Serve replica `replica_name` on the Ray node `node_id`."""
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE instances SET status = 'DEPLOYED', node_id = ?, replica_name = ?, host = ?, pid = ?, "
                "port = NULL, log_file = ?, deployed_at = ?, updated_at = ? WHERE id = ?",
                (node_id, replica_name, host, pid, log_file, now, now, instance_id),
            )

    def set_instance_failed(self, instance_id: str) -> None:
        """Mark a replica FAILED; its worker is gone, so the pid, port and Ray replica are cleared."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE instances SET status = 'FAILED', pid = NULL, port = NULL, node_id = NULL, "
                "replica_name = NULL, updated_at = ? WHERE id = ?",
                (utc_now(), instance_id),
            )

    def set_instances_stopped(self, deployment_id: str | None = None) -> None:
        """Mark the replicas that are not FAILED as STOPPED, of one deployment or of all.

        A pid, port or Ray replica is stored only while it runs, so all are cleared.
        """
        query = (
            "UPDATE instances SET status = 'STOPPED', pid = NULL, port = NULL, node_id = NULL, "
            "replica_name = NULL, updated_at = ? WHERE status != 'FAILED'"
        )
        params: list[Any] = [utc_now()]
        if deployment_id is not None:
            query += " AND deployment_id = ?"
            params.append(deployment_id)
        with self._transaction() as conn:
            conn.execute(query, params)


def _model(row: sqlite3.Row) -> ModelRecord:
    return ModelRecord(
        id=row["id"],
        path=row["path"],
        source=row["source"],
        info=json.loads(row["info"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _deployment(row: sqlite3.Row) -> DeploymentRecord:
    values = dict(row)
    values["request"] = json.loads(values["request"])
    return DeploymentRecord(**values)


def _instance(row: sqlite3.Row) -> InstanceRecord:
    return InstanceRecord(**dict(row))
