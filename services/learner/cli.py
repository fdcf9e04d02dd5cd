"""``colearn-learner``: serve one learner, serve N local learners, or ask a learner's health."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
from typing import Any

from colearn_contract.cli_flags import add_flag

_SETTING_FLAGS = (
    "host",
    "port",
    "metrics_port",
    "data_root",
    "worker_threads",
    "max_message_bytes",
    "grace_seconds",
)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Flags left out keep the value from the environment (COLEARN_*) or the default."""
    add_flag(parser, "host", help="address to bind (default [::], or COLEARN_HOST)")
    add_flag(parser, "port", type=int, help="gRPC port (default 9995)")
    add_flag(parser, "metrics_port", type=int, help="Prometheus port, 0 disables it (default 9091)")
    add_flag(parser, "data_root", help="dataloader locations must lie under this folder")
    add_flag(parser, "worker_threads", type=int, help="gRPC worker threads (default 16)")
    add_flag(parser, "max_message_bytes", type=int, help="gRPC max message size")
    add_flag(parser, "grace_seconds", type=float, help="drain time after SIGTERM (default 10)")
    add_flag(
        parser, "plugins", action="append", help="module to import for its registry decorators (repeatable)"
    )
    add_flag(parser, "log_level", default=os.environ.get("COLEARN_LOG_LEVEL", "INFO"))


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from colearn_learner.settings import Settings

    overrides = {k: getattr(args, k) for k in _SETTING_FLAGS if getattr(args, k, None) is not None}
    if args.plugins:
        overrides["plugins"] = ",".join(args.plugins)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"colearn-learner: invalid configuration: {problems}") from None


def _load_plugins(modules: list[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise SystemExit(f"colearn-learner: cannot load plugin {module!r}: {exc}") from None


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from colearn_learner.factory import ExampleMliFactory
    from colearn_learner.server import GRPCServer

    factory = ExampleMliFactory()
    _load_plugins(settings.plugins)
    try:
        GRPCServer(mli_factory=factory, settings=settings).run()  # logs its ports once it serves
    except OSError as exc:
        raise SystemExit(f"colearn-learner: {exc}") from None
    return 0


def serve_n(args: argparse.Namespace) -> int:
    """Runs N learners as child processes on consecutive ports; SIGINT/SIGTERM stops them all."""
    settings = _settings(args)
    children: list[subprocess.Popen[bytes]] = []
    passed = [f"--log-level={args.log_level}"]
    for flag in ("host", "data_root", "worker_threads", "max_message_bytes", "grace_seconds"):
        if getattr(args, flag) is not None:
            passed.append(f"--{flag}={getattr(args, flag)}")
    passed += [f"--plugins={p}" for p in settings.plugins]

    def stop_children(signum: int = signal.SIGTERM, frame: Any = None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    for i in range(args.n_learners):
        metrics_port = settings.metrics_port + i if settings.metrics_port else 0
        command = [
            sys.executable, "-m", "colearn_learner", "serve",
            f"--port={settings.port + i}", f"--metrics-port={metrics_port}", *passed,
        ]  # fmt: skip
        children.append(subprocess.Popen(command))
        print(
            f"learner {i}: pid {children[-1].pid} port {settings.port + i} metrics {metrics_port}", flush=True
        )
    codes = [child.wait() for child in children]
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def health(args: argparse.Namespace) -> int:
    """Exits 0 when the service is SERVING: the container HEALTHCHECK and probes use this."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{args.address} {args.service or '(server)'}: {exc.code().name}: {exc.details()}")
            return 1
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.address} {args.service or '(server)'}: {state}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colearn-learner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="serve one learner")
    _add_setting_flags(p)
    p.set_defaults(func=serve)
    p = commands.add_parser("serve-n", help="serve N learners on consecutive ports")
    _add_setting_flags(p)
    add_flag(p, "n_learners", type=int, default=5, help="how many learners (default 5)")
    p.set_defaults(func=serve_n)
    p = commands.add_parser("health", help="exit 0 when a learner is SERVING")
    add_flag(p, "address", default="127.0.0.1:9995", help="host:port (default 127.0.0.1:9995)")
    add_flag(
        p, "service", default="", help='health service: "" (the server) or colearn.v1.Learner (the model)'
    )
    add_flag(p, "timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    p.set_defaults(func=health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "WARNING")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)
