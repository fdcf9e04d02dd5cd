"""``colearn-backend``: probe a learner, run an experiment against a fleet, run the self-contained demo, or
export a learner's model. ``run`` and ``demo`` keep each experiment in a run directory that survives the
backend (docs/experiments.md); their exit codes are in ``backend_client.run_command``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

try:
    from rich.console import Console
    from rich.table import Table
except ModuleNotFoundError as missing:  # the library runs without it; the command does not
    package = (missing.name or "rich").split(".")[0]
    raise SystemExit(
        f"colearn-backend needs the 'backend' extra ({package} is not installed): "
        "pip install 'colearn-fleet[backend]'"
    ) from None

from backend_client import discovery, health_check
from backend_client.errors import LearnerError
from backend_client.experiment import RunConfig
from backend_client.learner_client import Deadlines, LearnerClient
from backend_client.local_fleet import LocalFleet
from backend_client.run_command import EXIT_FAILED, RunRequest, run_experiment
from colearn_contract.parameters import ParametersError, parse_object
from colearn_runtime.cli_flags import add_flag, add_version, positive_seconds, whole_number
from colearn_runtime.memory_reuse import reuse_freed_memory
from colearn_runtime.ports import BACKEND_METRICS_PORT, LEARNER_PORT
from colearn_runtime.transport_security import ClientSecurity

console = Console(stderr=True, soft_wrap=True)  # one line per message, in logs and containers too


def _json_object(text: str) -> dict[str, Any]:
    try:
        return parse_object(text, "parameters")
    except ParametersError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


_positive = whole_number(1)
_count = whole_number(0)


def _security(args: argparse.Namespace) -> ClientSecurity:
    def path(text: str | None) -> Path | None:
        return Path(text) if text else None

    return ClientSecurity(
        tls_ca=path(args.tls_ca),
        tls_cert=path(args.tls_cert),
        tls_key=path(args.tls_key),
        tls_server_name=args.tls_server_name or None,
        auth_token=args.auth_token or None,
    )


def _probe_address(args: argparse.Namespace) -> str:
    if args.address and args.address_flag and args.address != args.address_flag:
        raise ValueError(f"two addresses given ({args.address} and --address {args.address_flag}); give one")
    return args.address or args.address_flag or f"127.0.0.1:{LEARNER_PORT}"


def probe(args: argparse.Namespace) -> int:
    args.address = _probe_address(args)
    discovery.explicit(args.address)  # host:port, or one clear line
    deadlines = Deadlines(connect=args.timeout)
    with LearnerClient("probe", args.address, deadlines=deadlines, security=_security(args)) as learner:
        version = learner.get_version()
        system = learner.get_supported_system()
        status = learner.get_status()
    if args.json:
        print(json.dumps({"version": version, "status": status.__dict__, **system}, indent=2))
        return 0
    out = Console()
    out.print(f"[bold]{args.address}[/bold] colearn learner {version}")
    state = f"set up: {status.model_name} on {status.dataloader_name}" if status.ready else "no model set up"
    out.print(f"{state}; accepted rounds: {status.accepted_rounds}")
    table = Table("dataloader", "default parameters", "required", title="dataloaders")
    for name, defaults in sorted(system["data_loaders"].items()):
        table.add_row(name, json.dumps(defaults), ", ".join(system["required_parameters"][name]))
    out.print(table)
    table = Table("model", "default parameters", "compatible dataloaders", title="models")
    for name, defaults in sorted(system["model_architectures"].items()):
        table.add_row(name, json.dumps(defaults), ", ".join(system["compatibilities"][name]))
    out.print(table)
    return 0


def health(args: argparse.Namespace) -> int:
    addresses = discovery.explicit(",".join(args.addresses))
    results = health_check.check_all(addresses, _security(args), args.timeout)
    for result in results:
        print(result.line(), flush=True)
    failed = [r.address for r in results if not r.serving]
    if failed:
        print(f"{len(failed)} of {len(results)} learners not serving: {', '.join(failed)}", flush=True)
        return EXIT_FAILED
    print(f"all {len(results)} learners serving", flush=True)
    return 0


def _addresses(args: argparse.Namespace) -> list[str]:
    if args.learners:
        return discovery.explicit(args.learners)
    if args.dns:
        host, _, port = args.dns.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--dns takes name:port, e.g. learner:{LEARNER_PORT}, not {args.dns!r}")
        try:
            return discovery.dns(host, int(port))
        except (socket.gaierror, UnicodeError) as exc:
            raise ValueError(f"cannot resolve the learners' name {host!r} (--dns): {exc}") from None
    n_learners = 5 if args.n_learners is None else args.n_learners
    if args.statefulset:
        return discovery.stateful_set(args.statefulset, n_learners)
    return discovery.consecutive_ports(n_learners, args.host, args.port)


def _discovery_given(args: argparse.Namespace) -> bool:
    explicit = args.learners or args.dns or args.statefulset
    return bool(explicit) or args.n_learners is not None


def _config(args: argparse.Namespace) -> RunConfig | None:
    if args.model_tag is None and args.dataloader_tag is None:
        return None
    if args.model_tag is None or args.dataloader_tag is None:
        raise ValueError("give both --model_tag and --dataloader_tag")
    return RunConfig(
        model_tag=args.model_tag,
        dataloader_tag=args.dataloader_tag,
        rounds=15 if args.rounds is None else args.rounds,
        vote_threshold=args.vote_threshold,
        quorum=args.quorum,
        model_params=args.model_params,
        dataloader_params=args.dataloader_params,
        data_locations=[loc for loc in (args.data_locations or "").split(",") if loc],
    )


def _request(args: argparse.Namespace, addresses: list[str] | None, out: Path | None) -> RunRequest:
    return RunRequest(
        config=_config(args),
        addresses=addresses,
        out=out,
        resume=Path(args.resume) if getattr(args, "resume", None) else None,
        resume_if_exists=getattr(args, "resume_if_exists", False),
        rounds=args.rounds,
        min_learners=args.min_learners,
        connect_timeout=args.connect_timeout,
        deadlines=Deadlines(propose=args.round_timeout, test=args.round_timeout),
        security=_security(args) if hasattr(args, "tls_ca") else None,
        metrics_port=args.metrics_port if args.command == "run" else 0,
        metrics_linger=getattr(args, "metrics_linger", 0.0),
    )


def _out(args: argparse.Namespace, n_learners: int) -> Path | None:
    """``--out``, where ``{learners}`` stands for the fleet's size: a compose fleet scaled to another size
    is another experiment, and gets a run directory of its own."""
    return Path(args.out.replace("{learners}", str(n_learners))) if args.out else None


def run(args: argparse.Namespace) -> int:
    if args.resume and (args.out or args.resume_if_exists):
        raise ValueError("--resume RUN_DIR takes the run's own directory: leave out --out")
    addresses = _addresses(args) if _discovery_given(args) or not args.resume else None
    out = _out(args, len(addresses)) if addresses else None
    return run_experiment(_request(args, addresses, out), console)


def demo(args: argparse.Namespace) -> int:
    n = args.n_learners
    out = _out(args, n) or Path(f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    console.print(f"starting {n} learners on 127.0.0.1:{args.port}..{args.port + n - 1}")
    with LocalFleet(n, args.port, args.metrics_port, log_dir=out) as fleet:
        return run_experiment(_request(args, fleet.addresses, out), console)


def export(args: argparse.Namespace) -> int:
    """``colearn-backend export``: a learner's current model, or a learner checkpoint's, as a file."""
    from backend_client.model_export import export_from_checkpoint, export_from_learner

    out = Path(args.out)
    if args.checkpoint:
        if args.native:
            raise ValueError("--native needs --learner: a checkpoint holds weights, not a framework's model")
        written = export_from_checkpoint(Path(args.checkpoint), out, force=args.force)
    else:
        deadlines = Deadlines(connect=args.connect_timeout)
        written = export_from_learner(
            args.learner, out, security=_security(args), native=args.native, force=args.force,
            deadlines=deadlines,
        )  # fmt: skip
    print(f"wrote {written}")
    return 0


def _add_run_flags(p: argparse.ArgumentParser, *, demo: bool) -> None:
    model, loader, rounds = ("SKLEARN_DIGITS", "DIGITS", 10) if demo else (None, None, 15)
    default_out = "runs/demo-<date>-<time>" if demo else "runs/<date>-<time>"
    needed = "" if demo else " (a new run needs it; a resumed run keeps its own)"
    add_flag(p, "model_tag", default=model, help=f"model to train{needed}")
    add_flag(p, "dataloader_tag", default=loader, help=f"dataloader to use{needed}")
    add_flag(p, "model_params", type=_json_object, default={}, help="model parameters, a JSON object")
    add_flag(
        p, "dataloader_params", type=_json_object, default={}, help="dataloader parameters, a JSON object"
    )
    add_flag(p, "data_locations", help="one data folder, or one per learner, comma-separated")
    rounds_help = "rounds of the run" + ("" if demo else " (default 15; a resumed run keeps its own)")
    p.add_argument("--rounds", "--n_rounds", "--n-rounds", dest="rounds", type=_count,
                   default=rounds if demo else None, help=rounds_help)  # fmt: skip
    add_flag(p, "vote_threshold", type=_threshold, default=0.5, help="share of voters that must approve")
    add_flag(p, "quorum", type=_count, default=0, help="voters that must answer for a round to count")
    add_flag(p, "min_learners", type=_positive, default=None,
             help="start once this many learners answer; the others join later (default: all)")  # fmt: skip
    add_flag(p, "connect_timeout", type=float, default=30.0, help="seconds to wait for the learners")
    add_flag(p, "round_timeout", type=float, default=600.0, help="deadline of a propose or test call")
    add_flag(p, "n_learners", type=_positive, default=5 if demo else None,
             help="how many learners" + ("" if demo else " (default 5)"))  # fmt: skip
    add_flag(p, "port", type=int, default=LEARNER_PORT, help="first learner port")
    add_flag(p, "out", default=None, help=f"the run directory (default {default_out}); {{learners}} in it "
             "becomes the fleet's size")  # fmt: skip
    if demo:  # the tutorial's --metrics_port: the learners' first metrics port
        add_flag(
            p, "metrics_port", type=int, default=0, help="first metrics port of the local learners; 0: off"
        )
        return
    add_flag(p, "metrics_port", type=int, default=0,
             help="serve the backend's Prometheus metrics on this port; 0 turns them off "
             f"({BACKEND_METRICS_PORT} in compose and Helm)")  # fmt: skip
    add_flag(p, "metrics_linger", type=float, default=10.0,
             help="seconds the metrics stay up after the run, so that the last round is scraped")  # fmt: skip


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every flag's help, as ``(default: ...)``, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == {}:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colearn-backend", description=__doc__)
    version = argparse.ArgumentParser(add_help=False)
    add_version(parser, version)
    common = argparse.ArgumentParser(add_help=False, parents=[version])
    add_flag(
        common, "log_level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper
    )
    # How to reach learners that serve TLS or want a token. Each flag falls back to its environment
    # variable, so that a token need not appear on a command line (where ps shows it).
    secure = argparse.ArgumentParser(add_help=False)
    add_flag(secure, "tls_ca", default=os.environ.get("COLEARN_TLS_CA"),
             help="PEM CA that signed the learners' certificates: use TLS (COLEARN_TLS_CA)")  # fmt: skip
    add_flag(secure, "tls_cert", default=os.environ.get("COLEARN_TLS_CERT"),
             help="PEM client certificate for learners that require one (COLEARN_TLS_CERT)")  # fmt: skip
    add_flag(secure, "tls_key", default=os.environ.get("COLEARN_TLS_KEY"),
             help="PEM private key of --tls_cert (COLEARN_TLS_KEY)")  # fmt: skip
    add_flag(secure, "tls_server_name", default=os.environ.get("COLEARN_TLS_SERVER_NAME"),
             help="name to check the learners' certificates against (COLEARN_TLS_SERVER_NAME)")  # fmt: skip
    add_flag(secure, "auth_token", default=os.environ.get("COLEARN_AUTH_TOKEN"),
             help="bearer token the learners require; prefer the COLEARN_AUTH_TOKEN variable")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, parents=list(parents), formatter_class=_HelpFormatter
        )

    p = command("probe", "show what a learner serves", common, secure)
    p.add_argument(
        "address", nargs="?", metavar="HOST:PORT", help=f"the learner (default 127.0.0.1:{LEARNER_PORT})"
    )
    p.add_argument(
        "--address", dest="address_flag", metavar="HOST:PORT", default=None, help="the same, as a flag"
    )
    add_flag(p, "timeout", type=float, default=5.0, help="seconds to wait for the learner")
    add_flag(p, "json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=probe)
    p = command(
        "health", "health-check learners over gRPC, one line each (exit 1 if any fails)", common, secure
    )
    p.add_argument(
        "addresses", nargs="+", metavar="HOST:PORT", help="the learners (or one comma-separated list)"
    )
    add_flag(p, "timeout", type=positive_seconds, default=10.0, help="seconds to wait for each learner")
    p.set_defaults(func=health)
    p = command("run", "run an experiment against a fleet, or resume one", common, secure)
    _add_run_flags(p, demo=False)
    add_flag(p, "resume", metavar="RUN_DIR", help="resume the run in RUN_DIR (its journal holds the rest)")
    add_flag(p, "resume_if_exists", action="store_true",
             help="with --out: resume the run there if there is one, else start it (containers)")  # fmt: skip
    add_flag(p, "learners", help="learner addresses, host:port,host:port,...")
    add_flag(p, "dns", help="a name:port whose every address is a learner (compose --scale)")
    add_flag(p, "statefulset",
             help=f"a pattern such as learner-{{i}}.learners:{LEARNER_PORT}, with --n_learners")  # fmt: skip
    add_flag(p, "host", default="127.0.0.1", help="with --n_learners: the host of consecutive ports")
    p.set_defaults(func=run)
    p = command("demo", "start local learners on embedded DIGITS and run an experiment", common)
    _add_run_flags(p, demo=True)
    p.set_defaults(func=demo)
    p = command("export", "write a learner's model, or a checkpoint's, to a file", common, secure)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--learner", metavar="HOST:PORT", help="the learner whose current model to write")
    source.add_argument("--checkpoint", metavar="FILE", help="a learner checkpoint (COLEARN_CHECKPOINT_DIR)")
    p.add_argument("--out", metavar="FILE", required=True, help="the file to write (.safetensors or .keras)")
    p.add_argument(
        "--native", action="store_true", help="the framework's own file, from the learner: .keras, state_dict"
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_flag(p, "connect_timeout", type=float, default=10.0, help="seconds to wait for the learner")
    p.set_defaults(func=export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reuse_freed_memory(one_heap=True)  # this process relays weight streams; see colearn_runtime.memory_reuse
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (LearnerError, ValueError, RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"[red]colearn-backend: {exc}[/red]", soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:  # before a run installed its own handling (while connecting)
        console.print("colearn-backend: interrupted", soft_wrap=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
