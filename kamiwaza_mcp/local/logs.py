"""Worker log files as the API returns them: newest lines, failure patterns, and listings.

Each replica's worker appends its stdout and stderr to
`<state_dir>/logs/<deployment_id>/<instance_id>.log`, across restarts, with a
`--- <time> starting worker` line before each run. The functions here read those
files from the end, so a long log costs only the lines returned (plus one pass to
count its lines). They do blocking file reads, so run them in a worker thread.

NOTE: the log files are never rotated or truncated. A worker writes one line per
generation, so the log of a busy, long-lived deployment keeps growing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .log_patterns import LOG_PATTERNS
from .schemas import ContainerLogListResponse, ContainerLogPatternResponse, ContainerLogResponse
from .store import DeploymentRecord, InstanceRecord, utc_now

__all__ = [
    "DEFAULT_LOG_LINES",
    "MAX_LOG_LINES",
    "deployment_logs",
    "engine_log_list",
    "log_patterns",
    "read_tail",
]

DEFAULT_LOG_LINES = 200
MAX_LOG_LINES = 5000
# Lines read from the end of each log when looking for failure patterns.
PATTERN_SCAN_LINES = 5000
MAX_FAILURE_LINES = 50
# Longer lines (a dumped tensor, a tokenizer table) are cut to this many characters.
MAX_LINE_CHARS = 4000
_READ_BLOCK = 64 * 1024


@dataclass(frozen=True)
class _LogSource:
    instance_id: str
    replica: int
    path: Path


def read_tail(path: Path, max_lines: int) -> list[str]:
    """Return the last `max_lines` lines of a text file, oldest first; [] when it does not exist."""
    try:
        with path.open("rb") as file:
            position = file.seek(0, os.SEEK_END)
            data = b""
            while position > 0 and data.count(b"\n") <= max_lines:
                step = min(_READ_BLOCK, position)
                position -= step
                file.seek(position)
                data = file.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0:
        # The block boundary may split the first line.
        lines = lines[1:]
    return [line[:MAX_LINE_CHARS] for line in lines[-max_lines:]]


def count_lines(path: Path) -> int:
    """Return the number of lines in a file, counting a last line without a newline; 0 when missing."""
    count = 0
    last = b"\n"
    try:
        with path.open("rb") as file:
            while block := file.read(_READ_BLOCK):
                count += block.count(b"\n")
                last = block[-1:]
    except FileNotFoundError:
        return 0
    return count + (0 if last == b"\n" else 1)


def deployment_logs(
    record: DeploymentRecord,
    instances: list[InstanceRecord],
    *,
    lines: int,
    instance_id: str | None,
    capture_active: bool,
    logs_dir: Path,
) -> ContainerLogResponse:
    """Return the newest `lines` log lines of the deployment's workers, newest last.

    With `instance_id`, only that replica's log is read. Otherwise each replica gets an
    equal share of `lines`, and with more than one replica each line starts with
    `[replica N] `, replicas in order. `logs_dir` is the platform's log folder.
    """
    sources = _sources(instances, instance_id)
    share = lines if len(sources) <= 1 else max(1, lines // len(sources))
    tagged = len(sources) > 1
    output: list[str] = []
    for source in sources:
        prefix = f"[replica {source.replica}] " if tagged else ""
        output += [prefix + line for line in read_tail(source.path, share)]
    path = sources[0].path if len(sources) == 1 else logs_dir / record.id
    total = sum(count_lines(source.path) for source in sources)
    return ContainerLogResponse(
        deployment_id=record.id,
        engine_type=record.engine,
        container_id=None,
        log_file_path=str(path),
        logs=output,
        total_lines_seen=total,
        current_lines_stored=total,
        compressed=False,
        capture_active=capture_active,
    )


def log_patterns(record: DeploymentRecord, instances: list[InstanceRecord]) -> ContainerLogPatternResponse:
    """Scan the end of each replica's log for the failure patterns of LOG_PATTERNS.

    `failure_lines` contains the newest MAX_FAILURE_LINES matches, newest last, each with
    the pattern name, the replica, its instance id and the line.
    """
    detected = dict.fromkeys(LOG_PATTERNS, False)
    matches: list[dict[str, str]] = []
    for source in _sources(instances, None):
        for line in read_tail(source.path, PATTERN_SCAN_LINES):
            for name, pattern in LOG_PATTERNS.items():
                if pattern.search(line):
                    detected[name] = True
                    matches.append(
                        {
                            "pattern": name,
                            "replica": str(source.replica),
                            "instance_id": source.instance_id,
                            "line": line,
                        }
                    )
    return ContainerLogPatternResponse(
        deployment_id=record.id,
        patterns_detected=detected,
        failure_lines=matches[-MAX_FAILURE_LINES:],
        analysis_timestamp=utc_now(),
    )


def engine_log_list(
    engine_type: str, deployments: list[tuple[DeploymentRecord, list[InstanceRecord]]]
) -> ContainerLogListResponse:
    """List the existing log files of the workers of deployments that run `engine_type`."""
    entries = []
    for record, instances in deployments:
        if record.engine != engine_type:
            continue
        for instance in instances:
            path = Path(instance.log_file)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append(
                {
                    "deployment_id": record.id,
                    "instance_id": instance.id,
                    "replica": str(instance.replica),
                    "model_name": record.model_name,
                    "deployment_status": record.status,
                    "instance_status": instance.status,
                    "log_file_path": str(path),
                    "size_bytes": str(stat.st_size),
                    "modified_at": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
                }
            )
    return ContainerLogListResponse(engine_type=engine_type, logs=entries)


def _sources(instances: list[InstanceRecord], instance_id: str | None) -> list[_LogSource]:
    chosen = [instance for instance in instances if instance_id is None or instance.id == instance_id]
    return [_LogSource(instance.id, instance.replica, Path(instance.log_file)) for instance in chosen]
