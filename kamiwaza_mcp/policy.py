"""The policy: the tools an agent may call through this server, their limits, and the size of one result.

The operator sets the policy with environment variables (read in config.py)
or command-line flags (cli.py). Every rejection raises PolicyError with a
message that names the setting behind it, so the agent can tell the person
which setting to change.

| setting | environment variable | flag |
|---|---|---|
| read_only | KAMIWAZA_MCP_READ_ONLY | --read-only |
| disable_destructive | KAMIWAZA_MCP_DISABLE_DESTRUCTIVE | --disable-destructive |
| tools | KAMIWAZA_MCP_TOOLS | --tools |
| exclude_tools | KAMIWAZA_MCP_EXCLUDE_TOOLS | --exclude-tools |
| confirmation | KAMIWAZA_MCP_CONFIRMATION | --confirmation |
| elicitation_timeout_seconds | KAMIWAZA_MCP_ELICITATION_TIMEOUT | --elicitation-timeout |
| protected_deployments | KAMIWAZA_MCP_PROTECTED_DEPLOYMENTS | |
| max_replicas | KAMIWAZA_MCP_MAX_REPLICAS | |
| max_deployments | KAMIWAZA_MCP_MAX_DEPLOYMENTS | |
| allowed_models | KAMIWAZA_MCP_ALLOWED_MODELS | |
| max_wait_seconds | KAMIWAZA_MCP_MAX_WAIT | |
| max_response_tokens | KAMIWAZA_MCP_MAX_RESPONSE_TOKENS | |
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .client import KamiwazaError
from .client.models import Deployment, DeploymentStatus, Model

__all__ = [
    "DEFAULT_MAX_RESPONSE_TOKENS",
    "DEFAULT_MAX_WAIT_SECONDS",
    "SETTING_NAMES",
    "ConfirmationMode",
    "Policy",
    "PolicyError",
]

# The MCP TypeScript SDK, which many hosts use, fails a request after 60 s by
# default (DEFAULT_REQUEST_TIMEOUT_MSEC in its shared/protocol.ts).
DEFAULT_MAX_WAIT_SECONDS = 60.0
DEFAULT_ELICITATION_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_RESPONSE_TOKENS = 10_000

# Name of each setting in rejection messages: the flag, when there is one, and the environment variable.
SETTING_NAMES = {
    "read_only": "--read-only (KAMIWAZA_MCP_READ_ONLY)",
    "disable_destructive": "--disable-destructive (KAMIWAZA_MCP_DISABLE_DESTRUCTIVE)",
    "tools": "--tools (KAMIWAZA_MCP_TOOLS)",
    "exclude_tools": "--exclude-tools (KAMIWAZA_MCP_EXCLUDE_TOOLS)",
    "confirmation": "--confirmation (KAMIWAZA_MCP_CONFIRMATION)",
    "protected_deployments": "KAMIWAZA_MCP_PROTECTED_DEPLOYMENTS",
    "max_replicas": "KAMIWAZA_MCP_MAX_REPLICAS",
    "max_deployments": "KAMIWAZA_MCP_MAX_DEPLOYMENTS",
    "allowed_models": "KAMIWAZA_MCP_ALLOWED_MODELS",
    "max_response_tokens": "KAMIWAZA_MCP_MAX_RESPONSE_TOKENS",
}

_OPERATOR_HINT = "tell the user; only the server's operator can change this setting"

# Deployments in these statuses hold no replica and cannot come back, so they
# do not count against max_deployments. UNLOADED ones do, since load_model
# brings them back without a new deployment.
_ENDED_STATUSES = frozenset({DeploymentStatus.STOPPED}) | DeploymentStatus.FAILURES


class PolicyError(KamiwazaError):
    """The server's policy rejects the call; the message names the setting that did."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint=_OPERATOR_HINT)


class ConfirmationMode(StrEnum):
    """Confirmation method of stop_deployment and unload_model."""

    AUTO = "auto"
    """A form the person fills in when the client supports form elicitation, else the token flow."""
    TOKEN = "token"
    """Always the token flow: a preview call returns a token, and a second call with it acts."""
    DENY = "deny"
    """The destructive tools reject every call."""


class Policy(BaseModel):
    """Modes, limits and result sizes that the operator sets for this server."""

    model_config = ConfigDict(frozen=True)

    read_only: bool = Field(default=False, description="hide and reject every tool that changes anything")
    disable_destructive: bool = Field(
        default=False, description="hide and reject stop_deployment and unload_model"
    )
    tools: frozenset[str] | None = Field(
        default=None, description="names of the only tools to offer; None offers all"
    )
    exclude_tools: frozenset[str] = Field(default=frozenset(), description="names of tools not to offer")
    confirmation: ConfirmationMode = Field(
        default=ConfirmationMode.AUTO, description="how destructive tools are confirmed"
    )
    elicitation_timeout_seconds: float = Field(
        default=DEFAULT_ELICITATION_TIMEOUT_SECONDS,
        gt=0,
        le=3600,
        description="seconds the person has to fill in a confirmation form",
    )
    protected_deployments: tuple[str, ...] = Field(
        default=(),
        description="deployment ids, or glob patterns of model names, never stopped or unloaded",
    )
    max_replicas: int | None = Field(default=None, ge=1, description="maximum replicas of one deployment")
    max_deployments: int | None = Field(
        default=None, ge=0, description="maximum number of deployments that are not stopped or failed"
    )
    allowed_models: tuple[str, ...] | None = Field(
        default=None,
        description="glob patterns of the model names, repo ids or ids that may be deployed; None allows all",
    )
    max_wait_seconds: float = Field(
        default=DEFAULT_MAX_WAIT_SECONDS,
        gt=0,
        le=600,
        description="maximum seconds a deploy_model or load_model call waits for the deployment",
    )
    max_response_tokens: int = Field(
        default=DEFAULT_MAX_RESPONSE_TOKENS,
        ge=100,
        description="maximum estimated tokens (characters / 4) of one tool result; a longer one is cut",
    )

    # Tools

    def unknown_tool_names(self, known: Iterable[str]) -> list[str]:
        """Return the names in `tools` and `exclude_tools` that are not in `known`, sorted."""
        named = set(self.tools or ()) | set(self.exclude_tools)
        return sorted(named - set(known))

    def disabled_reason(self, name: str, *, read_only: bool, destructive: bool) -> str | None:
        """Return why tool `name` is disabled, naming the setting, or None when it is enabled.

        `read_only` and `destructive` are the tool's annotations: whether it
        leaves everything as it is, and whether it ends running replicas.
        """
        if self.tools is not None and name not in self.tools:
            return f"{name} is not in the allow list {SETTING_NAMES['tools']}"
        if name in self.exclude_tools:
            return f"{name} is in the deny list {SETTING_NAMES['exclude_tools']}"
        if self.read_only and not read_only:
            return f"the server runs with {SETTING_NAMES['read_only']}, which disables tools that change anything"
        if self.disable_destructive and destructive:
            return (
                f"the server runs with {SETTING_NAMES['disable_destructive']}, "
                "which disables stop_deployment and unload_model"
            )
        return None

    def check_enabled(self, name: str, *, read_only: bool, destructive: bool) -> None:
        """Raise PolicyError when tool `name` is disabled."""
        reason = self.disabled_reason(name, read_only=read_only, destructive=destructive)
        if reason is not None:
            raise PolicyError(f"{name} is disabled on this server: {reason}; nothing was done")

    # Destructive tools

    def check_confirmation_possible(self, action: str) -> None:
        """Raise PolicyError when the confirmation policy is deny."""
        if self.confirmation is ConfirmationMode.DENY:
            raise PolicyError(
                f"{action} is rejected: the confirmation policy {SETTING_NAMES['confirmation']} is deny, "
                "so no deployment can be stopped or unloaded through this server; nothing was done"
            )

    def protecting_pattern(self, deployment_id: str, model_name: str | None) -> str | None:
        """Return the protected_deployments entry that covers this deployment, or None.

        An entry that is a UUID matches the deployment id. Any other entry is a
        glob pattern matched against the model name, ignoring case, so a
        spelling variant of the name stays protected. When the model name is
        unknown (None), every pattern matches, so the protection fails closed.
        """
        for entry in self.protected_deployments:
            as_id = _as_uuid(entry)
            if as_id is not None:
                if as_id == _as_uuid(deployment_id):
                    return entry
                continue
            if model_name is None or fnmatch.fnmatchcase(model_name.casefold(), entry.casefold()):
                return entry
        return None

    def check_not_protected(self, action: str, deployment_id: str, model_name: str | None) -> None:
        """Raise PolicyError when the deployment is protected."""
        entry = self.protecting_pattern(deployment_id, model_name)
        if entry is not None:
            raise PolicyError(
                f"{action} is rejected: deployment {deployment_id} ({model_name or 'unnamed model'}) "
                f"is protected by {entry!r} in {SETTING_NAMES['protected_deployments']}; nothing was done"
            )

    # Deploying

    def check_replicas(self, replicas: int) -> None:
        if self.max_replicas is not None and replicas > self.max_replicas:
            raise PolicyError(
                f"deploy_model is rejected: {replicas} replicas exceed "
                f"{SETTING_NAMES['max_replicas']}={self.max_replicas}; deploy with at most "
                f"{self.max_replicas} replicas. Nothing was done"
            )

    def check_model_allowed(self, model: Model) -> None:
        if self.allowed_models is None:
            return
        names = [value.casefold() for value in (model.name, model.repo_modelId, model.id) if value]
        for pattern in self.allowed_models:
            if any(fnmatch.fnmatchcase(name, pattern.casefold()) for name in names):
                return
        allowed = ", ".join(self.allowed_models) or "none"
        raise PolicyError(
            f"deploy_model is rejected: model {model.name!r} is not in {SETTING_NAMES['allowed_models']} "
            f"(allowed: {allowed}); nothing was done"
        )

    def check_deployment_count(self, deployments: Iterable[Deployment]) -> None:
        """Raise PolicyError when one more deployment would exceed max_deployments."""
        if self.max_deployments is None:
            return
        counted = [d for d in deployments if d.status not in _ENDED_STATUSES]
        if len(counted) >= self.max_deployments:
            raise PolicyError(
                f"deploy_model is rejected: {len(counted)} deployments exist (not stopped or failed) and "
                f"{SETTING_NAMES['max_deployments']}={self.max_deployments}; stop one first. Nothing was done"
            )


def _as_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None
