"""The files in ``deploy/``, checked as far as possible without a docker engine: the compose
file parses and wires the services as documented, every command it or the Dockerfile runs
exists, the files they name exist, and the gunicorn configuration loads as intended."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobdeck.gunicorn_conf import bind_address, web_workers

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
JOBDECK_SERVICES = {"migrate", "api", "worker"}
APP = "jobdeck.api:create_app()"


def compose() -> dict[str, Any]:
    """``deploy/docker-compose.yml``, parsed (YAML anchors and merge keys resolved)."""
    document = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of ``deploy/Dockerfile``, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def instruction(name: str) -> list[str]:
    """The arguments of every ``name`` instruction of the Dockerfile."""
    return [rest for keyword, rest in dockerfile() if keyword == name]


def argv(command: Any) -> list[str]:
    """A compose or Dockerfile command as an argument list (exec form or a string)."""
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), command
    return command


def gunicorn_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment for a gunicorn check: no ``JOBDECK_*`` from outside, a SQLite file
    under ``tmp_path`` (the app is built, the store is not opened)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBDECK_", "GUNICORN_"))}
    env.pop("WEB_CONCURRENCY", None)
    env["JOBDECK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'check.db'}"
    env.update(extra)
    return env


def gunicorn_check(args: list[str], tmp_path: Path, **env: str) -> dict[str, str]:
    """Run ``gunicorn <args> --print-config`` from the repository root (as the image runs
    it from its WORKDIR): the configuration loads, the app is built; return the settings."""
    done = subprocess.run(
        [str(BIN / "gunicorn"), *args, "--print-config"],
        cwd=REPO,
        env=gunicorn_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    settings: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            settings[name.strip()] = value.strip()
    return settings


# --- docker-compose.yml ---------------------------------------------------------------


def test_compose_names_the_services_and_their_order() -> None:
    """PostgreSQL with a named volume and a healthcheck; ``migrate`` once PostgreSQL is
    healthy; the API and two workers once ``migrate`` completed successfully."""
    document = compose()
    services = document["services"]
    assert set(services) == {"postgres", *JOBDECK_SERVICES}

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "healthcheck" in postgres
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in document["volumes"], "the data volume is a named volume"

    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["ports"], "the API publishes its port"


def test_compose_points_every_jobdeck_service_at_postgres() -> None:
    """One variable, ``JOBDECK_DATABASE_URL``, with the same PostgreSQL URL in every jobdeck
    service, naming the ``postgres`` service as its host."""
    services = compose()["services"]
    urls = {services[name]["environment"]["JOBDECK_DATABASE_URL"] for name in JOBDECK_SERVICES}
    assert len(urls) == 1
    (url,) = urls
    assert re.fullmatch(r"postgresql://[^@/]+@postgres:5432/\w+", url), url


def test_compose_builds_the_image_from_the_dockerfile() -> None:
    """Every jobdeck service builds (or reuses) one image from ``deploy/Dockerfile`` with the
    repository root as context."""
    services = compose()["services"]
    for name in JOBDECK_SERVICES:
        build = services[name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO, (name, context)
        assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert len({services[name]["image"] for name in JOBDECK_SERVICES}) == 1


def compose_commands() -> list[tuple[str, list[str]]]:
    services = compose()["services"]
    return [(name, argv(services[name]["command"])) for name in sorted(JOBDECK_SERVICES)]


@pytest.mark.parametrize(("service", "command"), compose_commands())
def test_compose_runs_real_commands(service: str, command: list[str], tmp_path: Path) -> None:
    """Each jobdeck service runs a real ``jobdeck`` subcommand (its ``--help`` succeeds) or
    gunicorn with the deploy configuration (which loads, and builds the app)."""
    program, *args = command
    assert program in {"jobdeck", "gunicorn"}, command
    if program == "jobdeck":
        done = subprocess.run(
            [str(BIN / "jobdeck"), *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    else:
        settings = gunicorn_check(args, tmp_path)
        assert settings["worker_class"] == "jobdeck.gunicorn_conf.UvicornWorker"


# --- Dockerfile -----------------------------------------------------------------------


def test_dockerfile_base_user_and_healthcheck() -> None:
    """A slim Python base, a non-root user, a healthcheck asking ``/health`` without curl."""
    (base,) = instruction("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    users = instruction("USER")
    assert users and users[-1] not in {"root", "0"}
    (healthcheck,) = instruction("HEALTHCHECK")
    assert "/health" in healthcheck and "curl" not in healthcheck
    check = argv(json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip()))
    assert check[:2] == ["python", "-c"]
    compile(check[2], "<healthcheck>", "exec")


def test_dockerfile_copies_files_that_exist() -> None:
    """Every COPY source exists in the build context (the repository root), and the
    install names the ``postgres`` extra."""
    for copy in instruction("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            assert (REPO / source).exists(), source
    assert any("[postgres]" in run and "pip install" in run for run in instruction("RUN"))


def test_dockerfile_entry_point_is_gunicorn_with_the_deploy_config(tmp_path: Path) -> None:
    """The image's command is gunicorn (installed with jobdeck) with
    ``deploy/gunicorn.conf.py``, copied to that path under the WORKDIR; it is the command
    of the compose ``api`` service too, and it loads."""
    assert not instruction("ENTRYPOINT")
    (cmd,) = instruction("CMD")
    command = argv(json.loads(cmd))
    assert command == ["gunicorn", "-c", "deploy/gunicorn.conf.py", APP]
    assert (BIN / "gunicorn").exists()
    (workdir,) = instruction("WORKDIR")

    def in_image(path: str) -> str:
        return path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"

    copied = {in_image(c.split()[-1]) for c in instruction("COPY") if c.split()[0] == command[2]}
    assert in_image(command[2]) in copied, "the config is copied where the command looks"
    assert argv(compose()["services"]["api"]["command"]) == command
    settings = gunicorn_check(command[1:], tmp_path)
    assert settings["wsgi_app"] == APP


# --- the gunicorn configuration -------------------------------------------------------


def test_gunicorn_config_reads_the_environment(tmp_path: Path) -> None:
    """Bind, worker count and graceful timeout come from ``JOBDECK_*``; every worker is a
    uvicorn worker with the embedded job worker off; the access log goes to stderr."""
    settings = gunicorn_check(
        ["-c", "deploy/gunicorn.conf.py", APP],
        tmp_path,
        JOBDECK_HOST="0.0.0.0",
        JOBDECK_PORT="9123",
        JOBDECK_WEB_WORKERS="3",
        JOBDECK_SHUTDOWN_GRACE_SECONDS="7.5",
    )
    assert settings["bind"] == "['0.0.0.0:9123']"
    assert settings["workers"] == "3"
    assert settings["worker_class"] == "jobdeck.gunicorn_conf.UvicornWorker"
    assert int(settings["graceful_timeout"]) >= 8
    assert "JOBDECK_EMBEDDED_WORKER=0" in settings["raw_env"]
    assert settings["wsgi_app"] == APP
    assert (
        "'gunicorn.access': {'level': 'INFO', 'handlers': ['stderr']"
        in (settings["logconfig_dict"])
    )
    assert "'stream': 'ext://sys.stderr'" in settings["logconfig_dict"]


def test_the_deploy_file_and_the_package_module_agree(tmp_path: Path) -> None:
    """``deploy/gunicorn.conf.py`` and ``python:jobdeck.gunicorn_conf`` (what ``jobdeck
    serve --workers N`` uses) resolve to the same settings, and name the app themselves."""
    env = {"JOBDECK_WEB_WORKERS": "5", "JOBDECK_PORT": "9124"}
    from_file = gunicorn_check(["-c", "deploy/gunicorn.conf.py"], tmp_path, **env)
    from_module = gunicorn_check(["-c", "python:jobdeck.gunicorn_conf"], tmp_path, **env)
    assert from_file.pop("config") == "deploy/gunicorn.conf.py"
    assert from_module.pop("config") == "python:jobdeck.gunicorn_conf"
    assert from_file == from_module
    assert from_file["workers"] == "5"


def test_the_worker_class_is_uvicorns() -> None:
    """The worker class is uvicorn's gunicorn worker, cutting open requests before gunicorn
    kills the process."""
    from jobdeck.gunicorn_conf import UvicornWorker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from uvicorn.workers import UvicornWorker as Base

    assert issubclass(UvicornWorker, Base)


def test_web_workers_setting() -> None:
    """``JOBDECK_WEB_WORKERS``, else ``WEB_CONCURRENCY``, else 2; nonsense is refused."""
    assert web_workers({}) == 2
    assert web_workers({"WEB_CONCURRENCY": "6"}) == 6
    assert web_workers({"JOBDECK_WEB_WORKERS": "4", "WEB_CONCURRENCY": "6"}) == 4
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="JOBDECK_WEB_WORKERS"):
            web_workers({"JOBDECK_WEB_WORKERS": bad})


def test_bind_address() -> None:
    """IPv6 hosts are bracketed for gunicorn."""
    assert bind_address("127.0.0.1", 8000) == "127.0.0.1:8000"
    assert bind_address("::", 8000) == "[::]:8000"
    assert bind_address("[::1]", 80) == "[::1]:80"
