"""Every learner setting has one source, ``Settings``: the CLI's flags and help are made from it, the
settings tables of docs/settings.md and the chart are generated from it (and must be up to date), the shared
ports are named once (``colearn_runtime.ports``) and the files that cannot import them agree with them,
and ``GRPCServer``'s keyword arguments are settings like any other."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from dockerfile_kit import instructions
from pydantic import Field, SecretStr, ValidationError
from wire_kit import venv_tool

from colearn_learner import ExampleMliFactory, GRPCServer
from colearn_learner import cli as learner_cli
from colearn_learner import settings as settings_module
from colearn_learner.settings import Settings, env_variable
from colearn_runtime.ports import BACKEND_METRICS_PORT, LEARNER_METRICS_PORT, LEARNER_PORT


def _load_tables() -> Any:
    spec = importlib.util.spec_from_file_location(
        "settings_tables", REPO_ROOT / "docs" / "settings_tables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


settings_tables = _load_tables()


def setting_actions(command: str = "serve") -> dict[str, argparse.Action]:
    """The flags of ``serve``/``serve-n`` by destination, once they have been made (on the first parse)."""
    parser = learner_cli.build_parser()
    parser.parse_args([command])
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {action.dest: action for action in commands.choices[command]._actions}


# -- flags made from the fields ---------------------------------------------------------------------------


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert missing == [], f"give these Settings fields a description (it is their flag's help): {missing}"


@pytest.mark.parametrize("command", ["serve", "serve-n"])
def test_every_setting_has_a_flag_in_both_spellings(command: str) -> None:
    actions = setting_actions(command)
    extra = {"help", "version", "log_level"} | ({"n_learners"} if command == "serve-n" else set())
    assert set(actions) == set(Settings.model_fields) | extra
    for name in Settings.model_fields:
        spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
        assert set(actions[name].option_strings) == spellings, name
        assert actions[name].default is None, f"--{name}: a flag left out must leave the environment's value"
    assert actions["plugins"].__class__.__name__ == "_AppendAction"  # --plugins stays repeatable


def test_help_shows_each_default_and_variable() -> None:
    actions = setting_actions()
    for name, field in Settings.model_fields.items():
        help_text = actions[name].help or ""
        assert help_text.startswith(field.description or "-"), name
        assert f"env {env_variable(name)}" in help_text, name
        default = settings_module.default_text(field)
        assert (f"default {default}" in help_text) == (default is not None), name
    port_help = actions["port"].help or ""
    assert (
        port_help == f"gRPC port; 0 picks a free one (0 to 65535, default {LEARNER_PORT}, env COLEARN_PORT)"
    )


def test_serve_help_prints_in_a_real_command() -> None:
    done = subprocess.run(
        [venv_tool("colearn-learner"), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert f"default {LEARNER_METRICS_PORT}, env COLEARN_METRICS_PORT" in text
    assert "--metrics_port N, --metrics-port N" in text
    assert "env COLEARN_AUTH_TOKEN" in text


class _SettingsWithSecretDefault(Settings):
    auth_token: SecretStr | None = Field(SecretStr("never-print-me"), description="bearer token")


class _SettingsWithoutDescription(Settings):
    brand_new: int = 3


def test_a_secret_never_shows_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "Settings", _SettingsWithSecretDefault)
    parser = argparse.ArgumentParser()
    learner_cli.add_setting_flags(parser)
    assert "never-print-me" not in parser.format_help()
    assert "env COLEARN_AUTH_TOKEN" in parser.format_help()


def test_a_setting_added_without_a_description_has_no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "Settings", _SettingsWithoutDescription)
    with pytest.raises(TypeError, match="brand_new has no description"):
        learner_cli.add_setting_flags(argparse.ArgumentParser())


def test_health_does_not_load_the_settings() -> None:
    """`health` runs every few seconds as a HEALTHCHECK: it must not pay for pydantic."""
    code = (
        "import sys\n"
        "from colearn_learner.cli import build_parser\n"
        "build_parser().parse_args(['health', '--address', '127.0.0.1:1'])\n"
        "print('pydantic' in sys.modules, 'colearn_learner.settings' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_a_flag_value_of_the_wrong_type_is_one_clear_line() -> None:
    done = subprocess.run(
        [venv_tool("colearn-learner"), "serve", "--port=abc"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("colearn-learner: invalid configuration: "), done.stderr
    assert "--port" in lines[0]


# -- the settings as environment variables -----------------------------------------------------------------


def test_to_environment_gives_the_same_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = Settings(
        host="127.0.0.1", port=0, metrics_port=0, data_root=tmp_path, grace_seconds=2.5,
        auth_token="s3cret", plugins=["a", "b.c"], health_port=7000,
    )  # fmt: skip
    environment = original.to_environment()
    assert environment["COLEARN_AUTH_TOKEN"] == "s3cret"
    assert environment["COLEARN_PLUGINS"] == "a,b.c"
    assert "COLEARN_TLS_CERT" not in environment  # unset stays unset
    for name in list(os.environ):
        if name.startswith("COLEARN_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_updated_validates_its_changes() -> None:
    base = Settings(port=0, metrics_port=0)
    assert base.updated() is base
    assert base.updated(port=7001).port == 7001
    with pytest.raises(ValidationError):
        base.updated(worker_threads=1)


# -- GRPCServer: keyword arguments are settings ------------------------------------------------------------


def test_server_keywords_override_the_settings_object() -> None:
    base = Settings(host="127.0.0.1", port=0, metrics_port=0, worker_threads=4)
    server = GRPCServer(ExampleMliFactory(), port=0, settings=base, grace_seconds=1.5, metrics_port=None)
    assert (server.settings.host, server.settings.worker_threads) == ("127.0.0.1", 4)
    assert server.settings.grace_seconds == 1.5
    assert base.grace_seconds == 10  # the object given is not changed


def test_server_keywords_are_validated_and_unknown_ones_refused() -> None:
    with pytest.raises(ValidationError):
        GRPCServer(ExampleMliFactory(), port=0, metrics_port=0, worker_threads=1)
    with pytest.raises(TypeError, match="no_such_setting"):
        GRPCServer(ExampleMliFactory(), port=0, no_such_setting=3)


def test_a_server_built_in_code_serves_metrics_only_where_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLEARN_METRICS_PORT", raising=False)
    assert GRPCServer(ExampleMliFactory(), port=0).settings.metrics_port == 0
    assert GRPCServer(ExampleMliFactory(), port=0, metrics_port=7002).settings.metrics_port == 7002
    monkeypatch.setenv("COLEARN_METRICS_PORT", "7003")
    assert GRPCServer(ExampleMliFactory(), port=0).settings.metrics_port == 7003


# -- generated tables ----------------------------------------------------------------------------------------


def test_the_settings_tables_are_the_ones_made_from_settings() -> None:
    stale = [str(path.relative_to(REPO_ROOT)) for path in settings_tables.stale()]
    assert stale == [], f"{stale}: the settings tables are stale; run `{settings_tables.COMMAND}`"


def test_the_settings_doc_table_has_a_row_per_setting() -> None:
    table = settings_tables.settings_doc_table()
    for name in Settings.model_fields:
        assert f"| `{env_variable(name)}` |" in table
    assert f"| `COLEARN_PORT` | `{LEARNER_PORT}` | 0 to 65535 |" in table


def test_a_changed_table_is_found(tmp_path: Path) -> None:
    copy = tmp_path / "settings.md"
    table = settings_tables.TABLES[0]
    copy.write_text(table.expected(table.path.read_text()).replace("gRPC worker threads", "threads"))
    stale = settings_tables.Table(copy, table.marker, table.render)
    assert stale.expected(copy.read_text()) != copy.read_text()
    with pytest.raises(ValueError, match="needs the lines"):
        stale.expected("no markers here")


# -- the chart agrees with the settings --------------------------------------------------------------------

CHART = REPO_ROOT / "helm" / "colearn-fleet"


def _chart_value(values: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        values = values[key]
    return values


def test_the_chart_sets_real_settings_from_values_with_the_learner_defaults() -> None:
    """The chart's values for learner settings start at the learner's own defaults, and its schema never
    lets through a value the learner would refuse."""
    sources = settings_tables.chart_sources((CHART / "templates" / "statefulset.yaml").read_text())
    known = {env_variable(name): name for name in Settings.model_fields}
    assert set(sources) <= set(known) | {"COLEARN_LOG_LEVEL"}, set(sources) - set(known)  # the CLI's own
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    checked = []
    for variable, source in sources.items():
        path = re.fullmatch(r"`([A-Za-z0-9_.]+)`", source.source)
        if variable not in known or path is None or "." not in path.group(1) or path.group(1).startswith("/"):
            continue
        field = Settings.model_fields[known[variable]]
        chart_default = _chart_value(values, path.group(1))
        if field.default is not None and not field.default_factory:
            assert chart_default == field.default, f"{path.group(1)}: {chart_default} != {field.default}"
        rule = schema
        for key in path.group(1).split("."):
            rule = rule["properties"][key]
        bounds = {k: getattr(r, k) for r in field.metadata for k in ("ge", "gt", "le") if hasattr(r, k)}
        if "ge" in bounds or "gt" in bounds:
            assert "minimum" in rule and rule["minimum"] >= bounds.get("ge", bounds.get("gt")), variable
        if "le" in bounds:
            assert "maximum" in rule and rule["maximum"] <= bounds["le"], variable
        checked.append(variable)
    assert {"COLEARN_PORT", "COLEARN_METRICS_PORT", "COLEARN_WORKER_THREADS", "COLEARN_GRACE_SECONDS"} <= set(
        checked
    )
    assert values["learner"]["ports"]["grpc"] == LEARNER_PORT
    assert values["learner"]["ports"]["metrics"] == LEARNER_METRICS_PORT
    assert values["backend"]["metricsPort"] == BACKEND_METRICS_PORT


# -- Dockerfiles and compose agree with the named ports ----------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_the_learner_images_set_only_what_differs_from_the_defaults(name: str) -> None:
    steps = instructions(REPO_ROOT / "learner_image" / name)
    environment = dict(
        pair.split("=", 1) for rest in (r for kind, r in steps if kind == "ENV") for pair in rest.split()
    )
    known = {env_variable(field): field for field in Settings.model_fields}
    defaults = Settings.model_construct()
    for variable, value in environment.items():
        if not variable.startswith("COLEARN_"):
            continue
        assert variable in known, f"{name}: {variable} is no learner setting"
        assert value != str(getattr(defaults, known[variable])), f"{name}: {variable}={value} is the default"
    port = int(environment.get("COLEARN_PORT", LEARNER_PORT))
    metrics_port = int(environment.get("COLEARN_METRICS_PORT", LEARNER_METRICS_PORT))
    exposed = {int(p) for kind, rest in steps if kind == "EXPOSE" for p in rest.split()}
    assert exposed == {port, metrics_port}
    (healthcheck,) = [rest for kind, rest in steps if kind == "HEALTHCHECK"]
    assert f"${{COLEARN_PORT:-{port}}}" in healthcheck  # the port the learner serves when none is set


def test_the_backend_image_exposes_the_backend_metrics_port() -> None:
    steps = instructions(REPO_ROOT / "learner_image" / "Dockerfile.backend")
    assert [rest for kind, rest in steps if kind == "EXPOSE"] == [str(BACKEND_METRICS_PORT)]


def test_compose_uses_the_named_ports() -> None:
    services = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]
    learner, backend = services["learner"], services["backend"]
    ports = {str(LEARNER_PORT), str(LEARNER_METRICS_PORT)}
    assert {port.rsplit(":", 1)[1] for port in learner["ports"]} == ports
    published = [port.split(":-", 1)[1].split("-", 1)[0] for port in learner["ports"]]  # range defaults
    assert set(published) == ports
    assert f"127.0.0.1:{LEARNER_PORT}" in learner["healthcheck"]["test"]
    assert f"--dns=learner:{LEARNER_PORT}" in backend["command"]
    assert f"--metrics_port={BACKEND_METRICS_PORT}" in backend["command"]
    assert backend["expose"] == [str(BACKEND_METRICS_PORT)]
    environment = learner.get("environment", {})
    assert "COLEARN_PORT" not in environment and "COLEARN_METRICS_PORT" not in environment


def test_no_python_module_spells_the_shared_ports() -> None:
    """The ports are named in colearn_runtime.ports; code uses the names (docstrings and comments aside)."""
    ports = {LEARNER_PORT, LEARNER_METRICS_PORT, BACKEND_METRICS_PORT}
    spelled = re.compile("|".join(rf"\b{port}\b" for port in ports))
    offenders = []
    for folder in ("proto", "services", "backend_client"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.name == "ports.py" or "_pb2" in path.name:
                continue
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            }
            for node in ast.walk(tree):
                if not isinstance(node, ast.Constant) or id(node) in docstrings:
                    continue
                if node.value in ports or (isinstance(node.value, str) and spelled.search(node.value)):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == [], "\n".join(offenders)
