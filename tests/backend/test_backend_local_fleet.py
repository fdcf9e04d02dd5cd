"""The local fleet refuses a port that is taken, at once and by name, instead of timing out."""

from __future__ import annotations

import socket

import pytest
from conftest import free_ports

from backend_client.local_fleet import LocalFleet


def test_a_taken_port_is_named_before_any_learner_starts() -> None:
    first = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        fleet = LocalFleet(2, port=first, start_timeout=5)
        with pytest.raises(OSError, match=f"127.0.0.1:{first + 1}"):
            fleet.start()
    assert fleet._process is None  # nothing was started, so nothing can be left behind
