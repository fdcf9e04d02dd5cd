"""What the learner's and the backend's metrics share: a registry with the process collectors, and the
Prometheus HTTP exporter that serves it."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector


def process_registry() -> CollectorRegistry:
    """A registry of its own with the process, platform and GC collectors. ``_created`` series are off
    (process-wide: a dashboard never reads them)."""
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Any:
    """Starts the exporter of ``registry``; returns the server, whose ``shutdown()`` stops it (port 0: any
    free port, then ``server.server_port``)."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError:
        if host != "::":
            raise
        # "every interface" on a host without IPv6 (some containers): fall back to every IPv4 one.
        server, _thread = start_http_server(port, addr="0.0.0.0", registry=registry)
    return server
