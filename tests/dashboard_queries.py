"""The Grafana dashboard's PromQL, and a real Prometheus to run it against.

Not a test module. Grafana cannot be installed here, so the dashboard is tested the next best way: every
query it holds (panel targets and template-variable queries) runs against a live Prometheus that scrapes
real learners. The monitoring tests use it on the host; the container e2e test uses it against the fleet's
own Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Grafana's built-in variables, set to what a default dashboard view would give them. The rate interval
# spans several 5 s scrapes, as $__rate_interval does with the datasource's timeInterval of 5 s.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name}, ${name:format} and the deprecated [[name]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.DOTALL)

# Prometheus is local: a proxy from the environment must not intercept it.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded into collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def _match_all(variable: dict[str, Any]) -> str:
    """The value a variable takes when "All" is selected: its custom all-value, else a regex for anything."""
    if variable.get("includeAll") or variable.get("multi"):
        return variable.get("allValue") or ".*"
    current = variable.get("current", {}).get("value")
    if isinstance(current, list):
        current = current[0] if current else None
    if not current:
        raise ValueError(f"template variable {variable.get('name')!r} has no all-value and no current value")
    return str(current)


def _variable_promql(variable: dict[str, Any]) -> str:
    """The PromQL behind a Grafana Prometheus variable query: it has values exactly when this has data."""
    text = variable.get("query") or variable.get("definition", "")
    if isinstance(text, dict):
        text = text.get("query", "")
    for pattern in (_LABEL_VALUES, _QUERY_RESULT):
        found = pattern.match(text)
        if found:
            return found.group(1).strip()
    raise ValueError(
        f"cannot test the query {text!r} of variable {variable.get('name')!r}: "
        "use label_values(expr, label) or query_result(expr)"
    )


def _substitute(promql: str, values: dict[str, str]) -> str:
    def replace(found: re.Match[str]) -> str:
        name = next(g for g in found.groups() if g)
        if name not in values:
            raise ValueError(f"unknown template variable ${name} in {promql!r}")
        return values[name]

    return _VARIABLE.sub(replace, promql)


def dashboard_queries(path: Path | str) -> list[str]:
    """Every PromQL expression of a dashboard: each panel target's ``expr`` and each variable's query,
    with template variables set to match everything and Grafana's built-ins to a default view's values."""
    dashboard = json.loads(Path(path).read_text())
    variables = dashboard.get("templating", {}).get("list", [])
    values = {**GRAFANA_BUILTINS, **{v["name"]: _match_all(v) for v in variables}}
    queries = []
    for variable in variables:
        if variable.get("type") == "query":
            queries.append(_substitute(_variable_promql(variable), values))
    for panel in all_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append(_substitute(target["expr"], values))
    return queries


def query(base_url: str, promql: str, timeout: float = 10.0, at: float | None = None) -> list[dict[str, Any]]:
    """Runs an instant query through the HTTP API, now or at the unix time ``at``; raises on a PromQL error
    (an HTTP 400 included)."""
    parameters = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(parameters)}"
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    if body.get("status") != "success":
        raise ValueError(f"Prometheus refused {promql!r}: {body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"value": data["result"]}]
    return list(data["result"])


def query_returns_data(base_url: str, promql: str, at: float | None = None) -> bool:
    """Whether an instant query (now, or at ``at``) answers with at least one series (or a scalar)."""
    return bool(query(base_url, promql, at=at))


def targets(base_url: str) -> list[dict[str, Any]]:
    """The active scrape targets, as ``/api/v1/targets`` lists them."""
    with _NO_PROXY.open(f"{base_url.rstrip('/')}/api/v1/targets?state=active", timeout=10) as response:
        return list(json.load(response)["data"]["activeTargets"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusProcess:
    """The host's ``prometheus`` on a free 127.0.0.1 port, with a given config and a throwaway TSDB.

    A context manager: it waits until Prometheus is ready, and stops exactly the process it started (by
    pid: SIGTERM, then SIGKILL), removing the TSDB. ``port`` (default: a free one) is for a config that
    names Prometheus's own address. ``rule_files`` in the config resolve relative to the config file's
    folder, as they do in the container.
    """

    def __init__(
        self, config: Path, *, port: int = 0, binary: str = "prometheus", ready_timeout: float = 30.0
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not installed (apt-get install prometheus)")
        self.binary = found
        self.config = Path(config)
        self.ready_timeout = ready_timeout
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._tsdb: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        assert self._tsdb is not None
        return (Path(self._tsdb.name) / "prometheus.log").read_text(errors="replace")

    def start(self) -> PrometheusProcess:
        self._tsdb = tempfile.TemporaryDirectory(prefix="prometheus-")
        self.port = self.port or free_port()
        with (Path(self._tsdb.name) / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self._tsdb.name}/data",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self.process.returncode}:\n{self.log}")
            try:
                with _NO_PROXY.open(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus was not ready within {self.ready_timeout} s:\n{self.log}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if self._tsdb is not None:
            self._tsdb.cleanup()
            self._tsdb = None

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
