"""``GRPCServer``: one learner process's gRPC server, with health, reflection and metrics beside it."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from colearn_contract import SERVICE_NAME, __version__
from colearn_contract.v1 import learner_pb2 as pb
from colearn_contract.v1 import learner_pb2_grpc as pb_grpc
from colearn_learner.factory import MliFactory
from colearn_learner.health import LearnerHealth
from colearn_learner.interceptors import (
    BearerTokenInterceptor,
    MetricsInterceptor,
    RequestDecodingInterceptor,
    SerializedResponsesInterceptor,
)
from colearn_learner.metrics import LearnerMetrics
from colearn_learner.model_host import ModelHost
from colearn_learner.servicer import LearnerServicer
from colearn_learner.settings import Settings
from colearn_runtime.grpc_options import health_server_options, server_options
from colearn_runtime.transport_security import server_credentials

_log = logging.getLogger(__name__)


_HEALTH_PORT_THREADS = 2  # Check is quick and Watch does not hold a thread (non-blocking health servicer)
_HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _health_only_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
    return pool


def _probe_threads(worker_threads: int) -> int:
    """Worker threads kept free of model calls, for health checks, status and queries."""
    return min(4, worker_threads // 2)


def server_settings(settings: Settings | None = None, **overrides: Any) -> Settings:
    """A server's settings, made in one place: ``settings``, else the ``COLEARN_*`` environment, with the
    keyword arguments that are not None over them, validated by ``Settings`` (a port of -7 fails here,
    not at bind time). Any ``Settings`` field may be given by name.

    Built from the environment, a server serves metrics only where it is asked to (``metrics_port=`` or
    ``COLEARN_METRICS_PORT``): the tutorial builds several servers in one script, and one default port
    would let only the first of them start."""
    overrides = _colearn_keywords(overrides)
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise TypeError(f"GRPCServer() got an unexpected keyword argument {unknown[0]!r}")
    given = {name: value for name, value in overrides.items() if value is not None}
    if settings is None:
        settings = Settings()
        if "metrics_port" not in settings.model_fields_set:
            given.setdefault("metrics_port", 0)
    return settings.updated(**given)


def _colearn_keywords(overrides: dict[str, Any]) -> dict[str, Any]:
    """colearn's own ``GRPCServer`` keywords as settings: ``max_workers`` is ``worker_threads`` (at least
    2: one thread stays free for health checks), and ``enable_encryption`` with ``server_key`` and
    ``server_crt`` (PEM file paths) turns TLS on."""
    overrides = dict(overrides)
    max_workers = overrides.pop("max_workers", None)
    if max_workers is not None:
        overrides.setdefault(
            "worker_threads", max(2, max_workers) if isinstance(max_workers, int) else max_workers
        )
    key, crt = overrides.pop("server_key", None), overrides.pop("server_crt", None)
    if overrides.pop("enable_encryption", False):
        if not (key and crt):
            raise ValueError("enable_encryption needs server_key and server_crt (PEM file paths)")
        overrides.setdefault("tls_key", key)
        overrides.setdefault("tls_cert", crt)
    return overrides


class GRPCServer:
    """Serves one MLI factory. ``run()`` blocks until SIGTERM/SIGINT or ``stop()``; ``start()`` does not.

    Settings come from ``settings``, else from the ``COLEARN_*`` environment, and the keyword arguments
    (``port=``, ``metrics_port=``, ``host=``, or any other ``Settings`` field) override them: see
    ``server_settings``. A server built in code without ``settings`` serves metrics only where it is asked
    to (``colearn-learner serve`` keeps the default metrics port, as the tutorial's did).

    A server that has not started can be handed to another process (``Process(target=server.run)``, with
    the fork or the spawn start method); the factory must then be picklable too.
    """

    def __init__(
        self,
        mli_factory: MliFactory,
        port: int | None = None,
        metrics_port: int | None = None,
        *,
        settings: Settings | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = server_settings(settings, port=port, metrics_port=metrics_port, **overrides)
        self._factory = mli_factory
        self.metrics = LearnerMetrics()
        self.metrics.declare_methods(pb.DESCRIPTOR.services_by_name["Learner"])
        self.health = LearnerHealth()
        self.model_host = ModelHost(
            mli_factory,
            self.metrics,
            data_root=self.settings.data_root,
            proposal_cache_size=self.settings.proposal_cache_size,
            checkpoint_dir=self.settings.checkpoint_dir,
            on_ready=self.health.model_ready,
        )
        self._servicer = LearnerServicer(
            mli_factory,
            self.model_host,
            self.metrics,
            max_weights_bytes=self.settings.max_weights_bytes,
            part_bytes=self.settings.part_bytes,
            max_model_calls=self.settings.worker_threads - _probe_threads(self.settings.worker_threads),
            stream_timeout_seconds=self.settings.stream_timeout_seconds,
        )
        self.metrics.set_info(version=__version__, model="", dataloader="")
        self._server: grpc.Server | None = None
        self._metrics_server: Any = None
        self._health_server: grpc.Server | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.port = 0
        self.metrics_port = 0
        self.health_port = 0

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuilt from its factory and settings in the other process (the spawn start method)."""
        if self._server is not None or self._stopped.is_set():
            raise TypeError("only a GRPCServer that has not started can move to another process")
        return (functools.partial(GRPCServer, settings=self.settings), (self._factory,))

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
        try:
            credentials = server_credentials(s.tls_cert, s.tls_key, s.tls_client_ca)
        except ValueError as exc:
            self._close_metrics()
            raise OSError(str(exc)) from exc
        if s.health_port is not None:
            try:
                self._health_server = self._start_health_server(s)
            except RuntimeError as exc:
                self._close_metrics()
                raise OSError(f"cannot listen on health port {s.health_port}: {exc}") from exc
        interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(self.metrics)]
        if s.auth_token is not None:
            # Before decoding: a caller without the token learns nothing, not even whether its bytes parse.
            interceptors.append(BearerTokenInterceptor(s.auth_token.get_secret_value()))
            if credentials is None:
                _log.warning("auth_token is set without TLS: the token crosses the network in clear")
        interceptors += [RequestDecodingInterceptor(), SerializedResponsesInterceptor()]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.worker_threads, thread_name_prefix="learner-rpc"),
            interceptors=interceptors,
            options=server_options(s.max_message_bytes, s.max_concurrent_streams),
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
            if credentials is None:
                self.port = server.add_insecure_port(s.bind_address)
            else:
                self.port = server.add_secure_port(s.bind_address, credentials)
        except RuntimeError as exc:
            self._close_side_ports()
            raise OSError(f"cannot listen on {s.bind_address}: {exc}") from exc
        server.start()
        self._server = server
        self.health.listening()
        _log.info(
            "learner serving %s on port %d (%s%s), metrics on %s, health on %s",
            SERVICE_NAME,
            self.port,
            "plaintext" if credentials is None else ("mTLS" if s.tls_client_ca else "TLS"),
            ", bearer token" if s.auth_token is not None else "",
            self.metrics_port or "-",
            self.health_port or "-",
        )
        return self

    def _start_health_server(self, s: Settings) -> grpc.Server:
        """A plaintext port that carries only gRPC health, for probes that cannot speak the main port's
        TLS (Kubernetes' grpc probes, a container HEALTHCHECK). It shares the main port's health servicer,
        so both always report the same status; reflection lists only health, so that grpcurl works."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=_HEALTH_PORT_THREADS, thread_name_prefix="learner-health"),
            interceptors=[MetricsInterceptor(self.metrics)],
            options=health_server_options(),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        # Reflection here knows the health and reflection protos only: `grpcurl describe` of the learner's
        # API must not work on a port that needs neither TLS nor the token.
        reflection.enable_server_reflection(
            (_HEALTH_SERVICE, reflection.SERVICE_NAME), server, pool=_health_only_pool()
        )
        self.health_port = server.add_insecure_port(f"{s.host}:{s.health_port}")
        server.start()
        return server

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
                stopped = self._server.stop(grace)  # no new calls from here on
                self.health.end_watches()  # watchers have seen NOT_SERVING; they must not hold the grace
                stopped.wait()
                _log.info("learner on port %d stopped", self.port)
            self._close_side_ports()
            self.health.close()
            self._stopped.set()

    def _close_side_ports(self) -> None:
        if self._health_server is not None:
            self._health_server.stop(0).wait()
            self._health_server = None
        self._close_metrics()

    def _close_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
