"""Where the learners are: an explicit list, a DNS name with many addresses, or StatefulSet ordinals."""

from __future__ import annotations

import ipaddress
import socket

from colearn_runtime.ports import LEARNER_PORT


def explicit(addresses: str) -> list[str]:
    """``"h:p,h:p"`` -> ``["h:p", "h:p"]``; each entry must name a port."""
    found = [a.strip() for a in addresses.split(",") if a.strip()]
    for address in found:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"learner address {address!r} must be host:port")
    return found


def consecutive_ports(n_learners: int, host: str = "127.0.0.1", port: int = LEARNER_PORT) -> list[str]:
    """The tutorial's layout: N learners on one host, on ports ``port``, ``port+1``, ..."""
    return [f"{host}:{port + i}" for i in range(n_learners)]


def dns(name: str, port: int) -> list[str]:
    """Every address a name resolves to, sorted: compose gives a scaled service one name for all replicas."""
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    # Numeric order, IPv4 first, so that learner i is the same replica on every call.
    hosts = sorted({ipaddress.ip_address(info[4][0]) for info in infos}, key=lambda h: (h.version, h))
    return [f"[{h}]:{port}" if h.version == 6 else f"{h}:{port}" for h in hosts]


def stateful_set(pattern: str, replicas: int) -> list[str]:
    """Kubernetes StatefulSet pods have stable names: ``learner-{i}.learners:PORT`` for i in 0..N-1."""
    if "{i}" not in pattern:
        raise ValueError(
            "a StatefulSet pattern needs {i} where the ordinal goes, "
            f"e.g. learner-{{i}}.learners:{LEARNER_PORT}"
        )
    try:
        return [pattern.format(i=i) for i in range(replicas)]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"a StatefulSet pattern may hold only {{i}} in braces, not {pattern!r}: {exc}"
        ) from None
