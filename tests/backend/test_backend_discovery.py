"""Where the learners are: explicit lists, consecutive ports, StatefulSet ordinals and DNS."""

from __future__ import annotations

import pytest

from backend_client import discovery


def test_explicit_list_is_split_trimmed_and_kept_in_order() -> None:
    assert discovery.explicit("b:2, a:1 ,c.example:9995") == ["b:2", "a:1", "c.example:9995"]
    assert discovery.explicit("a:1,,b:2,") == ["a:1", "b:2"]
    assert discovery.explicit("[::1]:9995,127.0.0.1:9996") == ["[::1]:9995", "127.0.0.1:9996"]
    assert discovery.explicit("") == []


@pytest.mark.parametrize("bad", ["learner", "learner:", ":9995", "learner:port", "a:1,b", "a:1,b:-2"])
def test_explicit_entries_without_host_and_port_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        discovery.explicit(bad)


def test_consecutive_ports_is_the_tutorial_layout() -> None:
    assert discovery.consecutive_ports(3) == ["127.0.0.1:9995", "127.0.0.1:9996", "127.0.0.1:9997"]
    assert discovery.consecutive_ports(2, "learners.local", 7000) == [
        "learners.local:7000",
        "learners.local:7001",
    ]
    assert discovery.consecutive_ports(0) == []


def test_stateful_set_ordinals() -> None:
    assert discovery.stateful_set("learner-{i}.learners:9995", 3) == [
        "learner-0.learners:9995",
        "learner-1.learners:9995",
        "learner-2.learners:9995",
    ]
    assert discovery.stateful_set("colearn-learner-{i}.colearn-learner.ns.svc.cluster.local:9995", 1) == [
        "colearn-learner-0.colearn-learner.ns.svc.cluster.local:9995"
    ]


def test_stateful_set_pattern_needs_the_ordinal() -> None:
    with pytest.raises(ValueError, match=r"\{i\}"):
        discovery.stateful_set("learner-0.learners:9995", 3)


def test_dns_name_gives_every_address_with_the_port() -> None:
    addresses = discovery.dns("localhost", 9995)
    assert "127.0.0.1:9995" in addresses
    assert addresses == sorted(set(addresses), key=addresses.index)  # no duplicates
    assert all(a.endswith(":9995") for a in addresses)
    # IPv6 addresses are bracketed, so that host:port stays unambiguous.
    assert all(a.startswith("[") for a in addresses if a.count(":") > 1)


def test_dns_of_a_literal_address() -> None:
    assert discovery.dns("127.0.0.1", 1234) == ["127.0.0.1:1234"]


def test_dns_results_are_valid_explicit_addresses() -> None:
    addresses = discovery.dns("localhost", 9995)
    assert discovery.explicit(",".join(addresses)) == addresses
