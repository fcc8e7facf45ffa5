"""An audit hook that fails any connection or name lookup beyond loopback made by the test process."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_LOCAL_NAMES = {"localhost", "localhost.localdomain", socket.gethostname()}


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def refuse_non_loopback(event: str, args: tuple[Any, ...]) -> None:
    """Fail any connection or name lookup beyond loopback made by the test process."""
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"tests must stay on loopback; refused a connection to {address!r}")
    elif event == "socket.getaddrinfo" and args[0] is not None and not _is_loopback(args[0]):
        raise OSError(f"tests must stay on loopback; refused a name lookup of {args[0]!r}")
