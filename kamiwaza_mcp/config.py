"""Server settings read from the environment.

| variable | meaning |
|---|---|
| KAMIWAZA_BASE_URL | API base URL ending in /api; unset means the embedded local platform |
| KAMIWAZA_API_KEY (or KAMIWAZA_API_TOKEN) | bearer token sent to a remote platform |
| KAMIWAZA_VERIFY_SSL | true (default) or false: check the platform's TLS certificate |
| KAMIWAZA_CA_BUNDLE | path to a PEM file of CA certificates that sign the platform's certificate |
| KAMIWAZA_MCP_STATE_DIR | folder of the local platform's database and worker logs |
| KAMIWAZA_MCP_MODELS_DIR | folder of the local platform's Hugging Face models |
| KAMIWAZA_CONNECT_TIMEOUT, KAMIWAZA_READ_TIMEOUT, KAMIWAZA_DEPLOY_TIMEOUT, KAMIWAZA_GENERATE_TIMEOUT | seconds |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .client import Timeouts

__all__ = ["ConfigurationError", "ServerSettings"]

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_TIMEOUT_VARIABLES = {
    "connect": "KAMIWAZA_CONNECT_TIMEOUT",
    "read": "KAMIWAZA_READ_TIMEOUT",
    "deploy": "KAMIWAZA_DEPLOY_TIMEOUT",
    "generate": "KAMIWAZA_GENERATE_TIMEOUT",
}


class ConfigurationError(ValueError):
    """An environment variable contains a value the server cannot use."""


class ServerSettings(BaseModel):
    """Settings for reaching the platform: URL, credentials, TLS checks, local folders and timeouts."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = Field(
        default=None, description="API base URL ending in /api; None starts the embedded local platform"
    )
    api_key: SecretStr | None = Field(default=None, description="bearer token for a remote platform")
    verify_ssl: bool = Field(default=True, description="check the platform's TLS certificate")
    ca_bundle: Path | None = Field(default=None, description="PEM file of CA certificates to trust")
    state_dir: Path | None = Field(
        default=None, description="local platform state folder; None means its default"
    )
    models_dir: Path | None = Field(
        default=None, description="local platform models folder; None means its default"
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="client timeouts in seconds")

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
        return cls(
            base_url=_parse_base_url(env),
            api_key=_parse_api_key(env),
            verify_ssl=verify_ssl,
            ca_bundle=ca_bundle,
            state_dir=_parse_dir(env, "KAMIWAZA_MCP_STATE_DIR"),
            models_dir=_parse_dir(env, "KAMIWAZA_MCP_MODELS_DIR"),
            timeouts=_parse_timeouts(env),
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
