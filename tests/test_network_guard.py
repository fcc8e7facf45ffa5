"""The test suite's own guard against traffic beyond loopback (checked without sending anything)."""

from __future__ import annotations

import socket

import pytest
from _loopback_guard import refuse_non_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_connections_pass(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        refuse_non_loopback("socket.connect", (sock, (host, 80)))


@pytest.mark.parametrize("host", ["192.0.2.1", "10.1.2.3", "2001:db8::1", "example.com"])
def test_other_hosts_are_refused(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(ConnectionRefusedError):
        refuse_non_loopback("socket.connect", (sock, (host, 80)))


def test_remote_name_lookup_is_refused() -> None:
    with pytest.raises(OSError, match="loopback"):
        refuse_non_loopback("socket.getaddrinfo", ("huggingface.co", 443, 0, 0, 0))
