"""Server settings read from the environment.

| variable | meaning |
|---|---|
| KAMIWAZA_BASE_URL | API base URL ending in /api; unset means the embedded local platform |
| KAMIWAZA_API_KEY (or KAMIWAZA_API_TOKEN) | bearer token sent to a remote platform |
| KAMIWAZA_USERNAME, KAMIWAZA_PASSWORD | account that logs in at `<base URL>/auth/token`, in place of an API key |
| KAMIWAZA_VERIFY_SSL | true (default) or false: check the platform's TLS certificate; false logs a warning |
| KAMIWAZA_CA_BUNDLE | path to a PEM file of CA certificates that sign the platform's certificate |
| KAMIWAZA_MCP_STATE_DIR | folder of the local platform's database and worker logs |
| KAMIWAZA_MCP_MODELS_DIR | folder of the local platform's Hugging Face models |
| KAMIWAZA_CONNECT_TIMEOUT, KAMIWAZA_READ_TIMEOUT, KAMIWAZA_DEPLOY_TIMEOUT, KAMIWAZA_GENERATE_TIMEOUT | seconds |
| KAMIWAZA_MCP_READ_ONLY, KAMIWAZA_MCP_DISABLE_DESTRUCTIVE | true or false (default false) |
| KAMIWAZA_MCP_TOOLS, KAMIWAZA_MCP_EXCLUDE_TOOLS | comma-separated tool names to offer, or not to offer |
| KAMIWAZA_MCP_CONFIRMATION | auto (default), token or deny |
| KAMIWAZA_MCP_ELICITATION_TIMEOUT | seconds the person has to fill in a confirmation form (default 60) |
| KAMIWAZA_MCP_PROTECTED_DEPLOYMENTS | comma-separated deployment ids or model-name glob patterns |
| KAMIWAZA_MCP_MAX_REPLICAS, KAMIWAZA_MCP_MAX_DEPLOYMENTS | whole numbers; unset means no limit |
| KAMIWAZA_MCP_ALLOWED_MODELS | comma-separated glob patterns of models that may be deployed |
| KAMIWAZA_MCP_MAX_WAIT | longest wait of deploy_model and load_model in seconds (default 60) |
| KAMIWAZA_MCP_MAX_RESPONSE_TOKENS | maximum estimated tokens of one tool result; a longer one is cut (default 10000) |

policy.py describes what each policy setting does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .client import Timeouts
from .policy import ConfirmationMode, Policy

__all__ = ["ConfigurationError", "ServerSettings"]

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_TIMEOUT_VARIABLES = Timeouts.VARIABLES


class ConfigurationError(ValueError):
    """An environment variable contains a value the server cannot use."""


class ServerSettings(BaseModel):
    """Settings for reaching the platform: URL, credentials, TLS checks, local folders and timeouts."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = Field(
        default=None, description="API base URL ending in /api; None starts the embedded local platform"
    )
    api_key: SecretStr | None = Field(default=None, description="bearer token for a remote platform")
    username: str | None = Field(
        default=None, description="account for the password login; used only when api_key is None"
    )
    password: SecretStr | None = Field(default=None, description="password of `username`")
    verify_ssl: bool = Field(default=True, description="check the platform's TLS certificate")
    ca_bundle: Path | None = Field(default=None, description="PEM file of CA certificates to trust")
    state_dir: Path | None = Field(
        default=None, description="local platform state folder; None means its default"
    )
    models_dir: Path | None = Field(
        default=None, description="local platform models folder; None means its default"
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="client timeouts in seconds")
    policy: Policy = Field(default_factory=Policy, description="modes, limits and result sizes of the tools")

    @property
    def is_local(self) -> bool:
        """Whether the server runs the embedded local platform instead of calling a remote one."""
        return self.base_url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Read the settings from `environ` (default: `os.environ`).

        Raises ConfigurationError naming the variable, its value and the fix.
        """
        env = os.environ if environ is None else environ
        verify_ssl = _parse_bool(env, "KAMIWAZA_VERIFY_SSL", default=True)
        ca_bundle = _parse_ca_bundle(env)
        if ca_bundle is not None and not verify_ssl:
            raise ConfigurationError(
                "KAMIWAZA_CA_BUNDLE is set but KAMIWAZA_VERIFY_SSL=false turns certificate checks off; "
                "unset one of them"
            )
        api_key = _parse_api_key(env)
        username, password = _parse_login(env, api_key_set=api_key is not None)
        return cls(
            base_url=_parse_base_url(env),
            api_key=api_key,
            username=username,
            password=password,
            verify_ssl=verify_ssl,
            ca_bundle=ca_bundle,
            state_dir=_parse_dir(env, "KAMIWAZA_MCP_STATE_DIR"),
            models_dir=_parse_dir(env, "KAMIWAZA_MCP_MODELS_DIR"),
            timeouts=_parse_timeouts(env),
            policy=_parse_policy(env),
        )


def _value(env: Mapping[str, str], name: str) -> str | None:
    """Return the stripped value of `name`, or None when it is unset or blank."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def _parse_base_url(env: Mapping[str, str]) -> str | None:
    url = _value(env, "KAMIWAZA_BASE_URL")
    if url is None:
        return None
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"invalid KAMIWAZA_BASE_URL={url!r}: expected an http(s) URL; "
            "set it to the API base URL, such as https://kamiwaza.example.com/api, or unset it for the local platform"
        )
    if not parts.path.endswith("/api"):
        raise ConfigurationError(
            f"invalid KAMIWAZA_BASE_URL={url!r}: the API base URL ends in /api; set it to {url}/api"
        )
    return url


def _parse_api_key(env: Mapping[str, str]) -> SecretStr | None:
    key = _value(env, "KAMIWAZA_API_KEY") or _value(env, "KAMIWAZA_API_TOKEN")
    return SecretStr(key) if key else None


def _parse_login(env: Mapping[str, str], *, api_key_set: bool) -> tuple[str | None, SecretStr | None]:
    """Return KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD, which must be set together and without an API key."""
    username = _value(env, "KAMIWAZA_USERNAME")
    # Kept unstripped: spaces at either end can be part of a password.
    password = env.get("KAMIWAZA_PASSWORD") or None
    if username is None and password is None:
        return None, None
    if username is None or password is None:
        missing = "KAMIWAZA_PASSWORD" if password is None else "KAMIWAZA_USERNAME"
        raise ConfigurationError(
            f"{missing} is not set: the password login needs both KAMIWAZA_USERNAME and KAMIWAZA_PASSWORD; "
            f"set {missing}, or unset the other one"
        )
    if api_key_set:
        raise ConfigurationError(
            "both an API key (KAMIWAZA_API_KEY or KAMIWAZA_API_TOKEN) and KAMIWAZA_USERNAME/KAMIWAZA_PASSWORD "
            "are set; unset one of the two ways to log in"
        )
    return username, SecretStr(password)


def _parse_bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = _value(env, name)
    if raw is None:
        return default
    word = raw.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ConfigurationError(f"invalid {name}={raw!r}: expected true or false; set it to true or false")


def _parse_ca_bundle(env: Mapping[str, str]) -> Path | None:
    raw = _value(env, "KAMIWAZA_CA_BUNDLE")
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"invalid KAMIWAZA_CA_BUNDLE={raw!r}: no such file; set it to the path of a PEM file of CA certificates"
        )
    return path


def _parse_dir(env: Mapping[str, str], name: str) -> Path | None:
    raw = _value(env, name)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"invalid {name}={raw!r}: the path is a file; set it to a folder")
    return path


def _parse_timeouts(env: Mapping[str, str]) -> Timeouts:
    values: dict[str, float] = {}
    for field, name in _TIMEOUT_VARIABLES.items():
        raw = _value(env, name)
        if raw is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise ConfigurationError(
                f"invalid {name}={raw!r}: expected a positive number of seconds, such as 30"
            )
        values[field] = seconds
    return Timeouts(**values)


def _parse_names(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """Return the comma-separated entries of `name`, without blanks, or None when it is unset."""
    raw = _value(env, name)
    if raw is None:
        return None
    return tuple(entry.strip() for entry in raw.split(",") if entry.strip())


def _parse_number(env: Mapping[str, str], name: str, *, whole: bool) -> float | None:
    raw = _value(env, name)
    if raw is None:
        return None
    try:
        number = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise ConfigurationError(f"invalid {name}={raw!r}: expected {kind}, such as 2") from None
    return number


def _parse_policy(env: Mapping[str, str]) -> Policy:
    values: dict[str, object] = {
        "read_only": _parse_bool(env, "KAMIWAZA_MCP_READ_ONLY", default=False),
        "disable_destructive": _parse_bool(env, "KAMIWAZA_MCP_DISABLE_DESTRUCTIVE", default=False),
    }
    tools = _parse_names(env, "KAMIWAZA_MCP_TOOLS")
    if tools is not None:
        values["tools"] = frozenset(tools)
    values["exclude_tools"] = frozenset(_parse_names(env, "KAMIWAZA_MCP_EXCLUDE_TOOLS") or ())
    values["protected_deployments"] = _parse_names(env, "KAMIWAZA_MCP_PROTECTED_DEPLOYMENTS") or ()
    values["allowed_models"] = _parse_names(env, "KAMIWAZA_MCP_ALLOWED_MODELS")

    confirmation = _value(env, "KAMIWAZA_MCP_CONFIRMATION")
    if confirmation is not None:
        if confirmation.lower() not in set(ConfirmationMode):
            raise ConfigurationError(
                f"invalid KAMIWAZA_MCP_CONFIRMATION={confirmation!r}: expected auto, token or deny"
            )
        values["confirmation"] = ConfirmationMode(confirmation.lower())

    numbers = {
        "elicitation_timeout_seconds": ("KAMIWAZA_MCP_ELICITATION_TIMEOUT", False),
        "max_replicas": ("KAMIWAZA_MCP_MAX_REPLICAS", True),
        "max_deployments": ("KAMIWAZA_MCP_MAX_DEPLOYMENTS", True),
        "max_wait_seconds": ("KAMIWAZA_MCP_MAX_WAIT", False),
        "max_response_tokens": ("KAMIWAZA_MCP_MAX_RESPONSE_TOKENS", True),
    }
    variable_of = {field: variable for field, (variable, _whole) in numbers.items()}
    for field, (variable, whole) in numbers.items():
        number = _parse_number(env, variable, whole=whole)
        if number is not None:
            values[field] = number
    return build_policy(values, variable_of)


def build_policy(values: Mapping[str, object], source_of: Mapping[str, str]) -> Policy:
    """Validate `values` into a Policy, or raise ConfigurationError naming the setting from `source_of`.

    `source_of` maps a Policy field to the variable or flag that set it.
    """
    try:
        return Policy.model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        source = source_of.get(field, field)
        raise ConfigurationError(f"invalid {source}={error.get('input')!r}: {error['msg'].lower()}") from None
