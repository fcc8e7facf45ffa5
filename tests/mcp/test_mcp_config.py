"""ServerSettings read from the environment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kamiwaza_mcp.client import Timeouts
from kamiwaza_mcp.config import ConfigurationError, ServerSettings
from kamiwaza_mcp.server import build_server

SECRET = "kz-pat-0123456789abcdef"


def test_empty_environment_means_local_platform() -> None:
    settings = ServerSettings.from_env({})

    assert settings.base_url is None
    assert settings.is_local is True
    assert settings.api_key is None
    assert settings.verify_ssl is True
    assert settings.ca_bundle is None
    assert settings.state_dir is None
    assert settings.models_dir is None
    assert settings.timeouts == Timeouts()


def test_remote_settings_are_read(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not parsed here\n")
    settings = ServerSettings.from_env(
        {
            "KAMIWAZA_BASE_URL": " https://kamiwaza.example.com/api/ ",
            "KAMIWAZA_API_KEY": SECRET,
            "KAMIWAZA_CA_BUNDLE": str(bundle),
            "KAMIWAZA_MCP_STATE_DIR": str(tmp_path / "state"),
            "KAMIWAZA_MCP_MODELS_DIR": str(tmp_path / "models"),
            "KAMIWAZA_READ_TIMEOUT": "12.5",
            "KAMIWAZA_DEPLOY_TIMEOUT": "90",
        }
    )

    assert settings.base_url == "https://kamiwaza.example.com/api"
    assert settings.is_local is False
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == SECRET
    assert settings.ca_bundle == bundle
    assert settings.state_dir == tmp_path / "state"
    assert settings.models_dir == tmp_path / "models"
    assert settings.timeouts == Timeouts(read=12.5, deploy=90)


def test_api_token_variable_is_accepted() -> None:
    settings = ServerSettings.from_env({"KAMIWAZA_API_TOKEN": SECRET})

    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == SECRET


def test_api_key_wins_over_api_token() -> None:
    settings = ServerSettings.from_env({"KAMIWAZA_API_KEY": SECRET, "KAMIWAZA_API_TOKEN": "other"})

    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == SECRET


def test_api_key_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    settings = ServerSettings.from_env(
        {"KAMIWAZA_BASE_URL": "https://k.example.com/api", "KAMIWAZA_API_KEY": SECRET}
    )
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("settings: %s %r", settings, settings)

    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in settings.model_dump_json()
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
    ],
)
def test_verify_ssl_words(word: str, expected: bool) -> None:
    assert ServerSettings.from_env({"KAMIWAZA_VERIFY_SSL": word}).verify_ssl is expected


@pytest.mark.parametrize(
    ("environ", "fragments"),
    [
        (
            {"KAMIWAZA_BASE_URL": "kamiwaza.example.com/api"},
            ["KAMIWAZA_BASE_URL", "'kamiwaza.example.com/api'", "http"],
        ),
        ({"KAMIWAZA_BASE_URL": "https://k.example.com"}, ["KAMIWAZA_BASE_URL", "https://k.example.com/api"]),
        (
            {"KAMIWAZA_BASE_URL": "ftp://k.example.com/api"},
            ["KAMIWAZA_BASE_URL", "'ftp://k.example.com/api'"],
        ),
        ({"KAMIWAZA_VERIFY_SSL": "maybe"}, ["KAMIWAZA_VERIFY_SSL", "'maybe'", "true or false"]),
        (
            {"KAMIWAZA_CA_BUNDLE": "/nonexistent/ca.pem"},
            ["KAMIWAZA_CA_BUNDLE", "'/nonexistent/ca.pem'", "PEM"],
        ),
        ({"KAMIWAZA_READ_TIMEOUT": "soon"}, ["KAMIWAZA_READ_TIMEOUT", "'soon'", "positive number"]),
        ({"KAMIWAZA_CONNECT_TIMEOUT": "-1"}, ["KAMIWAZA_CONNECT_TIMEOUT", "'-1'"]),
        ({"KAMIWAZA_GENERATE_TIMEOUT": "nan"}, ["KAMIWAZA_GENERATE_TIMEOUT", "'nan'"]),
        ({"KAMIWAZA_DEPLOY_TIMEOUT": "0"}, ["KAMIWAZA_DEPLOY_TIMEOUT", "'0'"]),
    ],
)
def test_invalid_value_names_variable_and_value(environ: dict[str, str], fragments: list[str]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ServerSettings.from_env(environ)

    for fragment in fragments:
        assert fragment in str(caught.value)


def test_state_dir_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    file = tmp_path / "state"
    file.write_text("")

    with pytest.raises(ConfigurationError, match="KAMIWAZA_MCP_STATE_DIR"):
        ServerSettings.from_env({"KAMIWAZA_MCP_STATE_DIR": str(file)})


def test_ca_bundle_with_verify_off_is_rejected(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")

    with pytest.raises(ConfigurationError, match=r"KAMIWAZA_CA_BUNDLE.*KAMIWAZA_VERIFY_SSL"):
        ServerSettings.from_env({"KAMIWAZA_CA_BUNDLE": str(bundle), "KAMIWAZA_VERIFY_SSL": "false"})


def test_invalid_api_key_error_hides_nothing_secret() -> None:
    with pytest.raises(ConfigurationError) as caught:
        ServerSettings.from_env({"KAMIWAZA_API_KEY": SECRET, "KAMIWAZA_VERIFY_SSL": "maybe"})

    assert SECRET not in str(caught.value)


def test_unreadable_ca_bundle_fails_at_build(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    settings = ServerSettings.from_env(
        {"KAMIWAZA_BASE_URL": "https://k.example.com/api", "KAMIWAZA_CA_BUNDLE": str(bundle)}
    )

    with pytest.raises(ConfigurationError) as caught:
        build_server(settings)

    assert f"invalid KAMIWAZA_CA_BUNDLE='{bundle}'" in str(caught.value)
    assert "set it to a PEM file of CA certificates" in str(caught.value)
