"""The Docker files, checked without a Docker daemon (none runs in CI; the image is not built there).

What can be checked statically: the image installs and starts the service exactly as the Makefile
does (``make install``, the ``run`` recipe's command), every COPY source exists and together they
hold what ``pip install`` needs, the image runs as a non-root user with ``DATA_DIR`` as a volume
and a HEALTHCHECK on ``/healthz``, and every environment variable the Dockerfile or the compose
file sets is a setting the service reads (a typo would be silently ignored by the service).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import yaml

from gateway import config as config_mod
from tests.support import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "a continuation line runs off the end of the Dockerfile"
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), args
    return value


def env_pairs(args: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(args))


class Makefile:
    """Just enough of make: variables (``=``, ``?=``, ``:=``), rules, recipes, ``$(VAR)`` expansion."""

    def __init__(self, path: Path) -> None:
        self.vars: dict[str, str] = {}
        self.rules: dict[str, tuple[list[str], list[str]]] = {}
        target = None
        for raw in path.read_text().splitlines():
            if raw.startswith("\t") and target is not None:
                self.rules[target][1].append(raw.strip())
                continue
            line = raw.split("#", 1)[0].rstrip()
            if m := re.match(r"^([A-Za-z_]+)\s*(\?=|:=|=)\s*(.*)$", line):
                self.vars[m.group(1)] = m.group(3).strip()
                target = None
            elif m := re.match(r"^([^\s:=]+)\s*:(?!=)\s*(.*)$", line):
                target = m.group(1)
                prereqs = m.group(2).replace("|", " ").split()
                self.rules[target] = (prereqs, [])
            else:
                target = None

    def expand(self, text: str) -> str:
        for _ in range(10):
            text = re.sub(r"\$\((\w+)\)", lambda m: self.vars.get(m.group(1), ""), text)
        text = text.replace("$@", "")
        return text


def test_image_is_slim_python_311_and_runs_as_a_non_root_user():
    steps = instructions(DOCKERFILE)
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11-slim")
    users = [args for kw, args in steps if kw == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    created = " ".join(args for kw, args in steps if kw == "RUN")
    assert re.search(rf"useradd\b.*\b{re.escape(users[-1])}\b", created), "the USER is created in the image"
    last_user = max(i for i, (kw, _) in enumerate(steps) if kw == "USER")
    assert last_user < next(i for i, (kw, _) in enumerate(steps) if kw == "CMD")


def test_install_and_command_are_the_makefiles():
    make = Makefile(ROOT / "Makefile")
    steps = instructions(DOCKERFILE)
    runs = [args for kw, args in steps if kw == "RUN"]
    make_runs = [shlex.split(r) for r in runs if r.startswith("make ")]
    assert make_runs, "the image installs through make"
    run_prereqs = make.rules["run"][0]
    for argv in make_runs:
        targets = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        assert targets and all(t in make.rules for t in targets), argv
        assert set(targets) <= set(run_prereqs), f"{targets}: not what `make run` installs ({run_prereqs})"
        assert not [a for a in argv[1:] if "=" in a], "no variable overrides: the same install as make run"
    # every other RUN only prepares the OS (packages, the user, the data directory)
    allowed = {"apt-get", "rm", "groupadd", "useradd", "mkdir", "chown"}
    for r in runs:
        if not r.startswith("make "):
            commands = {part.split()[0] for part in re.split(r"&&|;", r) if part.strip()}
            assert commands <= allowed, f"RUN {r!r}: not the Makefile's install ({commands - allowed})"

    # CMD is the `run` recipe's command: the same binary and subcommand; its flags come from ENV
    recipe = next(line for line in make.rules["run"][1] if "dpdau" in line)
    words = shlex.split(make.expand(recipe))
    binary = next(w for w in words if w.endswith("/dpdau"))
    subcommand = words[words.index(binary) + 1]
    workdir = [args for kw, args in steps if kw == "WORKDIR"][-1]
    cmd = exec_form([args for kw, args in steps if kw == "CMD"][-1])
    assert cmd[0] == str(Path(workdir) / binary) and cmd[1] == subcommand, (cmd, recipe)
    flags = {w.lstrip("-").upper() for w in words if w.startswith("--")}
    env = {k: v for kw, args in steps if kw == "ENV" for k, v in env_pairs(args).items()}
    assert flags <= set(env) and "DATA_DIR" in env, f"the run recipe's settings {flags} must be set by ENV"


def test_every_copy_source_exists_and_the_install_has_what_it_needs():
    steps = instructions(DOCKERFILE)
    copied: set[str] = set()
    for kw, args in steps:
        if kw in ("COPY", "ADD"):
            assert kw == "COPY", "ADD fetches and unpacks; COPY is what is meant"
            *sources, _dest = shlex.split(args)
            for source in sources:
                assert not source.startswith("--"), "no --from/--chown: files come from the repository"
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                copied.add(source.rstrip("/"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"pyproject.toml", "Makefile", project["project"]["readme"], *packages}
    assert needed <= copied, f"pip install -e . needs {needed - copied}"
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not any(i.strip("/") in copied for i in ignored), "a copied path is excluded from the build context"


def test_data_dir_volume_port_and_healthcheck():
    steps = instructions(DOCKERFILE)
    env = {k: v for kw, args in steps if kw == "ENV" for k, v in env_pairs(args).items()}
    volumes = [v for kw, args in steps if kw == "VOLUME" for v in exec_form(args)]
    assert env["DATA_DIR"] in volumes
    assert [args for kw, args in steps if kw == "EXPOSE"] == [env["PORT"]]
    health = [args for kw, args in steps if kw == "HEALTHCHECK"]
    assert len(health) == 1
    probe = exec_form(health[0].split(" CMD ", 1)[1])
    # `dpdau health` without --ready asks /healthz (tests/e2e/test_cli_health.py runs it for real)
    assert probe[0].endswith("/dpdau") and probe[1:] == ["health"]
    assert "--start-period=" in health[0], "replay on start must not count as unhealthy"
    unknown = set(env) - set(config_mod.variables()) - {k for k in env if k.startswith(("PYTHON", "PIP_"))}
    assert not unknown, f"ENV sets variables the service does not read: {unknown}"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_parses_uses_the_image_and_a_named_volume_for_data_dir():
    doc = compose()
    ours = {name: s for name, s in doc["services"].items() if "build" in s}
    assert "dpdau" in ours and not ours["dpdau"].get("profiles"), "the default service runs without a profile"
    for name, service in ours.items():
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT and (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE, name
        env = service["environment"]
        unknown = set(env) - set(config_mod.variables())
        assert not unknown, f"{name}: variables the service does not read: {unknown}"
        assert env.get("DPDAU_ENV") != "production" or "HASH_SALT_SECRET" in env, name
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert env["DATA_DIR"] in mounts and mounts[env["DATA_DIR"]] in doc["volumes"], f"{name}: named volume"
        ports = [p.rsplit(":", 1)[1] for p in service["ports"]]
        assert env["PORT"] in ports, name


def _substitute(value: str) -> str:
    # compose interpolation: ${NAME:?msg} / ${NAME:-default} -> a stand-in value
    return re.sub(r"\$\{(\w+)(:[?-][^}]*)?\}", lambda m: f"x-{m.group(1).lower()}", value)


def test_postgres_profile_is_a_journal_url_to_a_server_set_up_for_physical_erasure():
    from journal import location
    from journal.postgres import ERASURE_SETTINGS

    doc = compose()
    with_pg = {n: s for n, s in doc["services"].items() if "JOURNAL_URL" in s.get("environment", {})}
    assert with_pg, "a profile runs the service on PostgreSQL"
    for name, service in with_pg.items():
        assert service.get("profiles"), f"{name}: PostgreSQL is a profile, not the default"
        spec = location.parse(_substitute(service["environment"]["JOURNAL_URL"]), "/data")
        assert spec.kind == "postgresql", name
        host = re.search(r"@([^:/]+)", service["environment"]["JOURNAL_URL"]).group(1)
        server = doc["services"][host]
        assert set(server["profiles"]) == set(service["profiles"]) and host in service["depends_on"]
        major = int(server["image"].split(":")[1].split(".")[0])
        assert server["image"].startswith("postgres:") and major >= 15
        flags = dict(a.split("=", 1) for a in server["command"] if "=" in a)
        for setting, (ok, why) in ERASURE_SETTINGS.items():
            assert setting in flags and ok(flags[setting]), f"{setting}: {why}"
        assert server["environment"]["POSTGRES_USER"] in service["environment"]["JOURNAL_URL"]


def test_compose_secret_is_required_not_defaulted():
    # `${HASH_SALT_SECRET:?...}` makes compose refuse to start without it; a default would be a shared secret
    text = COMPOSE.read_text()
    assert re.search(r"HASH_SALT_SECRET: \$\{HASH_SALT_SECRET:\?", text)
