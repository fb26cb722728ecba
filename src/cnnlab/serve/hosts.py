"""Which ``Host`` headers the server answers when it listens beyond loopback.

A server reachable from other machines should answer only requests addressed to it: a
request naming another host is a misrouted request or a DNS-rebinding page in someone's
browser. The accepted names are the bound address, the address the client connected to,
this machine's names, the loopback names, and any the user adds (``--allowed-host``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

__all__ = ["LOOPBACK_NAMES", "allowed_hosts", "host_name", "is_loopback"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port, lower-case; ``[::1]:80`` -> ``::1``."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The host names to accept when listening on ``bound``; None (accept any) on loopback."""
    if is_loopback(bound):
        return None
    names = set(LOOPBACK_NAMES) | {host_name(name) for name in extra if name.strip()}
    if bound not in _ANY:
        names.add(host_name(bound))
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower().rstrip("."))
    return frozenset(names)
