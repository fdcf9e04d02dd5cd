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
from colearn_runtime.ports import LEARNER_PORT


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}; valid: DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    return level


_METAVARS: dict[Any, str] = {int: "N", float: "SECONDS", Path: "PATH", str: "TEXT"}
_LIST_METAVARS = {"plugins": "MODULE", "model_families": "FAMILY"}


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every ``Settings`` field, in both spellings, with its help made from the field.

    A number's flag parses as one; ``Settings`` checks every value, so that a bad one gives the same one-line
    error as a bad ``COLEARN_*`` variable. A flag left out is None: the environment or the default applies.
    """
    from colearn_learner.settings import (
        Settings,
        default_text,
        env_variable,
        is_list,
        is_secret,
        limits_text,
        value_type,
    )

    for name, field in Settings.model_fields.items():
        if not field.description:
            raise TypeError(f"Settings.{name} has no description: its flag would have no help")
        default = None if is_secret(field) else default_text(field)
        notes = [
            "repeatable" if is_list(field) else limits_text(field),
            f"default {default}" if default is not None else None,
            f"env {env_variable(name)}" + (", comma-separated" if is_list(field) else ""),
        ]
        help_text = f"{field.description} ({', '.join(note for note in notes if note)})"
        kind = value_type(field)
        add_flag(
            parser,
            name,
            action="append" if is_list(field) else "store",
            type=kind if kind in (int, float) else str,
            metavar=_LIST_METAVARS.get(name, "NAME") if is_list(field) else _METAVARS.get(kind, "SECRET"),
            help=help_text.replace("%", "%%"),  # argparse formats help with %
        )
    add_flag(parser, "log_level", type=_log_level, default=None, help="default INFO, or COLEARN_LOG_LEVEL")


class _CommandParser(argparse.ArgumentParser):
    """A command's parser. With ``setting_flags`` (``serve``, ``serve-n``) it adds the setting flags when it
    first parses, so that the other commands (``health``: the container HEALTHCHECK, run every few seconds)
    never import pydantic."""

    def __init__(self, *args: Any, setting_flags: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setting_flags_pending = setting_flags
        self._settings_command = setting_flags

    def error(self, message: str) -> Any:
        if self._settings_command and message.startswith("argument "):  # a setting's value: one line
            self.exit(2, f"colearn-learner: invalid configuration: {message}\n")
        super().error(message)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._setting_flags_pending:
            self._setting_flags_pending = False
            add_setting_flags(self)
        return super().parse_known_args(args, namespace)


def invalid_configuration(exc: Any) -> str:
    """A ``ValidationError`` of ``Settings`` as one line that names each setting at fault."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
    return f"colearn-learner: invalid configuration: {problems}"


def _settings(args: argparse.Namespace) -> Any:
    """The environment (``COLEARN_*``) and the defaults, with the flags given over them."""
    from pydantic import ValidationError

    from colearn_learner.settings import Settings

    overrides: dict[str, Any] = {
        name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    for name, value in overrides.items():
        if isinstance(value, list):  # a repeatable flag; each value may be a comma-separated list too
            overrides[name] = ",".join(value)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SystemExit(invalid_configuration(exc)) from None


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

    from colearn_learner.model_families import ModelFamilyError

    try:
        factory = ExampleMliFactory(families=settings.model_families)
    except ModelFamilyError as exc:
        raise SystemExit(f"colearn-learner: {exc}") from None
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
    learners = [_learner_settings(settings, i) for i in range(args.n_learners)]
    # Each learner reads its settings from its environment, made from the validated settings above; none
    # travels on its command line, which any process on the host can read (ps, /proc/PID/cmdline).
    inherited = {k: v for k, v in os.environ.items() if k not in _setting_variables()}
    inherited["COLEARN_LOG_LEVEL"] = args.log_level
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
    for i, learner in enumerate(learners):
        if stopping:
            break
        command = [sys.executable, "-m", "colearn_learner", "serve"]
        children.append(subprocess.Popen(command, env={**inherited, **learner.to_environment()}))
        print(
            f"learner {i}: pid {children[-1].pid} port {learner.port} metrics {learner.metrics_port}",
            flush=True,
        )
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


def _learner_settings(settings: Any, i: int) -> Any:
    """Learner i of serve-n: ports counted up from the given ones (0 stays 0: each picks a free one, or
    has none), and a checkpoint folder of its own, since a shared one could resume another's weights."""
    from pydantic import ValidationError

    def nth(port: int | None) -> int | None:
        return port + i if port else port

    changes: dict[str, Any] = {
        "port": nth(settings.port),
        "metrics_port": nth(settings.metrics_port),
        "health_port": nth(settings.health_port),
    }
    if settings.checkpoint_dir is not None:
        changes["checkpoint_dir"] = settings.checkpoint_dir / f"learner_{i}"
    try:
        return settings.updated(**changes)
    except ValidationError as exc:
        raise SystemExit(f"{invalid_configuration(exc)} (learner {i})") from None


def _setting_variables() -> set[str]:
    from colearn_learner.settings import Settings, env_variable

    return {env_variable(name) for name in Settings.model_fields}


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
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    p = commands.add_parser("serve", help="serve one learner", setting_flags=True)
    add_version(p)
    p.set_defaults(func=serve)
    p = commands.add_parser("serve-n", help="serve N learners on consecutive ports", setting_flags=True)
    add_version(p)
    add_flag(p, "n_learners", type=int, default=5, help="how many learners (default 5)")
    p.set_defaults(func=serve_n)
    p = commands.add_parser("health", help="exit 0 when a learner is SERVING")
    address = f"127.0.0.1:{LEARNER_PORT}"
    add_flag(p, "address", default=address, help=f"host:port (default {address})")
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
    args.log_level = level  # serve-n hands it on to its learners
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)
