"""``colearn-backend``: probe a learner, run rounds against a fleet, or run the self-contained demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backend_client import discovery
from backend_client.errors import LearnerError
from backend_client.experiment import RunConfig, run_rounds, set_up_fleet
from backend_client.learner_client import Deadlines, LearnerClient
from backend_client.local_fleet import LocalFleet
from backend_client.results import Result, Results
from colearn_contract.cli_flags import add_flag, whole_number
from colearn_contract.memory_reuse import reuse_freed_memory
from colearn_contract.transport_security import ClientSecurity

console = Console(stderr=True)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


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
    return args.address or args.address_flag or "127.0.0.1:9995"


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


def _addresses(args: argparse.Namespace) -> list[str]:
    if args.learners:
        return discovery.explicit(args.learners)
    if args.dns:
        host, _, port = args.dns.rpartition(":")
        return discovery.dns(host, int(port))
    if args.statefulset:
        return discovery.stateful_set(args.statefulset, args.n_learners)
    return discovery.consecutive_ports(args.n_learners, args.host, args.port)


def _config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        model_tag=args.model_tag,
        dataloader_tag=args.dataloader_tag,
        rounds=args.rounds,
        vote_threshold=args.vote_threshold,
        quorum=args.quorum,
        model_params=args.model_params,
        dataloader_params=args.dataloader_params,
        data_locations=[loc for loc in (args.data_locations or "").split(",") if loc],
    )


def _describe(result: Result) -> str:
    mean = result.mean_test_score
    score = f"mean test {result.criterion or 'score'} {mean:.3f}" if mean is not None else "no scores"
    if result.round_index is None:
        return f"initial: {score}"
    verdict = "void" if result.void else ("accepted" if result.vote else "rejected")
    return f"round {result.round_index}: learner {result.block_proposer} proposed, {verdict}; {score}"


def drive(
    addresses: Sequence[str],
    config: RunConfig,
    out_dir: Path,
    deadlines: Deadlines,
    security: ClientSecurity | None = None,
) -> Results:
    learners = [
        LearnerClient(f"learner-{i}", a, deadlines=deadlines, security=security)
        for i, a in enumerate(addresses)
    ]
    try:
        for learner in learners:
            learner.start()
        set_up_fleet(learners, config)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("rounds", total=config.rounds)

            def on_round(result: Result) -> None:
                progress.console.print(_describe(result))
                if result.round_index is not None:
                    progress.advance(task)

            results = run_rounds(learners, config, out_dir, on_round=on_round)
    finally:
        for learner in learners:
            learner.stop()
    accepted = sum(1 for r in results.rounds if r.vote)
    console.print(
        f"{accepted} of {config.rounds} rounds accepted; results in {out_dir}/results.json and results.png"
    )
    return results


def _deadlines(args: argparse.Namespace) -> Deadlines:
    return Deadlines(connect=args.connect_timeout, propose=args.round_timeout, test=args.round_timeout)


def run(args: argparse.Namespace) -> int:
    drive(_addresses(args), _config(args), Path(args.out), _deadlines(args), _security(args))
    return 0


def demo(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    console.print(
        f"starting {args.n_learners} learners on 127.0.0.1:{args.port}..{args.port + args.n_learners - 1}"
    )
    with LocalFleet(args.n_learners, args.port, args.metrics_port, log_dir=out) as fleet:
        drive(fleet.addresses, _config(args), out, _deadlines(args))
    return 0


def _add_run_flags(p: argparse.ArgumentParser, *, demo: bool) -> None:
    add_flag(
        p, "model_tag", default="SKLEARN_DIGITS" if demo else None, required=not demo, help="model to train"
    )
    add_flag(
        p, "dataloader_tag", default="DIGITS" if demo else None, required=not demo, help="dataloader to use"
    )
    add_flag(p, "model_params", type=_json_object, default={}, help="model parameters, a JSON object")
    add_flag(
        p, "dataloader_params", type=_json_object, default={}, help="dataloader parameters, a JSON object"
    )
    add_flag(p, "data_locations", help="one data folder, or one per learner, comma-separated")
    p.add_argument("--rounds", "--n_rounds", "--n-rounds", dest="rounds", type=_count,
                   default=10 if demo else 15, help="rounds to run")  # fmt: skip
    add_flag(p, "vote_threshold", type=_threshold, default=0.5, help="share of voters that must approve")
    add_flag(p, "quorum", type=_count, default=0, help="voters that must answer for a round to count")
    add_flag(p, "connect_timeout", type=float, default=30.0, help="seconds to wait for each learner")
    add_flag(p, "round_timeout", type=float, default=600.0, help="deadline of a propose or test call")
    add_flag(p, "n_learners", type=_positive, default=5, help="how many learners (default 5)")
    add_flag(p, "port", type=int, default=9995, help="first learner port (default 9995)")
    add_flag(
        p, "out", default=None if demo else "runs/latest", help="folder for results.json and results.png"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colearn-backend", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
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
    p = commands.add_parser("probe", help="show what a learner serves", parents=[common, secure])
    p.add_argument("address", nargs="?", metavar="HOST:PORT", help="the learner (default 127.0.0.1:9995)")
    p.add_argument(
        "--address", dest="address_flag", metavar="HOST:PORT", default=None, help="the same, as a flag"
    )
    add_flag(p, "timeout", type=float, default=5.0, help="seconds to wait for the learner")
    add_flag(p, "json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=probe)
    p = commands.add_parser("run", help="run rounds against a fleet", parents=[common, secure])
    _add_run_flags(p, demo=False)
    add_flag(p, "learners", help="learner addresses, host:port,host:port,...")
    add_flag(p, "dns", help="a name:port whose every address is a learner (compose --scale)")
    add_flag(p, "statefulset", help="a pattern such as learner-{i}.learners:9995, with --n_learners")
    add_flag(p, "host", default="127.0.0.1", help="with --n_learners: the host of consecutive ports")
    p.set_defaults(func=run)
    p = commands.add_parser(
        "demo", help="start local learners on embedded DIGITS and run rounds", parents=[common]
    )
    _add_run_flags(p, demo=True)
    add_flag(p, "metrics_port", type=int, default=0, help="first metrics port; 0 turns metrics off")
    p.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reuse_freed_memory(one_heap=True)  # this process relays weight streams; see colearn_contract.memory_reuse
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (LearnerError, ValueError, RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"[red]colearn-backend: {exc}[/red]")
        return 1


if __name__ == "__main__":
    sys.exit(main())
