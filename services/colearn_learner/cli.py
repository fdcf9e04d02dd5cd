"""``colearn-learner``: serve one learner, serve N local learners, or ask a learner's health."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from colearn_runtime.cli_flags import add_flag, add_version

# Settings that have a flag: (name, type, help). Flags left out keep the value from the environment
# (COLEARN_*) or the default; serve-n hands every given one on to its children.
_SETTING_FLAGS: tuple[tuple[str, Any, str], ...] = (
    ("host", str, "address to bind (default [::])"),
    ("port", int, "gRPC port (default 9995)"),
    ("metrics_port", int, "Prometheus port, 0 disables it (default 9091)"),
    ("data_root", str, "dataloader locations must lie under this folder"),
    ("worker_threads", int, "gRPC worker threads (default 16)"),
    ("max_message_bytes", int, "gRPC max message size"),
    ("grace_seconds", float, "drain time after SIGTERM (default 10)"),
    ("max_weights_bytes", int, "cap on a weights stream's declared total_bytes (default 4 GiB)"),
    ("max_concurrent_streams", int, "calls one client connection may have open at once (default 64)"),
    ("stream_timeout_seconds", float, "deadline for receiving one weights stream (default 300)"),
    ("tls_cert", str, "PEM certificate chain: serve TLS (with --tls_key)"),
    ("tls_key", str, "PEM private key of --tls_cert"),
    ("tls_client_ca", str, "PEM CA bundle: require client certificates it signed (mTLS)"),
    ("auth_token", str, "bearer token every call but health must carry; prefer COLEARN_AUTH_TOKEN"),
    ("health_port", int, "plaintext port serving only gRPC health, for probes under TLS"),
    ("checkpoint_dir", str, "folder for this learner's checkpoints (serve-n: a learner_<i> folder each)"),
)
_PER_LEARNER = ("port", "metrics_port", "health_port", "checkpoint_dir")  # serve-n gives each child its own
# serve-n hands these to its children in their environment, not on their command line.
_SECRET = ("auth_token",)


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}; valid: DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    return level


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, kind, help_text in _SETTING_FLAGS:
        add_flag(parser, name, type=kind, help=help_text)
    add_flag(
        parser, "plugins", action="append", help="module to import for its registry decorators (repeatable)"
    )
    add_flag(parser, "log_level", type=_log_level, default=None, help="default INFO, or COLEARN_LOG_LEVEL")


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from colearn_learner.settings import Settings

    overrides = {
        name: getattr(args, name) for name, _, _ in _SETTING_FLAGS if getattr(args, name) is not None
    }
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
    # `python -m` puts the working directory on sys.path and console scripts do not; plugins next to the
    # operator's shell must load the same either way.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise SystemExit(f"colearn-learner: cannot load plugin {module!r}: {exc}") from None


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from colearn_learner.factory import ExampleMliFactory
    from colearn_learner.server import GRPCServer
    from colearn_runtime.memory_reuse import reuse_freed_memory

    reuse_freed_memory(one_heap=False)  # this process is a learner: it streams weights all its life

    factory = ExampleMliFactory()
    _load_plugins(settings.plugins)
    try:
        GRPCServer(mli_factory=factory, settings=settings).run()  # logs its ports once it serves
    except OSError as exc:
        raise SystemExit(f"colearn-learner: {exc}") from None
    # The grace period is over: calls still running (a long training step) end with the process, rather
    # than holding the exit until they finish, past the time an orchestrator gives before SIGKILL.
    logging.shutdown()
    os._exit(0)


def serve_n(args: argparse.Namespace) -> int:
    """Runs N learners as child processes on consecutive ports; SIGINT/SIGTERM stops them all.

    A child that fails on its own (it could not bind its port, say) stops the others too, so that a
    half-started fleet never looks like a working one. A child killed by a signal is reported and the
    rest go on: that is how an operator takes one learner out of a round on purpose.
    """
    settings = _settings(args)
    passed = [f"--log-level={args.log_level}"] if args.log_level else []
    for name, _, _ in _SETTING_FLAGS:
        if name not in (*_PER_LEARNER, *_SECRET) and getattr(args, name) is not None:
            passed.append(f"--{name}={getattr(args, name)}")
    passed += [f"--plugins={p}" for p in settings.plugins]
    # Any process on the host can read another's command line (ps, /proc/PID/cmdline), but not its
    # environment: the token goes to the children there.
    child_env = dict(os.environ)
    if settings.auth_token is not None:
        child_env["COLEARN_AUTH_TOKEN"] = settings.auth_token.get_secret_value()
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop_children(signum: int = signal.SIGTERM, frame: Any = None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    for i in range(args.n_learners):
        if stopping:
            break
        port = settings.port + i
        metrics_port = settings.metrics_port + i if settings.metrics_port else 0
        command = [
            sys.executable, "-m", "colearn_learner", "serve",
            f"--port={port}", f"--metrics-port={metrics_port}", *passed,
        ]  # fmt: skip
        if settings.health_port is not None:
            command.append(f"--health-port={settings.health_port + i if settings.health_port else 0}")
        if settings.checkpoint_dir is not None:  # checkpoints must never be shared between learners
            command.append(f"--checkpoint-dir={settings.checkpoint_dir / f'learner_{i}'}")
        children.append(subprocess.Popen(command, env=child_env))
        print(f"learner {i}: pid {children[-1].pid} port {port} metrics {metrics_port}", flush=True)
    failed = False
    reported: set[int] = set()
    while any(child.poll() is None for child in children):
        for i, child in enumerate(children):
            code = child.poll()
            if code is None or i in reported:
                continue
            reported.add(i)
            if code > 0 and not stopping:
                print(
                    f"learner {i} exited with code {code}; stopping the others", file=sys.stderr, flush=True
                )
                failed = True
                stop_children()
            elif code < 0 and not stopping:
                print(f"learner {i} was ended by signal {-code}", file=sys.stderr, flush=True)
        time.sleep(0.1)
    codes = [child.returncode for child in children]
    return 1 if failed or any(code > 0 for code in codes) else 0


def _health_channel(args: argparse.Namespace) -> Any:
    """TLS when a CA is given (``--tls_ca`` or ``COLEARN_TLS_CA``). The client certificate defaults to the
    learner's own (``COLEARN_TLS_CERT``/``COLEARN_TLS_KEY``), so that inside a learner's container a
    HEALTHCHECK can reach its mTLS port; the plaintext health port needs none of this."""
    from colearn_runtime.transport_security import ClientSecurity, TransportSecurityError

    ca = args.tls_ca or os.environ.get("COLEARN_TLS_CA") or None
    cert, key = args.tls_cert, args.tls_key
    if ca and cert is None and key is None:
        cert, key = os.environ.get("COLEARN_TLS_CERT") or None, os.environ.get("COLEARN_TLS_KEY") or None
    try:
        security = ClientSecurity(
            tls_ca=_path(ca), tls_cert=_path(cert), tls_key=_path(key), tls_server_name=args.tls_server_name
        )
        return security.channel(args.address, [])  # a file that cannot be used fails here, with its name
    except TransportSecurityError as exc:
        raise SystemExit(f"colearn-learner health: {exc}") from None


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def health(args: argparse.Namespace) -> int:
    """Exits 0 when the service is SERVING: the container HEALTHCHECK and probes use this."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _health_channel(args) as channel:
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
    add_version(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="serve one learner")
    _add_setting_flags(p)
    add_version(p)
    p.set_defaults(func=serve)
    p = commands.add_parser("serve-n", help="serve N learners on consecutive ports")
    _add_setting_flags(p)
    add_version(p)
    add_flag(p, "n_learners", type=int, default=5, help="how many learners (default 5)")
    p.set_defaults(func=serve_n)
    p = commands.add_parser("health", help="exit 0 when a learner is SERVING")
    add_flag(p, "address", default="127.0.0.1:9995", help="host:port (default 127.0.0.1:9995)")
    add_flag(
        p, "service", default="", help='health service: "" (the server) or colearn.v1.Learner (the model)'
    )
    add_flag(p, "timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    add_flag(p, "tls_ca", help="PEM CA that signed the learner's certificate: use TLS (or COLEARN_TLS_CA)")
    add_flag(p, "tls_cert", help="PEM client certificate for mTLS (default COLEARN_TLS_CERT under TLS)")
    add_flag(p, "tls_key", help="PEM key of --tls_cert (default COLEARN_TLS_KEY under TLS)")
    add_flag(p, "tls_server_name", help="name to check the learner's certificate against")
    add_version(p)
    p.set_defaults(func=health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", None) or os.environ.get("COLEARN_LOG_LEVEL", "INFO")
    try:
        level = _log_level(level)
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"colearn-learner: {exc}") from None
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)
