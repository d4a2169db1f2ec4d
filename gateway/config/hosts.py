"""Addresses to listen on: what server.host (and `--host`) may be, their URLs, and when serving one needs keys."""

from __future__ import annotations

import ipaddress
import re


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?$")


def host_problem(host: str) -> str | None:
    """What is wrong with an address to listen on (server.host, `--host`): an IP address or a host name."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        return None
    except ValueError:
        pass
    if _HOST_NAME.match(host) and not host.replace(".", "").isdigit():
        return None
    return "must be an IP address (such as 127.0.0.1, 0.0.0.0 or ::1) or a host name"


def listen_url(host: str, port: int) -> str:
    """The URL of a listening address: an IPv6 address in brackets (http://[::1]:8080)."""
    bare = host.strip("[]")
    return f"http://[{bare}]:{port}" if ":" in bare else f"http://{host}:{port}"


def exposure_problem(open_access: bool, auth: str | None, host: str) -> str | None:
    """Secure default: without client keys the gateway serves loopback only, unless `auth: none` is written."""
    if open_access and auth is None and not is_loopback(host):
        return (f"serving {host} without client keys would let anyone reach the providers: add keys "
                f"(auth: keys), or write 'auth: none' to serve it open on purpose")
    return None
