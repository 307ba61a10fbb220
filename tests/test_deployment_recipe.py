"""The deployment recipe (Dockerfile, compose.yaml) agrees with the code. No Docker daemon runs
here, so nothing is built: every service's command is a real `etsypro` subcommand that parses as
the service runs it, every ETSYPRO_* variable is a setting the code reads, the image's
healthcheck command passes against a real `etsypro serve` (and fails without one), its user is
not root, and its install covers every package pyproject.toml declares."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from api.cli import parser
from api.etsy import EtsySettings
from api.server import free_port
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("build") == "."}  # built from the Dockerfile
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ETSYPRO = Path(sys.executable).with_name("etsypro")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                                               if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def build_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[:last_from]


def one(stage: list[tuple[str, str]], op: str) -> str:
    found = [args for o, args in stage if o == op]
    assert len(found) == 1, f"{op}: {found}"
    return found[0]


def literal_environment(service: dict) -> dict[str, str]:
    """The service's variables with the values compose would need from outside left out."""
    return {k: str(v) for k, v in (service.get("environment") or {}).items() if "${" not in str(v)}


def known_variables() -> set[str]:
    """Every ETSYPRO_* variable the code reads: the two settings classes' fields, and the names it
    reads from the environment itself (the Kafka bootstrap)."""
    names = {f"ETSYPRO_{field.upper()}" for field in Settings.model_fields}
    names |= {f"ETSYPRO_ETSY_{field.upper()}" for field in EtsySettings.model_fields}
    for package in ("api", "commands", "streams", "projections", "read"):
        for source in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"environ(?:\.get)?[\[(]\"(ETSYPRO_[A-Z0-9_]+)\"", source.read_text()))
    return names


@pytest.mark.parametrize("service", sorted(OURS))
def test_every_service_runs_a_real_subcommand_that_parses_as_configured(service, monkeypatch):
    command = [str(a) for a in OURS[service]["command"]]
    helped = subprocess.run([str(ETSYPRO), *command, "--help"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **literal_environment(OURS[service])})
    assert helped.returncode == 0 and helped.stdout.startswith("usage: etsypro"), helped.stderr
    for name, value in literal_environment(OURS[service]).items():  # the parser reads ETSYPRO_KAFKA_BOOTSTRAP
        monkeypatch.setenv(name, value)
    assert callable(parser().parse_args(command).func)


def test_a_made_up_subcommand_fails_the_same_check():
    assert subprocess.run([str(ETSYPRO), "projector", "--help"], capture_output=True, timeout=120).returncode != 0


@pytest.mark.parametrize("service", sorted(OURS))
def test_every_variable_of_our_services_is_a_real_setting(service):
    unknown = set(OURS[service].get("environment") or {}) - known_variables()
    assert not unknown, f"{service}: {sorted(unknown)} are read by no code"


def test_the_image_sets_only_real_settings():
    declared = re.findall(r"(ETSYPRO_[A-Z0-9_]+)=", " ".join(args for op, args in dockerfile_instructions() if op == "ENV"))
    assert declared and not set(declared) - known_variables()


def test_known_variables_would_catch_a_misspelt_one():
    assert "ETSYPRO_SECRET_KEY" in known_variables() and "ETSYPRO_SECRETKEY" not in known_variables()


@pytest.mark.parametrize("setting, follower_service", [
    ("ETSYPRO_PROJECTOR", "projector"),   # one writer of the views: not in the API as well
    ("ETSYPRO_REPRICING", "repricer"),    # the policy runs in the workers, not in the API as well
])
def test_followers_run_once(setting, follower_service):
    assert follower_service in OURS
    assert all(str(s["environment"][setting]) == "off" for s in OURS.values()), setting


def test_kafka_commands_point_at_the_broker_service():
    broker = SERVICES["broker"]
    advertised = broker["command"][broker["command"].index("--advertise-kafka-addr") + 1].split("://")[1]
    for name, service in OURS.items():
        assert service["environment"]["ETSYPRO_KAFKA_BOOTSTRAP"] == advertised, name
        if service["command"][0] in ("relay", "worker") or "--kafka" in service["command"]:
            assert "broker" in service["depends_on"], name


def test_the_database_is_timescaledb_on_postgresql_15_and_every_dependency_exists():
    assert SERVICES["db"]["image"].startswith("timescale/timescaledb:") and SERVICES["db"]["image"].endswith("-pg15")
    for name, service in SERVICES.items():
        assert set(service.get("depends_on") or {}) <= set(SERVICES), name


# -- the image ----------------------------------------------------------------------------------
def test_the_image_runs_as_a_user_that_is_not_root():
    stage = final_stage()
    user = one(stage, "USER").split(":")[0]
    assert user not in ("root", "0") and not user.startswith("0")
    creates = " ".join(args for op, args in stage if op == "RUN")
    assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", creates), "the user is created in the final stage"
    last_user = max(i for i, (op, _) in enumerate(stage) if op == "USER")
    assert all(op != "RUN" for op, _ in stage[last_user:]), "nothing runs as root after USER"


def test_the_image_installs_the_project_as_pyproject_declares():
    build = build_stage()
    assert one(build, "FROM").split()[0] == "python:3.11-slim" == one(final_stage(), "FROM")
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    installs = [args for op, args in build if op == "RUN" and "pip install" in args]
    assert [shlex.split(a)[-2:] for a in installs] == [["install", "."]], installs  # not editable, no extras
    copied = {shlex.split(args)[0].rstrip("/") for op, args in build if op == "COPY"}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert {"pyproject.toml"} | {p.split(".")[0] for p in packages} <= copied
    assert one(final_stage(), "ENTRYPOINT") == f'["{next(iter(PYPROJECT["project"]["scripts"]))}"]'


def test_every_package_the_code_imports_is_declared():
    """`pip install .` (the image) installs the declared packages only, unlike ./dev's editable
    install: a subpackage missing from pyproject.toml would be missing from the image."""
    declared = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {str(init.parent.relative_to(ROOT)).replace("/", ".")
             for top in {p.split(".")[0] for p in declared} for init in (ROOT / top).rglob("__init__.py")}
    assert found - declared == set(), "add them to [tool.setuptools] packages"


def test_package_data_exists_where_pyproject_says():
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((ROOT / package.replace(".", "/")).glob(pattern)), f"{package}: {pattern}"


# -- the healthcheck, against a real `etsypro serve` ---------------------------------------------
def healthcheck_command() -> list[str]:
    args = one(final_stage(), "HEALTHCHECK")
    return yaml.safe_load(args[args.index("CMD") + 3:].strip())  # the exec form is a JSON (so YAML) list


def test_the_healthcheck_is_the_same_in_the_image_and_compose_and_on_the_served_port():
    check = healthcheck_command()
    assert SERVICES["api"]["healthcheck"]["test"] == ["CMD", *check]
    port = re.search(r"127\.0\.0\.1:(\d+)/", check[-1]).group(1)
    served = [str(a) for a in SERVICES["api"]["command"]]
    assert port == served[served.index("--port") + 1] == one(final_stage(), "EXPOSE")
    assert SERVICES["api"]["ports"][0].endswith(f":{port}")
    assert yaml.safe_load(one(final_stage(), "CMD"))[0] == "serve"


@pytest.fixture(scope="module")
def served(new_database, tmp_path_factory):
    """`etsypro serve` as the api service runs it (its literal environment), on a free port."""
    port = free_port()
    env = {**os.environ, **literal_environment(SERVICES["api"]), "ETSYPRO_DATABASE_URL": new_database(),
           "ETSYPRO_SECRET_KEY": "deployment-recipe-" + "k" * 32, "ETSYPRO_DATA_DIR": str(tmp_path_factory.mktemp("data")),
           "ETSYPRO_REDIS_URL": ""}
    process = subprocess.Popen([str(ETSYPRO), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
            break
        except httpx.HTTPError:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.3)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_healthcheck(port: int) -> int:
    check = healthcheck_command()
    check[-1] = check[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    assert check[0] == "python"
    return subprocess.run([sys.executable, *check[1:]], capture_output=True, timeout=30).returncode


def test_the_healthcheck_passes_against_a_running_server_and_fails_without_one(served):
    assert httpx.get(f"http://127.0.0.1:{served}/health/ready", timeout=10).status_code == 200
    assert run_healthcheck(served) == 0
    assert run_healthcheck(free_port()) != 0
