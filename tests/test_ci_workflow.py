""".github/workflows/ci.yml parses and runs the same entry point as local CI: ``bash .ci/run``.

It must not grow its own commands (they would drift from .ci/run), and it must give .ci/run what
.ci/run assumes of its machine: Debian with apt and runuser, root, Python 3.11, Node >= 20.
"""

from __future__ import annotations

import re

import yaml

from tests.support import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_triggers_on_push_to_main_and_pull_requests():
    doc = workflow()
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "main" in on["push"]["branches"] and "pull_request" in on


def test_the_only_command_is_ci_run():
    (job,) = workflow()["jobs"].values()
    runs = [step["run"].strip() for step in job["steps"] if "run" in step]
    ci = [r for r in runs if ".ci/run" in r]
    assert ci == ["bash .ci/run"], runs
    # anything else only prepares the machine; no test, lint or build command of its own
    for r in runs:
        if r not in ci:
            assert not re.search(r"\b(pytest|make|ruff|mypy|npm|pip)\b", r), f"duplicates .ci/run: {r!r}"
    assert (ROOT / ".ci" / "run").exists()


def test_the_machine_is_what_ci_run_assumes():
    (job,) = workflow()["jobs"].values()
    image = job["container"]["image"]
    assert image.startswith("python:3.11") and "bookworm" in image, image  # Debian 12: apt, runuser, postgresql-15
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "postgresql-15" in ci_run and "runuser" in ci_run  # why bookworm, as root
    node = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-node@")]
    assert node and int(str(node[0]["with"]["node-version"]).split(".")[0]) >= 20
    assert "LINUX_IMMUTABLE" in job["container"].get("options", "")  # chattr +i as root in a container
    assert job["timeout-minutes"] <= 90
    for step in job["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), f"pin actions to a major version: {step}"
