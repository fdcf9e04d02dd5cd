"""``GRPCServer``: one learner process's gRPC server, with health, reflection and metrics beside it."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from colearn_contract import SERVICE_NAME, __version__
from colearn_contract.grpc_options import server_options
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_learner.factory import MliFactory
from colearn_learner.health import LearnerHealth
from colearn_learner.interceptors import MetricsInterceptor, RequestDecodingInterceptor
from colearn_learner.metrics import LearnerMetrics
from colearn_learner.model_host import ModelHost
from colearn_learner.servicer import LearnerServicer
from colearn_learner.settings import Settings

_log = logging.getLogger(__name__)


def _probe_threads(worker_threads: int) -> int:
    """Worker threads kept free of model calls, for health checks, status and queries."""
    return min(4, worker_threads // 2)


class GRPCServer:
    """Serves one MLI factory. ``run()`` blocks until SIGTERM/SIGINT or ``stop()``; ``start()`` does not."""

    def __init__(
        self,
        mli_factory: MliFactory,
        port: int | None = None,
        metrics_port: int | None = None,
        *,
        settings: Settings | None = None,
        host: str | None = None,
    ) -> None:
        overrides: dict[str, Any] = {
            k: v
            for k, v in {"port": port, "metrics_port": metrics_port, "host": host}.items()
            if v is not None
        }
        base = settings or Settings()
        # Validated like any other setting: a port of -7 fails here, not at bind time.
        self.settings = Settings(**{**base.model_dump(), **overrides}) if overrides else base
        self.metrics = LearnerMetrics()
        self.health = LearnerHealth()
        self.model_host = ModelHost(
            mli_factory,
            self.metrics,
            data_root=self.settings.data_root,
            proposal_cache_size=self.settings.proposal_cache_size,
            on_ready=self.health.model_ready,
        )
        self._servicer = LearnerServicer(
            mli_factory,
            self.model_host,
            self.metrics,
            max_weights_bytes=self.settings.max_weights_bytes,
            part_bytes=self.settings.part_bytes,
            max_model_calls=self.settings.worker_threads - _probe_threads(self.settings.worker_threads),
        )
        self.metrics.set_info(version=__version__, model="", dataloader="")
        self._server: grpc.Server | None = None
        self._metrics_server: Any = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.port = 0
        self.metrics_port = 0

    def start(self) -> GRPCServer:
        if self._stopped.is_set():
            raise RuntimeError("this server was stopped; build a new GRPCServer to serve again")
        s = self.settings
        # Metrics first: nothing is bound yet if their port is taken. (A gRPC server that never started
        # cannot give its port back until it is garbage-collected.)
        if s.metrics_port:
            try:
                self._metrics_server = self.metrics.serve(s.metrics_address, s.metrics_port)
            except OSError as exc:
                raise OSError(f"cannot listen on metrics port {s.metrics_port}: {exc}") from exc
            self.metrics_port = self._metrics_server.server_port
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.worker_threads, thread_name_prefix="learner-rpc"),
            interceptors=[MetricsInterceptor(self.metrics), RequestDecodingInterceptor()],
            options=server_options(s.max_message_bytes),
        )
        pb_grpc.add_LearnerServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        reflection.enable_server_reflection(
            (
                pb.DESCRIPTOR.services_by_name["Learner"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        try:
            self.port = server.add_insecure_port(s.bind_address)
        except RuntimeError as exc:
            self._close_metrics()
            raise OSError(f"cannot listen on {s.bind_address}: {exc}") from exc
        server.start()
        self._server = server
        self.health.listening()
        _log.info(
            "learner serving %s on port %d, metrics on %s", SERVICE_NAME, self.port, self.metrics_port or "-"
        )
        return self

    def run(self) -> None:
        """Serves until SIGTERM or SIGINT (or ``stop()``), then drains in-flight calls."""
        # Handlers first: a SIGTERM that lands just after the learner reports SERVING must drain it too.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(
                    sig, lambda signum, frame: threading.Thread(target=self.stop, daemon=True).start()
                )
        if self._server is None and not self._stopped.is_set():
            self.start()
        self._stopped.wait()

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first, then no new calls; in-flight calls get ``grace`` seconds to finish."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self._server is not None:
                self.health.shutting_down()
                grace = self.settings.grace_seconds if grace is None else grace
                self._server.stop(grace).wait()
                _log.info("learner on port %d stopped", self.port)
            self._close_metrics()
            self._stopped.set()

    def _close_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
