"""Prometheus metrics of one learner, served on a port of their own.

Each learner has its own ``CollectorRegistry`` (with the process, platform and GC collectors that the
default registry would have), so that several learners can live in one process, as in tests, without
their series colliding. RPC series follow the grpc-ecosystem ``grpc_server_*`` names and label sets that
existing dashboards expect: ``grpc_code`` on the handled counter, not on the latency histogram (a code per
method would multiply its buckets for quantiles that are read per method). The model series are prefixed
``colearn_``. ``_created`` series are off: they double every counter's and histogram's series, and nothing
reads them (``disable_created_metrics`` is process-wide; the backend's metrics turn it off too).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    Info,
)

from colearn_runtime.metrics_exporter import process_registry, serve_metrics

_RPC_LABELS = ["grpc_service", "grpc_method", "grpc_type"]
_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def rpc_type(request_streaming: bool, response_streaming: bool) -> str:
    """The ``grpc_type`` label: the interceptor and ``declare_methods`` must name a method alike."""
    if request_streaming and response_streaming:
        return "bidi_stream"
    if request_streaming:
        return "client_stream"
    if response_streaming:
        return "server_stream"
    return "unary"


class LearnerMetrics:
    def __init__(self) -> None:
        self.registry = process_registry()
        r = self.registry
        self.rpc_started = Counter(
            "grpc_server_started", "RPCs started on the server", _RPC_LABELS, registry=r
        )
        self.rpc_handled = Counter(
            "grpc_server_handled", "RPCs completed, by status code", [*_RPC_LABELS, "grpc_code"], registry=r
        )
        self.rpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its last response",
            _RPC_LABELS,
            buckets=_SECONDS,
            registry=r,
        )
        self.weight_bytes = Counter(
            "colearn_weight_bytes", "Encoded weight bytes moved", ["direction", "method"], registry=r
        )
        self.train_seconds = Histogram(
            "colearn_train_seconds", "Time to train a proposal", buckets=_SECONDS, registry=r
        )
        self.eval_seconds = Histogram(
            "colearn_eval_seconds",
            "Time to evaluate weights on vote and test data",
            buckets=_SECONDS,
            registry=r,
        )
        self.votes = Counter("colearn_votes", "Votes cast, by outcome", ["outcome"], registry=r)
        self.accepted = Counter("colearn_accepted_proposals", "Proposals accepted as current", registry=r)
        self.vote_score = Gauge("colearn_vote_score", "Vote score of the current weights", registry=r)
        self.test_score = Gauge("colearn_test_score", "Test score of the current weights", registry=r)
        self.model_parameters = Gauge(
            "colearn_model_parameters", "Number of scalar parameters in the model", registry=r
        )
        self.model_ready = Gauge("colearn_model_ready", "1 once MLSetup has succeeded", registry=r)
        self.checkpoint_writes = Counter(
            "colearn_checkpoint_writes",
            "Checkpoints written, by outcome (ok, error)",
            ["outcome"],
            registry=r,
        )
        self.checkpoint_loads = Counter(
            "colearn_checkpoint_loads",
            "Checkpoints read at set-up, by outcome (resumed, corrupt: refused, the model starts fresh)",
            ["outcome"],
            registry=r,
        )
        self.info = Info("colearn_learner", "What this learner runs", registry=r)

    def declare_methods(self, service: Any) -> None:
        """Creates every method's started, ``OK`` and latency series at zero, before the first call.

        A counter that appears only at its first increment hides that increment from ``rate()`` and
        ``increase()``: a fleet's first rounds would not show on the dashboard or in the alert rules.
        ``service`` is a protobuf ``ServiceDescriptor``.
        """
        for method in service.methods:
            kind = rpc_type(method.client_streaming, method.server_streaming)
            labels = (service.full_name, method.name, kind)
            self.rpc_started.labels(*labels)
            self.rpc_handled.labels(*labels, "OK")
            self.rpc_seconds.labels(*labels)

    def set_info(self, **labels: Any) -> None:
        self.info.info({k: str(v) for k, v in labels.items()})

    def serve(self, host: str, port: int) -> Any:
        """Starts the HTTP exporter (``colearn_runtime.metrics_exporter``); ``shutdown()`` stops it."""
        return serve_metrics(self.registry, host, port)
