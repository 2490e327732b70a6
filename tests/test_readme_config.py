"""README "Settings": every setting the service reads, with its real default, and nothing else.

The first table must list exactly ``gateway.config.variables()`` (every field of every settings
struct ``load`` fills), each with the default the code has; the second every other environment
variable a module reads. A setting added, renamed or re-defaulted without the README fails here.
"""

from __future__ import annotations

import re

import msgspec

from gateway import config as config_mod
from tests.support import ROOT

ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)`(?:, `([A-Z][A-Z0-9_]*)`)? \| ([^|]+) \|")


def tables() -> tuple[dict[str, str], set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Settings", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    service, elsewhere = section.split("Read elsewhere", 1)
    first = {m.group(1): m.group(3).strip() for line in service.splitlines() if (m := ROW.match(line))}
    second = {n for line in elsewhere.splitlines() if (m := ROW.match(line)) for n in m.groups()[:2] if n}
    return first, second


def expected_default(struct: type[msgspec.Struct], field: str) -> str:
    (info,) = [f for f in msgspec.structs.fields(struct) if f.name == field]
    return "unset" if info.default in (None, "") else f"`{info.default}`"


def test_every_setting_is_in_the_table_with_its_default():
    first, _ = tables()
    variables = config_mod.variables()
    assert set(first) == set(variables), (
        f"missing from README: {sorted(set(variables) - set(first))}; "
        f"not settings: {sorted(set(first) - set(variables))}"
    )
    for name, (struct, field) in variables.items():
        assert first[name] == expected_default(struct, field), (name, first[name])


def env_reads() -> set[str]:
    pattern = re.compile(
        r"""(?:environ\.get\(|environ\[|getenv\(|^ENV(?:_[A-Z]+)? = )["']([A-Z][A-Z0-9_]+)["']""", re.M
    )
    names: set[str] = set()
    # the service, its tools, and the test harness (a switch such as DPDAU_REQUIRE_NODE is configuration too)
    for package in ("gateway", "actors", "journal", "eval", "scripts", "tools", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(pattern.findall(path.read_text()))
    names |= set(pattern.findall((ROOT / "eval" / "notebooks" / "evaluation.ipynb").read_text().replace('\\"', '"')))
    for path in (ROOT / "clients" / "ts" / "scripts").glob("*.mjs"):  # the TypeScript client's server runner
        names |= set(re.findall(r"process\.env\.([A-Z][A-Z0-9_]+)", path.read_text()))
    return names


def test_every_other_environment_variable_a_module_reads_is_listed():
    first, second = tables()
    reads = env_reads()
    assert {"DPDAU_URL", "DEFAULT_SEED", "DPDAU_REQUIRE_NODE", "DPDAU_PYTHON", "DPDAU_TEST_POSTGRES_URL"} <= reads
    assert reads <= set(first) | second, f"read but not in README: {sorted(reads - set(first) - second)}"
    assert not second & set(first), "listed twice"


def test_placeholders_named_in_the_table_are_in_the_ledger():
    ledger = (ROOT / "Placeholders.md").read_text()
    section = (ROOT / "README.md").read_text().split("### Settings", 1)[1].split("\n### ", 1)[0]
    for token in re.findall(r"\{\{([A-Z][A-Z0-9_]*)\}\}", section):
        assert f"{{{{{token}}}}}" in ledger, token
